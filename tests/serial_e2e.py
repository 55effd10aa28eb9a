"""Helpers for the serial drivers' end-to-end tests: run ``hwval capture`` (a real subprocess)
against an in-process emulator and compare what was recorded with the bench's truth."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from conftest import journaled_readings
from hwval.benchmodel import Bench, MeterModel
from hwval.runfile.reader import open_run


@dataclass
class Captured:
    returncode: int
    stderr: str
    bench_t_s: np.ndarray  # bench seconds of each sample's receipt
    data: dict
    error_counts: dict
    events: list
    attrs: dict


def capture(spec: str, out_path: str, duration_s: float, bench: Bench, stream: str = "wall",
            emulator=None) -> Captured:
    """Run ``hwval capture`` on ``spec`` for ``duration_s`` and read back ``stream``.

    With ``emulator`` (a :class:`~hwval.emulators.pty.PtyEmulator` with a fault plan), the plan's
    stall and disconnect are held until the capture has journaled its first reading and counted
    from then, and the capture runs ``duration_s`` from that moment (ended by SIGINT): on a
    loaded machine starting the capture can take seconds, and faults timed from the emulator's
    start would land during the driver's open instead of in the run they are meant to test."""
    if emulator is None:
        proc = subprocess.run(
            [sys.executable, "-m", "hwval.cli", "capture", "--no-nvml", "--no-rapl", "-m", spec,
             "--duration", str(duration_s), "-o", out_path, "--force"],
            capture_output=True, text=True, timeout=duration_s + 30)
        returncode, stderr = proc.returncode, proc.stderr
    else:
        returncode, stderr = _capture_armed(spec, out_path, duration_s, emulator)
    if returncode != 0:
        return Captured(returncode, stderr, np.array([]), {}, {}, [], {})
    with open_run(out_path) as run:
        s = run.stream(stream)
        t_bench = (run.origin_monotonic_ns + s.t * 1e9 - bench.t0_ns) / 1e9
        data = {k: np.asarray(v) for k, v in s.data.items()}
        counts = json.loads(s.attrs.get("error_counts") or "{}")
        events = [e for e in run.events if e.stream in (stream, "")]
        return Captured(0, stderr, t_bench, data, counts, events, dict(s.attrs))


#: Upper bound on the time from an emulator computing a reading to the capture stamping its
#: receipt (pty transfer plus two threads being scheduled). Sub-millisecond on an idle machine;
#: a loaded 2-core CI runner can hold a thread back for tens of milliseconds. Emission always
#: precedes receipt, so the instant a reading describes lies in [t - MAX_RECEIPT_DELAY_S, t].
MAX_RECEIPT_DELAY_S = 0.25


#: Longest wait for a capture to journal its first reading (a loaded 2-core machine).
START_TIMEOUT_S = 90.0


def _capture_armed(spec: str, out_path: str, duration_s: float, emulator) -> tuple[int, str]:
    emulator.hold_faults()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hwval.cli", "capture", "--no-nvml", "--no-rapl", "-m", spec,
         "--duration", str(duration_s + START_TIMEOUT_S + 60), "-o", out_path, "--force"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while journaled_readings(out_path) == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                _, err = proc.communicate()
                raise AssertionError(f"the capture journaled no reading in {START_TIMEOUT_S} s: {err}")
            time.sleep(0.05)
        emulator.arm_faults()
        time.sleep(duration_s)
        proc.send_signal(signal.SIGINT)  # a duration capture ends cleanly on SIGINT (exit 0)
        _, err = proc.communicate(timeout=60)
        return proc.returncode, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def near_step(bench: Bench, model: MeterModel, t_s: np.ndarray,
              max_delay_s: float = MAX_RECEIPT_DELAY_S) -> np.ndarray:
    """True for samples whose reading may average across a step edge: the meter computed the
    value at some instant in ``[t - max_delay_s, t]`` (before its receipt ``t``) over the window
    ``[instant - latency_s - window_s, instant - latency_s]``. Elsewhere the value is a plateau
    level however late it was received, so exact comparisons are made on the others only."""
    edges = np.cumsum([d for _, d in bench.profile.segments])
    cycle = bench.profile.cycle_s
    lo = t_s - max_delay_s - model.latency_s - model.window_s
    hi = t_s - model.latency_s
    out = np.zeros(len(t_s), dtype=bool)
    for k in range(int(np.floor(lo.min() / cycle)) - 1, int(np.ceil(hi.max() / cycle)) + 1):
        for e in np.concatenate([[0.0], edges]) + k * cycle:
            out |= (lo <= e) & (e <= hi)
    return out


def expected_power_w(bench: Bench, model: MeterModel, t_s: np.ndarray) -> np.ndarray:
    return np.array([model.true_mean_w(bench.profile, t) for t in t_s])


class RecordingBench(Bench):
    """A bench that remembers every reading an emulator took from it, with the bench time it
    was computed for: :meth:`computed_before` finds the reading behind a captured sample, so a
    test can compare it with the truth at the instant the meter measured (exactly), instead of
    at the instant the capture received it (off by the receipt delay times the slope)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.readings: list[tuple[float, float]] = []  # (bench s, value W)

    def read(self, model: MeterModel, t_ns: int | None = None) -> float:
        t_ns = time.monotonic_ns() if t_ns is None else t_ns
        value = super().read(model, t_ns)
        self.readings.append((self.t_s(t_ns), value))
        return value

    def computed_before(self, t_s: float) -> tuple[float, float]:
        """``(bench time, value)`` of the last reading computed at or before ``t_s``."""
        earlier = [r for r in self.readings if r[0] <= t_s]
        if not earlier:
            raise AssertionError(f"no reading was computed before bench time {t_s:.3f} s")
        return max(earlier)


def event_names(c: Captured) -> list[str]:
    return [e.name for e in c.events]
