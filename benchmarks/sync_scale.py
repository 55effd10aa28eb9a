"""``hwval sync`` on a 24 h run: wall time and peak memory (targets: < 10 s, < 1 GiB).

The run is a big training node: four RAPL domains at 1 kHz (power_w and energy_j), eight GPUs
through NVML at 20 Hz (1 s window-mean power and the energy counter), and a 10 Hz analyzer at
the wall, with a Barker-13 pulse block before and after 24 h of workload (9 minutes of load and
1 minute of data loading in every 10). Every stream sees the same true power at its own lag
(truth: the wall 50 ms, GPUs 80 ms, RAPL 1 ms). The file (about 9 GB) is built in blocks with
h5py through the run-file layout functions, under /tmp, and deleted afterwards. ``hwval sync
RUN --json`` runs as a fresh process (the command an operator runs): its wall time and peak
resident memory (``wait4`` rusage) are reported, and the lags it found are checked against the
truth.

    python benchmarks/sync_scale.py [--hours 24] [--keep]
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
from hwval.workloads.pulses import BARKER13, chip_length_s

BLOCK_ROWS = 1 << 22
SETTLE_S = 10.0
IDLE_W, PULSE_W, LOAD_W = 60.0, 120.0, 200.0


def _streams():
    """(info, rate Hz, lag s, window s or None for counters-only keys, share of the node's power)."""
    out = [(StreamInfo("wall", "hardware", "wt300", "TCPIP::10.0.0.5::INSTR", "wall", 0.1,
                       (Key("power_w", "W", "window_mean", 0.1),), {"model": "WT310E"}), 10.0, 0.05, 0.1, 1.0)]
    for i in range(8):
        out.append((StreamInfo(f"nvml_gpu{i}", "software", "nvml", f"GPU-{i}", "gpu", 0.05,
                               (Key("power_w", "W", "window_mean", 1.0), Key("energy_j", "J", "counter")),
                               {"uuid": f"GPU-{i}"}), 20.0, 0.08, 1.0, 0.08))
    for kind, scope in (("package", "cpu_package"), ("dram", "dram")):
        for pkg in range(2):
            out.append((StreamInfo(f"rapl_{kind}_{pkg}", "software", "rapl", "/sys/class/powercap", scope, 0.001,
                                   (Key("power_w", "W", "window_mean", 0.001), Key("energy_j", "J", "counter")),
                                   {"domain": f"{kind}-{pkg}"}), 1000.0, 0.001, 0.001, 0.05))
    return out


def _profile(duration_s: float, chip_s: float):
    """Knots (x, cumulative energy) of the node's true power, and the events."""
    x, p, events = [0.0], [], []

    def seg(power, d):
        p.append(power)
        x.append(x[-1] + d)

    def block():
        seg(IDLE_W, SETTLE_S)
        t = x[-1]
        events.append(Event(t, "pulse_start", "", {"pattern": "barker13", "chip_s": chip_s, "levels": list(BARKER13),
                                                   "targets": ["cpu", *[f"cuda:{i}" for i in range(8)]]}))
        for i, lv in enumerate(BARKER13):
            events.append(Event(x[-1], "pulse_chip", "", {"index": i, "level": lv}))
            seg(IDLE_W + lv * PULSE_W, chip_s)
        events.append(Event(x[-1], "pulse_end", "", {}))
        seg(IDLE_W, SETTLE_S)

    block()
    events.append(Event(x[-1], "workload_start", "", {}))
    end = duration_s - (2 * SETTLE_S + 13 * chip_s)
    while x[-1] < end - 1e-9:
        phase = x[-1] % 600.0
        seg(LOAD_W if phase < 540.0 else IDLE_W, min(540.0 - phase if phase < 540.0 else 600.0 - phase, end - x[-1]))
    events.append(Event(x[-1], "workload_end", "", {"exit_code": 0}))
    block()
    seg(IDLE_W, 1e6)
    x = np.array([-1e6, *x])
    p = np.array([IDLE_W, *p])
    e = np.concatenate([[-1e6 * IDLE_W], np.cumsum(np.diff(x) * p) - 1e6 * IDLE_W])
    return x, e, events


def build(path: Path, hours: float, seed: int = 1) -> tuple[int, float]:
    duration_s = hours * 3600.0
    chip = chip_length_s([(0.1, 0.1), (0.05, 1.0), (0.001, 0.0)])
    kx, ke, events = _profile(duration_s, chip)
    rng = np.random.default_rng(seed)
    samples = 0
    with h5py.File(path, "w") as f:
        write_root_attrs(f, Start(str(uuid.uuid4()), "2026-12-01T00:00:00Z", "bench-node", ["python", "train.py"],
                                  10 ** 12, 1_764_547_200 * 10 ** 9, "{}", "benchmark"))
        ev = create_events_group(f)
        group = f.create_group("streams")
        for info, rate, lag, window, share in _streams():
            g = create_stream_group(group, info)
            n = int(duration_s * rate)
            e0 = None
            for lo in range(0, n, BLOCK_ROWS):
                idx = np.arange(lo, min(lo + BLOCK_ROWS, n), dtype=np.float64)
                t = (idx + 0.5 + rng.uniform(-0.05, 0.05, len(idx))) / rate   # receipt jitter, monotonic
                end = t - lag
                cum = share * np.interp(end, kx, ke)
                append_columns(g["t"], [t])
                append_columns(g["power_w"], [(cum - share * np.interp(end - window, kx, ke)) / window])
                if "energy_j" in g:
                    e0 = cum[0] if e0 is None else e0
                    append_columns(g["energy_j"], [cum - e0])
            samples += n
        append_events(ev, events)
        finalize(f, Stop(0, True, {}))
    return samples, chip


def sync_process(path: Path) -> tuple[float, float, dict]:
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "hwval.cli", "sync", str(path), "--json"],
                                stdout=subprocess.PIPE, stderr=err, text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"hwval sync failed: {err.read().strip()[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0, json.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--keep", action="store_true", help="keep the run file (printed)")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="hwval-sync-scale-", dir="/tmp"))
    path = folder / f"run-{args.hours:g}h.h5"
    try:
        t0 = time.perf_counter()
        samples, chip = build(path, args.hours)
        built_s = time.perf_counter() - t0
        size_gb = path.stat().st_size / 1e9
        print(f"built {args.hours:g} h run: {samples / 1e6:.1f} M readings, {size_gb:.2f} GB, chip {chip} s, "
              f"in {built_s:.0f} s")
        wall, rss, out = sync_process(path)
        lags = {n: s["lag_s"] for n, s in out["streams"].items()}
        truth = {n: lag for (info, _, lag, _, _) in _streams() for n in [info.name]}
        worst = max(abs(lags[n] - truth[n]) for n in truth)
        print(f"hwval sync: {wall:.2f} s wall, {rss:.0f} MiB peak RSS, {len(lags)} streams; "
              f"largest lag error {worst * 1e3:.3f} ms (targets: < 10 s, < 1024 MiB)")
        for n in ("wall", "nvml_gpu0", "rapl_package_0"):
            s = out["streams"][n]
            print(f"  {n}: lag {s['lag_s'] * 1e3:.3f} ms (true {truth[n] * 1e3:.0f}), window "
                  f"{s['window_s'] * 1e3:.1f} ms, drift {s['drift_ppm']:.3f} ppm, quality {s['quality']:.3f}")
    finally:
        if args.keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
