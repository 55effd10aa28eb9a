"""How well ``hwval sync`` recovers each meter's lag, window and drift: seeded scenarios from the
bench model with known truth.

Every scenario is the issue's bench (``hwval.sync.simulate.bench_meters``): a 1 Hz plug (1 s
window, latency 0.2-0.8 s, 1 W steps, 0.3 W noise, 3 ms receipt jitter), a 10 Hz analyzer
(0.1 s window, 0-50 ms latency), NVML at 10 Hz (1 s window, 0-0.1 s latency, 0.3 W noise), a RAPL
counter at 100 Hz (0-2 ms latency, 15.3 uJ units) and a 20 Hz DC instrument stamping its readings
by its own clock, drifting +-50 ppm. The host idles, plays one Barker-13 block, runs a workload of
random plateaus for ``--workload-s``, and plays a second block; chips are ``chip_length_s`` of the
meters (2.882 s). Each run file is written through the capture's HDF5 writer and synchronised by
``hwval.sync.synchronise`` (what ``hwval sync`` runs).

Reported per stream: the lag error at each block as a share of the stream's reporting period
(targets: median <= 2 %, p95 <= 5 %), how often the 95 % interval holds the truth, the window
error, the drift error (target <= 2 ppm), and the RMSE between the aligned hardware and software
streams (1 s bins, after a least-squares gain/offset so that only timing counts) with raw receipt
stamps and with /sync.

    python benchmarks/sync_accuracy.py [--scenarios 24] [--workload-s 1800]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from hwval.runfile import open_run
from hwval.sync import align
from hwval.sync.simulate import Scenario, bench_meters, write_run
from hwval.sync.store import write_sync
from hwval.sync.synchronise import synchronise
from hwval.sync.timing import Timing
from hwval.workloads.pulses import chip_length_s

PAIRS = [("wt310", "rapl_package_0"), ("wt310", "nvml_gpu0"), ("plug", "rapl_package_0"), ("plug", "nvml_gpu0")]


def _rmse_after_fit(hw: np.ndarray, sw: np.ndarray) -> float:
    ok = np.isfinite(hw) & np.isfinite(sw)
    a, b = np.polyfit(sw[ok], hw[ok], 1)
    return float(np.sqrt(np.mean((hw[ok] - (a * sw[ok] + b)) ** 2)))


def run_scenario(seed: int, workload_s: float, folder: Path) -> dict:
    rng = np.random.default_rng(1000 + seed)
    meters = bench_meters(rng)
    chip = chip_length_s([(m.period_s, m.model.window_s) for m in meters])
    sc = Scenario(meters, seed=seed, chip_s=chip, settle_s=8.0, tail_s=8.0, workload_s=workload_s)
    path = folder / f"scenario{seed}.h5"
    built = write_run(path, sc)
    out = {"streams": {}, "rmse": {}}
    with open_run(path, "r+") as run:
        t0 = time.perf_counter()
        result = synchronise(run)
        out["sync_s"] = time.perf_counter() - t0
        write_sync(run, result)
        names = [m.name for m in meters]
        before = align(run, names, bin_s=1.0, timings={})
        after = align(run, names, bin_s=1.0)
        for hw, sw in PAIRS:
            out["rmse"][(hw, sw)] = (_rmse_after_fit(before.power_w[hw], before.power_w[sw]),
                                     _rmse_after_fit(after.power_w[hw], after.power_w[sw]))
    for m in meters:
        st = result.streams[m.name]
        true = built.timings[m.name]
        est = Timing(st.lag_s, st.window_s, st.drift_ppm, st.drift_origin_s)
        errs = [abs(float(est.lag_at(t)) - float(true.lag_at(t))) / m.period_s for t in st.block_times_s]
        truth0 = float(true.lag_at(st.drift_origin_s))
        out["streams"][m.name] = {
            "lag_err_share": errs, "covered": bool(st.lag_ci_s[0] <= truth0 <= st.lag_ci_s[1]),
            "window_err_s": abs(st.window_s - true.window_s), "window_true_s": true.window_s,
            "window_covered": bool(st.window_ci_s[0] <= true.window_s <= st.window_ci_s[1]) if st.window_fitted else None,
            "drift_err_ppm": abs(st.drift_ppm - true.drift_ppm), "drift_true_ppm": true.drift_ppm,
            "drift_covered": bool(st.drift_ci_ppm[0] <= true.drift_ppm <= st.drift_ci_ppm[1]),
            "quality": st.quality, "method": st.method, "period_s": m.period_s,
        }
    path.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", type=int, default=24)
    ap.add_argument("--workload-s", type=float, default=1800.0)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="hwval-sync-acc-") as d:
        for seed in range(args.scenarios):
            results.append(run_scenario(seed, args.workload_s, Path(d)))
    names = list(results[0]["streams"])
    print(f"{args.scenarios} scenarios, {args.workload_s:.0f} s of workload between the two pulse blocks; "
          f"sync took {np.median([r['sync_s'] for r in results]):.2f} s per run (median)\n")
    print("| stream | period | lag error, % of period: median / p95 / max | lag CI holds truth | "
          "window error: median / max | window CI holds truth | drift error ppm: median / max | drift CI holds truth |")
    print("|---|---|---|---|---|---|---|---|")
    for n in names:
        rows = [r["streams"][n] for r in results]
        lag = 100 * np.concatenate([r["lag_err_share"] for r in rows])
        cov = np.mean([r["covered"] for r in rows])
        w_err = np.array([r["window_err_s"] for r in rows])
        d_err = np.array([r["drift_err_ppm"] for r in rows])
        d_cov = np.mean([r["drift_covered"] for r in rows])
        w_cov = [r["window_covered"] for r in rows if r["window_covered"] is not None]
        w_cov_text = f"{100 * np.mean(w_cov):.0f} %" if w_cov else "-"
        wtrue = rows[0]["window_true_s"]
        wtext = "counter (no window)" if rows[0]["window_true_s"] == 0 and n.startswith("rapl") else \
            f"{np.median(w_err) * 1e3:.2f} / {w_err.max() * 1e3:.2f} ms (of {wtrue * 1e3:.0f} ms)"
        drift_note = " (true +/-50)" if n == "n6705" else ""
        print(f"| {n} | {rows[0]['period_s']:g} s | {np.median(lag):.2f} / {np.percentile(lag, 95):.2f} / {lag.max():.2f} | "
              f"{100 * cov:.0f} % | {wtext} | {w_cov_text} | {np.median(d_err):.2f} / {d_err.max():.2f}{drift_note} | {100 * d_cov:.0f} % |")
    all_lag = 100 * np.concatenate([r["streams"][n]["lag_err_share"] for r in results for n in names])
    print(f"\nall streams: lag error median {np.median(all_lag):.2f} %, p95 {np.percentile(all_lag, 95):.2f} % "
          "of the reporting period (targets 2 % / 5 %)")
    dc = np.array([r["streams"]["n6705"]["drift_err_ppm"] for r in results])
    print(f"self-clocked instrument (50 ppm): drift error median {np.median(dc):.3f}, max {dc.max():.3f} ppm "
          "(target <= 2 ppm)\n")
    print("| hardware vs software (1 s bins, after a gain/offset fit) | RMSE raw stamps | RMSE with /sync |")
    print("|---|---|---|")
    for pair in PAIRS:
        b = np.array([r["rmse"][pair][0] for r in results])
        a = np.array([r["rmse"][pair][1] for r in results])
        print(f"| {pair[0]} vs {pair[1]} | {np.median(b):.2f} W (median) | {np.median(a):.2f} W |")


if __name__ == "__main__":
    main()
