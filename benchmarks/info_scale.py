"""How ``hwval info`` scales: time and peak memory at 1e6, 1e7 and 1e8 readings and at 1e4 to 1e6
events.

Reading runs have one stream (``t``, ``power_w`` and ``energy_j``, 1 kHz, a gap every 1e6
readings) and the workload's two events; event runs have a 1e5-reading stream and N ``mark``
events (``hwval.mark("step", step=i)`` details). Files are written with h5py through the
run-file layout functions (the capture's own writer functions) under a temporary folder and
deleted afterwards. Each file is summarised by a fresh ``hwval info RUN`` process and a fresh
``hwval info RUN --json`` process (output to /dev/null): wall time and that process's peak
resident memory (``ru_maxrss``). The bare interpreter with hwval, h5py and numpy imported is
measured the same way, as the floor.

Targets (issue 8): < 200 MB at any size; a million events in seconds.

    python benchmarks/info_scale.py [--readings 1e6 1e7 1e8] [--events 1e4 1e5 1e6] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from hwval.runfile.documents import Event, Start
from hwval.runfile.layout import append_columns, append_events, create_events_group, create_stream_group, write_root_attrs
from hwval.sources.base import Key, StreamInfo

BLOCK = 1 << 22
PERIOD_S = 0.001


def build(path: Path, readings: int, events: int) -> None:
    start = Start(run_id="bench", created_utc="2026-12-01T00:00:00Z", hostname="bench", command=["python", "train.py"],
                  origin_monotonic_ns=1, origin_realtime_ns=1, config_json="{}", hwval_version="bench")
    info = StreamInfo("wall", "hardware", "synthetic", "bench", "wall", PERIOD_S,
                      (Key("power_w", "W", "instant"), Key("energy_j", "J", "counter")))
    with h5py.File(path, "w") as f:
        write_root_attrs(f, start)
        g = create_stream_group(f.create_group("streams"), info)
        for lo in range(0, readings, BLOCK):
            k = np.arange(lo, min(lo + BLOCK, readings), dtype=np.float64)
            t = 0.5 + k * PERIOD_S + np.floor(k / 1e6) * 0.05  # a 50 ms gap every million readings
            power = 100.0 + 10.0 * np.sin(k / 5000.0)
            append_columns(g["t"], [t])
            append_columns(g["power_w"], [power])
            append_columns(g["energy_j"], [np.cumsum(power) * PERIOD_S])
        ev = create_events_group(f)
        end_s = 0.5 + readings * PERIOD_S
        append_events(ev, [Event(0.1, "workload_start", "", {"command": ["python", "train.py"], "pid": 1})])
        for lo in range(0, events, 1 << 16):
            i = np.arange(lo, min(lo + (1 << 16), events))
            ts = 0.5 + (i + 0.5) * (end_s - 0.5) / max(events, 1)
            append_events(ev, [Event(float(t), "mark", "", {"mark": "step", "step": int(n), "pid": 1})
                               for t, n in zip(ts, i)])
        append_events(ev, [Event(end_s, "workload_end", "", {"exit_code": 0})])
        f.attrs["exit_code"] = 0
        f.attrs["complete"] = True  # already in time order: no finish-time sort needed


def measure(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one process, its output thrown away."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err}")
    return elapsed, usage.ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readings", type=float, nargs="*", default=[1e6, 1e7, 1e8])
    ap.add_argument("--events", type=float, nargs="*", default=[1e4, 1e5, 1e6])
    ap.add_argument("--dir", default=None, help="where to write the files (default: a temporary folder)")
    ap.add_argument("--build", nargs=3, metavar=("PATH", "READINGS", "EVENTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build:
        build(Path(args.build[0]), int(args.build[1]), int(args.build[2]))
        return
    hwval = [sys.executable, "-m", "hwval.cli", "info"]
    _, floor_mb = measure([sys.executable, "-c", "import hwval.cli, hwval.runfile.info, h5py, numpy"])
    print(f"floor (interpreter + imports): {floor_mb:.0f} MB")
    print(f"{'readings':>10} {'events':>9} {'file MB':>8} {'info s':>7} {'info MB':>8} {'--json s':>9} {'--json MB':>10}")
    cases = [(int(r), 2) for r in args.readings] + [(100_000, int(e)) for e in args.events]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for readings, events in cases:
            path = Path(tmp) / f"r{readings}_e{events}.h5"
            # Built in a child: Linux carries a process's peak RSS across fork and exec, so a
            # parent grown by building would inflate every measured child's ru_maxrss.
            subprocess.run([sys.executable, __file__, "--build", str(path), str(readings), str(events)], check=True)
            size_mb = path.stat().st_size / 1e6
            text_s, text_mb = measure([*hwval, str(path)])
            json_s, json_mb = measure([*hwval, str(path), "--json"])
            print(f"{readings:>10.0e} {events:>9.0e} {size_mb:>8.0f} {text_s:>7.2f} {text_mb:>8.0f} "
                  f"{json_s:>9.2f} {json_mb:>10.0f}", flush=True)
            path.unlink()


if __name__ == "__main__":
    main()
