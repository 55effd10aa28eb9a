"""How ``hwval analyze`` scales with the length of a run: time and peak memory from 1 h to 24 h.

The run is what a big training node records: four RAPL domains (two packages, two DRAM) at
1 kHz, eight GPUs through NVML at 20 Hz and a 10 Hz analyzer at the wall, with an ``epoch`` mark
every hour (so 24 marker phases at 24 h) and the workload events. Files are built quickly with
h5py through the run-file layout functions (the capture's own writer functions), under /tmp,
and deleted afterwards. Each size is analysed by a fresh ``hwval analyze RUN --json`` process
(the command an operator runs): wall time and the peak resident memory of that process.
Then the 24 h run is analysed once more in this process to split the time between the
alignment (``hwval.sync.align``, which reads the streams chunk by chunk) and the statistics.

Targets (issue 11): 24 h in < 30 s and < 1 GiB peak memory.

    python benchmarks/analysis_scale.py [--hours 1 4 12 24] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import h5py
import numpy as np

from hwval.runfile.documents import Event, Start, Stop
from hwval.runfile.layout import (append_columns, append_events, create_events_group, create_stream_group,
                                  finalize, write_root_attrs)
from hwval.sources.base import Key, StreamInfo

CHUNK_ROWS = 1 << 22
WORKLOAD_MARGIN_S = 30.0


def _streams() -> list[tuple[StreamInfo, float, float, float]]:
    """(info, rate Hz, idle W, load W) for every stream of the node."""
    out = [(StreamInfo("wall", "hardware", "wt300", "TCPIP::10.0.0.5::INSTR", "wall", 0.1,
                       (Key("power_w", "W", "window_mean", 0.1),),
                       {"manufacturer": "YOKOGAWA", "model": "WT310E", "serial": "BENCH1", "firmware": "F1.03"}),
            10.0, 900.0, 3600.0)]
    for i in range(8):
        out.append((StreamInfo(f"nvml_gpu{i}", "software", "nvml", f"GPU-bench-{i}", "gpu", 0.05,
                               (Key("power_w", "W", "window_mean", 1.0), Key("energy_j", "J", "counter")),
                               {"uuid": f"GPU-bench-{i}", "name": "H100"}), 20.0, 70.0, 350.0))
    for kind, scope, idle, load in (("package", "cpu_package", 60.0, 250.0), ("dram", "dram", 8.0, 30.0)):
        for pkg in range(2):
            out.append((StreamInfo(f"rapl_{kind}_{pkg}", "software", "rapl", "/sys/class/powercap", scope, 0.001,
                                   (Key("power_w", "W", "window_mean", 0.001), Key("energy_j", "J", "counter")),
                                   {"zone": f"intel-rapl:{pkg}", "domain": f"{kind}-{pkg}", "package": pkg,
                                    "part_of": None}), 1000.0, idle, load))
    return out


def _power(t: np.ndarray, idle_w: float, load_w: float, rng: np.random.Generator) -> np.ndarray:
    # 9 minutes of load and 1 minute of data loading in every 10, plus noise
    load = np.mod(t, 600.0) < 540.0
    return np.where(load, load_w, idle_w) + rng.normal(0.0, 0.01 * load_w, len(t))


def build(path: Path, hours: float, seed: int = 1) -> int:
    """Write a run of ``hours``; returns the number of samples."""
    duration_s = hours * 3600.0
    rng = np.random.default_rng(seed)
    samples = 0
    with h5py.File(path, "w") as f:
        write_root_attrs(f, Start(str(uuid.uuid4()), "2026-12-01T00:00:00Z", "bench-node", ["python", "train.py"],
                                  10 ** 12, 1_764_547_200 * 10 ** 9, "{}", "benchmark"))
        ev = create_events_group(f)
        group = f.create_group("streams")
        for info, rate, idle_w, load_w in _streams():
            g = create_stream_group(group, info)
            n = int(duration_s * rate)
            energy = 0.0
            for lo in range(0, n, CHUNK_ROWS):
                idx = np.arange(lo, min(lo + CHUNK_ROWS, n), dtype=np.float64)
                t = (idx + rng.uniform(0.0, 0.2, len(idx))) / rate  # receipt jitter, monotonic
                p = _power(t, idle_w, load_w, rng)
                append_columns(g["t"], [t])
                append_columns(g["power_w"], [p])
                if "energy_j" in g:
                    e = energy + np.cumsum(p) / rate
                    energy = float(e[-1])
                    append_columns(g["energy_j"], [e - e[0] if lo == 0 else e])
            samples += n
        events = [Event(WORKLOAD_MARGIN_S, "workload_start", "", {})]
        events += [Event(h * 3600.0 + WORKLOAD_MARGIN_S + 1, "mark", "", {"mark": "epoch", "epoch": h + 1})
                   for h in range(int(hours))]
        events.append(Event(duration_s - WORKLOAD_MARGIN_S, "workload_end", "", {"exit_code": 0}))
        append_events(ev, events)
        finalize(f, Stop(0, True, {}))
    return samples


def analyze_process(path: Path) -> tuple[float, float, dict]:
    """Wall seconds and peak RSS (MiB) of one ``hwval analyze --json`` process."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "hwval.cli", "analyze", str(path), "--json"],
                                stdout=subprocess.PIPE, stderr=err, text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (peak RSS in KiB)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"hwval analyze failed ({proc.returncode}): {err.read().strip()[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0, json.loads(out)


def split_times(path: Path) -> dict[str, float]:
    """Time in align vs the rest, for one in-process analysis (statistics, writing)."""
    import hwval.sync as sync
    from hwval.analysis import compare
    from hwval.runfile import open_run

    spent = {"align_s": 0.0}
    real_align = sync.align

    def timed_align(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real_align(*args, **kwargs)
        finally:
            spent["align_s"] += time.perf_counter() - t0

    sync.align = timed_align
    try:
        t0 = time.perf_counter()
        with open_run(path, "r+") as run:
            result = compare.analyze(run)
            t1 = time.perf_counter()
            compare.write(run, result)
        t2 = time.perf_counter()
    finally:
        sync.align = real_align
    return {"align_s": spent["align_s"], "statistics_s": t1 - t0 - spent["align_s"], "write_s": t2 - t1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, nargs="+", default=[1, 4, 12, 24])
    ap.add_argument("--keep", action="store_true", help="keep the run files (printed)")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="hwval-analysis-scale-"))
    rows = []
    try:
        for hours in args.hours:
            path = folder / f"run-{hours:g}h.h5"
            t0 = time.perf_counter()
            samples = build(path, hours)
            build_s = time.perf_counter() - t0
            size_gib = path.stat().st_size / 2 ** 30
            wall, peak, out = analyze_process(path)
            comps = out["comparisons"]
            n_bins = next(iter(comps.values()))["n_bins"]
            n_phases = len(next(iter(comps.values()))["phases"])
            rows.append((hours, samples, size_gib, build_s, wall, peak, len(comps), n_bins, n_phases))
            print(f"{hours:>5g} h: {samples / 1e6:7.1f} M samples, {size_gib:5.2f} GiB (built in {build_s:5.1f} s); "
                  f"analyze {wall:6.2f} s, peak {peak:6.0f} MiB; {len(comps)} comparisons x {n_bins} bins, "
                  f"{n_phases} phases", flush=True)
            if hours == max(args.hours):
                split = split_times(path)
                print("      in-process split: " + ", ".join(f"{k} {v:.2f}" for k, v in split.items()), flush=True)
            if not args.keep:
                path.unlink()
        print("\n| run | samples | file | analyze | peak memory |\n|---|---|---|---|---|")
        for hours, samples, size, _, wall, peak, *_ in rows:
            print(f"| {hours:g} h | {samples / 1e6:.1f} M | {size:.2f} GiB | {wall:.1f} s | {peak:.0f} MiB |")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"kept {folder}")


if __name__ == "__main__":
    main()
