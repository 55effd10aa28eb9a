"""``hwval emulate host-bench --ring PATH``: the sampler of the host-following bench, and
:func:`start_bench`, which starts it with a plug, a WT300 and a powercap tree on it.

The sampler reads this host's CPU load from ``/proc/stat`` (and GPU utilisation where NVML has
it) at ``--rate-hz`` (>= 200 Hz) into the ring file (:class:`~hwval.benchmodel.host.HostLoadSampler`).
Any emulator started with ``--profile host:PATH`` then reports that load as power through its
own latency, window, quantisation, noise, gain/offset and drift, so a real sync-pulse capture on
this machine has a known answer: each emulator's ``--truth-file``.

Example::

    hwval emulate host-bench --ring /tmp/bench.ring &
    hwval emulate tasmota --profile host:/tmp/bench.ring --latency-s 0.3 --truth-file plug.json &
    hwval emulate wt300 --profile host:/tmp/bench.ring --port 0 --latency-s 0.1 &
    hwval emulate powercap --profile host:/tmp/bench.ring --root /tmp/pc &
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from hwval.benchmodel.host import (MIN_RATE_HZ, HostLoadSampler, HostPowerModel, nvml_utilisation_reader,
                                   read_cpu_busy_s, read_niced_busy_s)
from hwval.emulators.options import write_json_atomic

CPU_LOADS = {"all": read_cpu_busy_s, "niced": read_niced_busy_s}


@click.command("host-bench")
@click.option("--ring", required=True, type=click.Path(dir_okay=False),
              help="ring file to write; emulators read it with --profile host:RING")
@click.option("--rate-hz", type=float, default=500.0, show_default=True,
              help=f"samples per second (at least {MIN_RATE_HZ:g}, to follow load edges)")
@click.option("--idle-w", type=float, default=60.0, show_default=True, help="true power with the host idle")
@click.option("--cpu-dynamic-w", type=float, default=120.0, show_default=True,
              help="extra watts with every CPU busy")
@click.option("--gpu-dynamic-w", type=float, default=200.0, show_default=True,
              help="extra watts with every GPU at 100 %% utilisation (when NVML sees a GPU)")
@click.option("--gpu/--no-gpu", "use_gpu", default=True, show_default=True,
              help="add the GPU term where NVML is usable")
@click.option("--cpu-load", type=click.Choice(sorted(CPU_LOADS)), default="all", show_default=True,
              help="all: every busy CPU-second; niced: only niced user time (the pulse workers run at "
                   "nice 5), so pulses show even when other work saturates the CPUs")
@click.option("--capacity-s", type=float, default=1800.0, show_default=True, help="seconds of history kept")
@click.option("--ready-file", type=click.Path(dir_okay=False), default=None,
              help="write a JSON file {ring, t0_monotonic_ns, pid, ...} once the ring exists")
def cli(ring: str, rate_hz: float, idle_w: float, cpu_dynamic_w: float, gpu_dynamic_w: float, use_gpu: bool,
        cpu_load: str, capacity_s: float, ready_file: str | None) -> None:
    """Sample this host's load into a ring file that emulators share as their true power.

    \b
    Example:
      hwval emulate host-bench --ring /tmp/bench.ring
      hwval emulate tasmota --profile host:/tmp/bench.ring --latency-s 0.3
    """
    read_gpu = nvml_utilisation_reader() if use_gpu else None
    try:
        model = HostPowerModel(idle_w, cpu_dynamic_w, gpu_dynamic_w if read_gpu else 0.0)
        sampler = HostLoadSampler(ring, model, rate_hz=rate_hz, capacity_s=capacity_s,
                                  read_busy=CPU_LOADS[cpu_load], read_gpu=read_gpu)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.BadParameter(f"cannot create {ring}: {exc.strerror}", param_hint="--ring") from None

    def on_signal(signum, frame):  # finish the current sample, then exit
        sampler.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"host-bench ready: use --profile host:{ring}", flush=True)
    print(f"bench t0_monotonic_ns={sampler.t0_ns} (Ctrl-C to stop)", flush=True)
    if ready_file:
        write_json_atomic(ready_file, {
            "device": "host-bench", "ring": str(ring), "t0_monotonic_ns": sampler.t0_ns, "pid": os.getpid(),
            "rate_hz": rate_hz, "cpu_load": cpu_load, "gpu": read_gpu is not None,
            "idle_w": model.idle_w, "cpu_dynamic_w": model.cpu_dynamic_w, "gpu_dynamic_w": model.gpu_dynamic_w})
    try:
        sampler.run()
    finally:
        sampler.close()


# -- start_bench: the sampler and three emulators as processes ------------------------------------

#: How each emulated meter of :func:`start_bench` sees the bench (the truth a sync must find).
#: Latencies differ so that a mixed-up stream would show; the plug is polled at 4 Hz so a short
#: pulse chip (its period plus window, see ``chip_length_s``) keeps a live test short.
PLUG = {"latency_s": 0.3, "window_s": 0.2, "noise_w": 0.3, "period_s": 0.25}
WT300 = {"latency_s": 0.1, "update_s": 0.25, "noise_w": 0.05}
RAPL = {"latency_s": 0.02, "period_s": 0.01, "update_s": 0.002}
START_TIMEOUT_S = 60.0


class BenchError(RuntimeError):
    """A bench process did not start; the message holds what it printed."""


@dataclass
class HostBench:
    """The running processes of :func:`start_bench`."""

    ring: Path
    #: ``-m`` specs for ``hwval capture`` (plug, wt300, rapl).
    meter_specs: list[str]
    #: Per meter name (``plug``, ``wt300``, ``rapl``): its truth sidecar (what it was configured with).
    truth: dict[str, dict]
    #: The sampler's ready file (t0, rate, power model).
    sampler: dict
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every process (SIGTERM, then SIGKILL after ``timeout_s``)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> "HostBench":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "hwval.cli", "emulate", *args],
                                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)


def _wait_ready(path: Path, proc: subprocess.Popen, log: Path, deadline: float) -> dict:
    while not path.exists():
        if proc.poll() is not None:
            raise BenchError(f"{' '.join(map(str, proc.args[3:5]))} exited with {proc.returncode}: "
                             f"{log.read_text(errors='replace').strip()[-400:]}")
        if time.monotonic() > deadline:
            raise BenchError(f"{path.name}: not ready within {START_TIMEOUT_S:g} s")
        time.sleep(0.02)
    return json.loads(path.read_text())


def start_bench(tmpdir: str | os.PathLike, *, cpu_load: str = "all", rate_hz: float = 500.0,
                seed: int = 1, rapl_gain: float = 1.0, names: dict[str, str] | None = None) -> HostBench:
    """Start the host-bench sampler and a Tasmota plug (pty), a WT300 (TCP) and a powercap tree
    on it, each a process with its own meter model; returns once all of them accept readers.

    ``cpu_load="niced"`` follows only niced user time (the pulse workers'), for a check that
    must work while other work saturates the CPUs; ``"all"`` follows everything (a real workload).
    ``rapl_gain`` scales what the powercap counters see (a RAPL package reads only part of the
    wall); ``names`` renames the plug's and the WT300's streams (default ``plug``, ``wt300``).
    Call :meth:`HostBench.stop` (or use it as a context manager) to end them.
    """
    names = {"plug": "plug", "wt300": "wt300", **(names or {})}
    d = Path(tmpdir)
    ring = d / "host-bench.ring"
    deadline = time.monotonic() + START_TIMEOUT_S
    bench = HostBench(ring=ring, meter_specs=[], truth={}, sampler={})
    try:
        log = d / "host-bench.log"
        proc = _spawn(["host-bench", "--ring", str(ring), "--rate-hz", str(rate_hz), "--cpu-load", cpu_load,
                       "--no-gpu", "--ready-file", str(d / "host-bench.ready")], log)
        bench.procs.append(proc)
        bench.logs.append(log)
        bench.sampler = _wait_ready(d / "host-bench.ready", proc, log, deadline)
        profile = ["--profile", f"host:{ring}", "--seed", str(seed)]
        meters = {
            "plug": ["tasmota", *profile, "--latency-s", str(PLUG["latency_s"]), "--window-s", str(PLUG["window_s"]),
                     "--noise-w", str(PLUG["noise_w"])],
            "wt300": ["wt300", *profile, "--port", "0", "--latency-s", str(WT300["latency_s"]),
                      "--update-s", str(WT300["update_s"]), "--noise-w", str(WT300["noise_w"])],
            "rapl": ["powercap", *profile, "--root", str(d / "powercap"), "--latency-s", str(RAPL["latency_s"]),
                     "--update-s", str(RAPL["update_s"]), "--gain", str(rapl_gain)],
        }
        for name, args in meters.items():
            log = d / f"{name}.log"
            proc = _spawn([*args, "--ready-file", str(d / f"{name}.ready"), "--truth-file",
                           str(d / f"{name}.truth.json")], log)
            bench.procs.append(proc)
            bench.logs.append(log)
        ready = {}
        for (name, _), proc, log in zip(meters.items(), bench.procs[1:], bench.logs[1:]):
            ready[name] = _wait_ready(d / f"{name}.ready", proc, log, deadline)
            bench.truth[name] = json.loads((d / f"{name}.truth.json").read_text())
        # Window and update period are part of the truth too: the plug's chip averages
        # window_s; the WT300's values are means over its update interval.
        bench.truth["plug"]["period_s"] = PLUG["period_s"]
        bench.truth["plug"]["quantum_w"] = 1.0  # Tasmota's default WattRes 0: whole watts
        bench.truth["wt300"]["window_s"] = WT300["update_s"]
        bench.truth["rapl"]["period_s"] = RAPL["period_s"]
        bench.meter_specs = [
            f"tasmota:{ready['plug']['resource']}?name={names['plug']}&period_s={PLUG['period_s']}&reply_timeout_s=1",
            f"wt300:{ready['wt300']['resource']}?name={names['wt300']}&update_s={WT300['update_s']}",
            f"rapl:{ready['rapl']['rapl_root']}?name=rapl&period_s={RAPL['period_s']}",
        ]
    except BaseException:
        bench.stop()
        raise
    return bench
