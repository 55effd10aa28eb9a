"""Helpers for the serial drivers' end-to-end tests: run ``hwval capture`` (a real subprocess)
against an in-process emulator and compare what was recorded with the bench's truth."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import numpy as np

from hwval.emulators.bench import Bench, MeterModel
from hwval.store import open_run


@dataclass
class Captured:
    returncode: int
    stderr: str
    bench_t_s: np.ndarray  # bench seconds of each sample's receipt
    data: dict
    error_counts: dict
    events: list
    attrs: dict


def capture(spec: str, out_path: str, duration_s: float, bench: Bench, stream: str = "wall") -> Captured:
    proc = subprocess.run(
        [sys.executable, "-m", "hwval.cli", "capture", "--no-nvml", "--no-rapl", "-m", spec,
         "--duration", str(duration_s), "-o", out_path, "--force"],
        capture_output=True, text=True, timeout=duration_s + 30)
    if proc.returncode != 0:
        return Captured(proc.returncode, proc.stderr, np.array([]), {}, {}, [], {})
    with open_run(out_path) as run:
        s = run.stream(stream)
        t_bench = (run.origin_monotonic_ns + s.t * 1e9 - bench.t0_ns) / 1e9
        data = {k: np.asarray(v) for k, v in s.data.items()}
        counts = json.loads(s.attrs.get("error_counts") or "{}")
        events = [e for e in run.events if e.stream in (stream, "")]
        return Captured(0, proc.stderr, t_bench, data, counts, events, dict(s.attrs))


def near_step(bench: Bench, model: MeterModel, t_s: np.ndarray, margin_s: float) -> np.ndarray:
    """True for samples whose meter window touches a step edge (receipt jitter could move
    them across it): they are excluded from exact comparisons."""
    edges = np.cumsum([d for _, d in bench.profile.segments])
    cycle = bench.profile.cycle_s
    lo = t_s - model.latency_s - model.window_s - margin_s
    hi = t_s - model.latency_s + margin_s
    out = np.zeros(len(t_s), dtype=bool)
    for k in range(int(np.floor(lo.min() / cycle)) - 1, int(np.ceil(hi.max() / cycle)) + 1):
        for e in np.concatenate([[0.0], edges]) + k * cycle:
            out |= (lo <= e) & (e <= hi)
    return out


def expected_power_w(bench: Bench, model: MeterModel, t_s: np.ndarray) -> np.ndarray:
    return np.array([model.true_mean_w(bench.profile, t) for t in t_s])


def event_names(c: Captured) -> list[str]:
    return [e.name for e in c.events]
