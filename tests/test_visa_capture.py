"""End to end for the HMC8015 and N6705C: 'hwval emulate' and 'hwval capture -m ...' as real
processes (the WT300 has its own file, test_wt300_capture.py)."""

from __future__ import annotations

import json

import numpy as np

from hwval.benchmodel import PowerProfile
from hwval.runfile.reader import open_run
from test_visa_support import capture_from_emulator

#: 0.5 s steps: long against the HMC8015's 0.1 s refresh and the N6705's 0.1 s acquisitions.
PROFILE = "steps:60@0.5,250@0.5"


def bench_seconds(run, t: np.ndarray, ready: dict) -> np.ndarray:
    """Run-relative receipt times -> seconds on the emulator's bench clock."""
    return (run.origin_monotonic_ns + t * 1e9 - ready["t0_monotonic_ns"]) / 1e9


def test_hmc8015_capture(tmp_path):
    out, ready = capture_from_emulator(tmp_path, "hmc8015", "name=wall", 2, "--profile", PROFILE)
    profile = PowerProfile.parse(PROFILE)
    with open_run(out) as run:
        s = run.stream("wall")
        # polled on absolute 0.1 s deadlines: never faster, so no more readings than deadlines in
        # their span (+ 0.3 s for a first read held back); how long the capture ran on a loaded
        # machine sets the count, so no window from the 2 s asked for
        assert 5 <= len(s.t) <= (s.t[-1] - s.t[0]) / 0.1 + 4, len(s.t)
        assert s.attrs["driver"] == "hmc8015" and s.dataset_attrs["power_w"]["window_s"] == 0.1
        assert any("no new-data flag" in note for note in json.loads(s.attrs["notes"]))
        # each value is the mean over the 0.1 s refresh that ended at the last boundary before
        # receipt: check against that window and the one before it (the reply may be in flight
        # across a boundary), so the bound comes from the refresh timing, not a tolerance
        bench_t = bench_seconds(run, s.t, ready)
        ends = np.floor(bench_t / 0.1) * 0.1
        now = np.array([profile.mean_w(e - 0.1, e) for e in ends])
        before = np.array([profile.mean_w(e - 0.2, e - 0.1) for e in ends])
        power = s.data["power_w"]
        assert np.all(np.isclose(power, now, rtol=1e-3) | np.isclose(power, before, rtol=1e-3)), power
        assert set(np.round(power)) == {60.0, 250.0}  # 0.1 s windows never straddle a 0.5 s step
        # ±(0.05 % of reading + 0.015 % of range), the range read back with the values
        assert np.all(s.data["power_uncertainty_w"] > 0.0005 * power)
        [summary] = [e for e in run.events if e.name == "repeated_replies"]
        assert summary.stream == "wall" and summary.detail["replies"] == len(s.t)


def test_n6705_capture(tmp_path):
    out, ready = capture_from_emulator(tmp_path, "n6705", "name=rail&points=100&interval_s=0.001&format=real",
                                       2, "--profile", PROFILE)
    profile = PowerProfile.parse(PROFILE)
    with open_run(out) as run:
        s = run.stream("rail")
        interval = 49 * 20.48e-6  # 1 ms rounded up to the module's 20.48 us time base
        assert s.attrs["scope"] == "dc" and s.attrs["period_s"] == interval
        n = len(s.t)
        # whole acquisitions of 100 samples, each ~0.1 s: at least 10 in 2 s even when slow
        assert n % 100 == 0 and n >= 1000, n
        acq = s.t.reshape(-1, 100)
        # per-sample times rebuilt from the sample interval: exact spacing inside each array
        assert np.allclose(np.diff(acq, axis=1), interval, atol=1e-9)
        # the true power at each reconstructed time, shifted by the transfer lag (the last
        # sample sits at receipt): the lag is positive and below one acquisition plus transfer
        bench_t = bench_seconds(run, s.t, ready)
        power = s.data["power_w"]
        assert set(np.round(power)) == {60.0, 250.0}
        lags = np.linspace(0.0, 0.1, 201)
        wrong = [np.abs(profile.power_w(bench_t - lag) - power) > 1.0 for lag in lags]
        best = int(np.argmin([w.mean() for w in wrong]))
        assert 0.0 <= lags[best] < 0.1
        # the lag varies a little between acquisitions (transfer and scheduling): a sample can
        # only land on the wrong level within that variation of a step edge, far less than one
        # 0.1 s acquisition, and never in the middle of a 0.5 s step
        t_wrong = bench_t[wrong[best]] - lags[best]
        to_edge = np.abs(t_wrong - np.round(t_wrong / 0.5) * 0.5)
        assert np.all(to_edge < 0.1), to_edge.max()
