"""Command-line options shared by every ``hwval emulate`` device, and the start-up announcement.

Every emulator takes the bench options (true power profile and the meter model) and
``--ready-file``: a JSON file written once the emulator accepts connections, holding
``resource`` (what to pass to ``-m DRIVER:RESOURCE``), ``t0_monotonic_ns`` (bench time zero on
the host's CLOCK_MONOTONIC, so truth can be recomputed) and ``pid``. Tests and scripts wait for
that file instead of parsing text.

``--profile host:RING`` makes the bench the host-following one (:mod:`hwval.benchmodel.host`):
the true power is read from the ring a ``hwval emulate host-bench --ring RING`` sampler writes,
and bench time zero is the ring's, so every emulator on that ring shares one bench.
``--truth-file F`` writes what the emulator was configured with (the meter model, every option,
the bench's t0): the known answer a live capture of it is checked against.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from typing import Any, Callable

import click

from hwval.benchmodel import Bench, MeterModel, PowerProfile

#: ``--profile host:RING``: the true power follows this host's load, read from a sampler's ring.
HOST_PROFILE_PREFIX = "host:"


def open_profile(text: str):
    """The profile ``--profile`` names: a :class:`PowerProfile` or, for ``host:RING``, a
    :class:`~hwval.benchmodel.host.HostProfile` (ValueError with a one-line message if bad)."""
    if text.startswith(HOST_PROFILE_PREFIX):
        from hwval.benchmodel.host import HostProfile

        ring = text[len(HOST_PROFILE_PREFIX):]
        if not ring:
            raise ValueError("--profile host:RING needs the ring file of `hwval emulate host-bench --ring RING`")
        return HostProfile(ring)
    return PowerProfile.parse(text)


def write_json_atomic(path: str, doc: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, default=str)
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def bench_options(*, window_s: float = 0.0, latency_s: float = 0.0, quantum_w: float = 0.0,
                  noise_w: float = 0.0) -> Callable:
    """Decorator adding ``--profile --window-s --latency-s --quantum-w --noise-w --gain
    --offset-w --drift-ppm --seed --t0-ns --ready-file`` with per-meter defaults; the wrapped command
    receives ``bench: Bench``, ``model: MeterModel`` and ``ready_file`` instead."""

    def decorate(func: Callable) -> Callable:
        @click.option("--profile", default="idle-load", show_default=True,
                      help="true power: idle-load, steps, bursty, constant:W, steps:W@S,...[+ripple:A@P], "
                           "or host:RING (follow this host's load, see `hwval emulate host-bench`)")
        @click.option("--window-s", type=float, default=window_s, show_default=True,
                      help="meter averaging window in seconds (0 = instant)")
        @click.option("--latency-s", type=float, default=latency_s, show_default=True,
                      help="delay between the window's end and the value being reported")
        @click.option("--quantum-w", type=float, default=quantum_w, show_default=True,
                      help="power resolution in watts (0 = none)")
        @click.option("--noise-w", type=float, default=noise_w, show_default=True,
                      help="Gaussian noise standard deviation in watts")
        @click.option("--gain", type=float, default=1.0, show_default=True, help="meter gain error")
        @click.option("--offset-w", type=float, default=0.0, show_default=True, help="meter offset in W")
        @click.option("--drift-ppm", type=float, default=0.0, show_default=True,
                      help="meter clock drift in parts per million")
        @click.option("--seed", type=int, default=None, help="noise seed (reproducible runs)")
        @click.option("--t0-ns", type=int, default=None,
                      help="bench time zero on CLOCK_MONOTONIC (share it so several emulators see one bench)")
        @click.option("--ready-file", type=click.Path(dir_okay=False), default=None,
                      help="write a JSON file {resource, t0_monotonic_ns, pid} once ready")
        @click.option("--truth-file", type=click.Path(dir_okay=False), default=None,
                      help="write a JSON file with the meter model and every option (the known answer)")
        @functools.wraps(func)
        def wrapper(profile: str, window_s: float, latency_s: float, quantum_w: float,
                    noise_w: float, gain: float, offset_w: float, drift_ppm: float,
                    seed: int | None, t0_ns: int | None, ready_file: str | None, truth_file: str | None,
                    **kwargs: Any) -> Any:
            try:
                power_profile = open_profile(profile)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--profile") from None
            ring_t0_ns = getattr(power_profile, "t0_ns", None)
            if ring_t0_ns is not None:
                # A host bench's time zero is its ring's: every emulator on it shares one bench.
                if t0_ns is not None and t0_ns != ring_t0_ns:
                    raise click.BadParameter(f"{t0_ns} differs from the ring's t0 {ring_t0_ns}; leave it out "
                                             "with --profile host:RING", param_hint="--t0-ns")
                t0_ns = ring_t0_ns
            bench = Bench(power_profile, seed=seed) if t0_ns is None else Bench(power_profile, t0_ns=t0_ns, seed=seed)
            model = MeterModel(window_s=window_s, latency_s=latency_s, quantum_w=quantum_w,
                               noise_w=noise_w, gain=gain, offset_w=offset_w, drift_ppm=drift_ppm)
            if truth_file:
                ctx = click.get_current_context()
                write_json_atomic(truth_file, {
                    "device": ctx.info_name, "profile": profile, "t0_monotonic_ns": bench.t0_ns,
                    "seed": seed, "model": dataclasses.asdict(model), "options": dict(ctx.params),
                    "pid": os.getpid()})
            return func(bench=bench, model=model, ready_file=ready_file, **kwargs)

        return wrapper

    return decorate


def announce(device: str, resource: str, bench: Bench, ready_file: str | None, **extra: Any) -> None:
    """Tell the operator (stdout) and any waiting script (``--ready-file``) what to connect to."""
    print(f"{device} emulator ready: use -m {device}:{resource}", flush=True)
    print(f"bench t0_monotonic_ns={bench.t0_ns} (Ctrl-C to stop)", flush=True)
    if ready_file:
        info = {"device": device, "resource": resource, "t0_monotonic_ns": bench.t0_ns,
                "pid": os.getpid(), **extra}
        write_json_atomic(ready_file, info)
    sys.stdout.flush()
