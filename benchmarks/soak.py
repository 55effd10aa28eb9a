"""Soak: a long capture of emulated meters with faults injected plus synthetic sources, watching
the capture process's memory.

Usage: python benchmarks/soak.py [--duration 300] [--rate-hz 1000] [--keep DIR]
                                 [--tracemalloc-dir DIR [--tracemalloc-first-s 120]
                                  [--tracemalloc-every-s 300]]

Runs ``hwval capture --duration S`` as its own process on a Tasmota plug emulator (a pty, with
garbage, dropped, truncated and bad-checksum frames injected), a WT310 emulator (SCPI on TCP)
and a synthetic source making up the rest of ``--rate-hz``. The capture's resident memory
(VmRSS from /proc) is sampled every second; the growth is measured from 10 % to 100 % of the
run (the first 10 % holds the interpreter's and HDF5's warm-up, which are not a leak).

Passes (exit 0) when the RSS growth is under 5 %, no reading was dropped and the run is
complete; otherwise prints why and exits 1. Protocol errors from the injected faults are
expected and reported, not failures: each is a counted error, never a lost capture.

``--tracemalloc-dir DIR`` is for finding where memory grows: the capture is started with
benchmarks/tracemalloc_hook on its PYTHONPATH (a start-up hook, not hwval code) that runs
tracemalloc and dumps snapshots to DIR at ``--tracemalloc-first-s`` (120) and then every ``--tracemalloc-every-s`` (300), with
RSS and the traced total in DIR/log.jsonl; compare them with ``snapshot.compare_to``. tracemalloc
slows every allocation and its own tables grow with the heap, so the RSS verdict of such a run
is not the plain capture's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py

MAX_GROWTH_PCT = 5.0
HWVAL = [sys.executable, "-m", "hwval.cli"]


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def start_emulator(device: str, workdir: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    ready = workdir / f"{device}.ready.json"
    proc = subprocess.Popen([*HWVAL, "emulate", device, "--ready-file", str(ready), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"soak: the {device} emulator did not start: {proc.stderr.read()[-500:]}")
        time.sleep(0.05)
    for _ in range(100):  # it may be seen while still being written: read until it parses
        try:
            return proc, json.loads(ready.read_text())["resource"]
        except (ValueError, KeyError):
            time.sleep(0.05)
    raise SystemExit(f"soak: {ready} is not readable JSON")


def summarise(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        streams = {}
        for name, g in f["streams"].items():
            streams[name] = {"readings": int(g["t"].shape[0]),
                             "dropped": int(g.attrs.get("dropped_readings", 0)),
                             "errors": sum(json.loads(g.attrs.get("error_counts", "{}") or "{}").values())}
        return {"complete": bool(f.attrs["complete"]), "stop_reason": str(f.attrs.get("stop_reason", "")),
                "streams": streams}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=300.0, help="capture length in seconds")
    ap.add_argument("--rate-hz", type=float, default=1000.0, help="aggregate reading rate")
    ap.add_argument("--keep", type=Path, default=None, help="keep the run file in this folder")
    ap.add_argument("--tracemalloc-dir", type=Path, default=None,
                    help="run the capture under tracemalloc, dumping snapshots to this folder")
    ap.add_argument("--tracemalloc-first-s", type=float, default=120.0,
                    help="seconds into the capture of the first snapshot")
    ap.add_argument("--tracemalloc-every-s", type=float, default=300.0,
                    help="seconds between snapshots after the first")
    args = ap.parse_args()
    if not args.duration >= 10:
        raise SystemExit("soak: --duration must be at least 10 s (growth is measured from 10 % of it)")
    # CI stops a soak it runs beside a failed suite with SIGTERM: finish through the cleanup below
    # (emulators and the capture ended), not Python's default of dying on the spot with them left.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    workdir = Path(tempfile.mkdtemp(prefix="hwval-soak-"))
    emulators = []
    capture = None
    try:
        plug, tty = start_emulator("tasmota", workdir, "--garbage-rate", "0.05", "--drop-rate", "0.05",
                                   "--truncate-rate", "0.05", "--bad-checksum-rate", "0.05",
                                   "--fault-seed", "1")
        emulators.append(plug)
        wt, visa = start_emulator("wt300", workdir, "--port", "0")
        emulators.append(wt)
        # the hardware meters give ~5 readings/s; the synthetic source makes up the rest
        period_s = 1.0 / max(args.rate_hz - 5.0, 1.0)
        out = (args.keep or workdir) / f"soak-{int(time.time())}.h5"
        cmd = [*HWVAL, "capture", "--no-nvml", "--no-rapl", "--no-live",
               "-m", f"tasmota:{tty}?name=plug",
               "-m", f"wt300:{visa}?name=analyzer&update_s=0.25",
               "-m", f"synthetic:idle-load?period_s={period_s:.6g}&name=syn",
               "--duration", f"{args.duration:g}", "-o", str(out)]
        env = None
        if args.tracemalloc_dir is not None:
            hook = Path(__file__).resolve().parent / "tracemalloc_hook"
            env = dict(os.environ, HWVAL_TRACEMALLOC_DIR=str(args.tracemalloc_dir.resolve()),
                       HWVAL_TRACEMALLOC_FIRST_S=f"{args.tracemalloc_first_s:g}",
                       HWVAL_TRACEMALLOC_EVERY_S=f"{args.tracemalloc_every_s:g}",
                       PYTHONPATH=os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p))
        capture = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        t0 = time.monotonic()
        samples: list[tuple[float, int]] = []
        while capture.poll() is None:
            elapsed = time.monotonic() - t0
            rss = rss_kib(capture.pid)
            if rss is not None and elapsed <= args.duration:  # not the finish: it is not steady state
                samples.append((elapsed, rss))
            time.sleep(1.0)
        err = capture.stderr.read()
        if capture.returncode != 0:
            print(f"soak: FAIL: the capture exited {capture.returncode}: {err.strip()[-500:]}")
            return 1
    finally:
        if capture is not None and capture.poll() is None:
            emulators.insert(0, capture)  # stopped first (SIGTERM: it finishes its file), then the meters
        for proc in emulators:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    steady = [rss for t, rss in samples if t >= 0.1 * args.duration]
    if len(steady) < 2:
        print(f"soak: FAIL: only {len(steady)} memory samples after 10 % of the run")
        return 1
    start_kib, end_kib, peak_kib = steady[0], steady[-1], max(steady)
    growth_pct = 100.0 * (end_kib - start_kib) / start_kib
    run = summarise(out)
    readings = sum(s["readings"] for s in run["streams"].values())
    dropped = sum(s["dropped"] for s in run["streams"].values())
    per_stream = ", ".join(f"{name} {s['readings']} ({s['errors']} errors)" for name, s in run["streams"].items())
    print(f"soak: {args.duration:g} s at {readings / args.duration:.0f} readings/s aggregate: "
          f"{readings} readings, {dropped} dropped; {per_stream}")
    print(f"soak: capture RSS {start_kib / 1024:.1f} MB at 10 % -> {end_kib / 1024:.1f} MB at 100 % "
          f"(growth {growth_pct:+.2f} %, peak {peak_kib / 1024:.1f} MB, {len(samples)} samples)")
    failures = []
    if growth_pct >= MAX_GROWTH_PCT:
        failures.append(f"RSS grew {growth_pct:.2f} % (limit {MAX_GROWTH_PCT:g} %)")
    if dropped:
        failures.append(f"{dropped} readings dropped")
    if not run["complete"]:
        failures.append(f"the run is incomplete ({run['stop_reason']})")
    if failures:
        print(f"soak: FAIL: {'; '.join(failures)}")
        return 1
    print("soak: PASS")
    # the emulators' ready files, and the run file unless --keep put it elsewhere (a failed soak
    # leaves all of it for a look)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
