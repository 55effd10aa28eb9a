"""Live sync on this machine: ``hwval capture --sync-pulses`` on the host-following bench (a
Tasmota plug on a pty, a WT300 on TCP, a powercap tree), then ``hwval sync``, a few times; prints
each meter's lag error against the latency its emulator was configured with.

    python benchmarks/sync_live.py [--runs 3] [--chip-s 0.5] [--busy 0]

The true lag of a meter that holds its value until the next update (the WT300's interval means,
RAPL's counter between updates) is its latency plus the age of the value when polled, anywhere
in 0..update: the error is the distance from that range (0 inside it). ``--busy N`` runs N busy
loops (nice 0) beside it, as a loaded machine would.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hwval.emulators.host_bench import start_bench

STREAMS = ("plug", "wt300", "rapl_package_0")


def truth_ranges(bench) -> dict[str, tuple[float, float]]:
    t = bench.truth
    wt, rp = t["wt300"], t["rapl"]
    return {"plug": (t["plug"]["model"]["latency_s"],) * 2,
            "wt300": (wt["model"]["latency_s"], wt["model"]["latency_s"] + wt["options"]["update_s"]),
            "rapl_package_0": (rp["model"]["latency_s"], rp["model"]["latency_s"] + rp["options"]["update_s"])}


def one_run(work: Path, chip_s: float) -> dict:
    work.mkdir()
    started = time.monotonic()
    with start_bench(work, cpu_load="niced") as bench:
        specs = [a for s in bench.meter_specs
                 for a in ("-m", s + ("&domains=rapl_package_0" if s.startswith("rapl:") else ""))]
        cap = subprocess.run([sys.executable, "-m", "hwval.cli", "capture", "--no-nvml", "--no-rapl", "--no-live",
                              *specs, "--sync-pulses", "--pulse-chip-s", str(chip_s), "--duration", "0.2",
                              "-o", str(work / "run.h5")], capture_output=True, text=True, timeout=300)
        truth = truth_ranges(bench)
    if cap.returncode:
        raise SystemExit(f"capture failed: {cap.stderr[-1000:]}")
    sync = subprocess.run([sys.executable, "-m", "hwval.cli", "sync", str(work / "run.h5"), "--json"],
                          capture_output=True, text=True, timeout=300)
    if sync.returncode:
        raise SystemExit(f"sync failed: {sync.stderr[-1000:]}")
    streams = json.loads(sync.stdout)["streams"]
    out = {"wall_s": time.monotonic() - started}
    for name in STREAMS:
        e = streams[name]
        lo_t, hi_t = truth[name]
        lag = e["lag_s"] if e["lag_s"] is not None else math.nan
        err = 0.0 if lo_t <= lag <= hi_t else min(abs(lag - lo_t), abs(lag - hi_t))
        lo, hi = e["lag_ci_s"]
        hit = lo is not None and lo <= hi_t and hi >= lo_t
        out[name] = {"method": e["method"], "lag_s": lag, "err_s": err if math.isfinite(lag) else math.nan,
                     "ci_half_s": (hi - lo) / 2 if lo is not None else math.nan, "ci_meets_truth": hit}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--chip-s", type=float, default=0.5)
    ap.add_argument("--busy", type=int, default=0, help="busy loops to run beside it")
    args = ap.parse_args()
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results = [one_run(Path(tmp) / f"run{i}", args.chip_s) for i in range(args.runs)]
    finally:
        for p in loops:
            p.kill()
            p.wait()
    print(f"{args.runs} runs, chip {args.chip_s} s, {args.busy} busy loops beside; lag error = distance "
          "from the configured range (ms)")
    print(f"{'stream':<16} {'reacted':>7} {'median err':>10} {'max err':>8} {'median CI +-':>12} {'CI meets truth':>14}")
    for name in STREAMS:
        rows = [r[name] for r in results]
        ok = [r for r in rows if r["method"] == "pulse_fit"]
        errs = sorted(1e3 * r["err_s"] for r in ok)
        cis = sorted(1e3 * r["ci_half_s"] for r in ok)
        med = (lambda v: v[len(v) // 2] if v else math.nan)
        print(f"{name:<16} {len(ok):>3}/{len(rows):<3} {med(errs):>10.1f} {max(errs, default=math.nan):>8.1f} "
              f"{med(cis):>12.1f} {sum(r['ci_meets_truth'] for r in ok):>10}/{len(ok)}")
    print(f"wall time per run (bench start, capture, sync): median {sorted(r['wall_s'] for r in results)[len(results) // 2]:.1f} s")


if __name__ == "__main__":
    main()
