"""End to end: 'hwval emulate wt300' and 'hwval capture -m wt300:...' as real processes."""

from __future__ import annotations

import math

import numpy as np

from conftest import run_hwval
from hwval.benchmodel import PowerProfile
from hwval.runfile.reader import open_run
from test_visa_support import capture_from_emulator

PROFILE = "steps:60@0.5,250@0.5"


def test_capture_records_analyzer_values_and_integration(tmp_path):
    out, emulator = capture_from_emulator(tmp_path, "wt300", "name=wall&update_s=0.1&integrate=true", 2.5,
                                          "--profile", PROFILE)
    profile = PowerProfile.parse(PROFILE)
    with open_run(out) as run:
        s = run.stream("wall")
        # 10 updates per second: how many fall in the capture depends on how long it ran on a
        # loaded machine, so the contract is checked instead (each update read once, below)
        assert len(s.t) >= 5
        bench_t = (run.origin_monotonic_ns + s.t * 1e9 - emulator["t0_monotonic_ns"]) / 1e9
        # each value is the mean over the update interval that ended at the last boundary before
        # receipt, or the one before it when the reply was in flight across a boundary: bounds
        # from the update timing, not a tolerance on how many match
        ends = np.floor(bench_t / 0.1) * 0.1
        now = np.array([profile.mean_w(e - 0.1, e) for e in ends])
        before = np.array([profile.mean_w(e - 0.2, e - 0.1) for e in ends])
        power = s.data["power_w"]
        assert np.all(np.isclose(power, now, rtol=1e-3) | np.isclose(power, before, rtol=1e-3)), power
        # each update read once: the updates the readings can come from (the one ending at `ends`,
        # or the one before) admit a strictly increasing choice, one distinct update per reading
        end_index = np.round(ends / 0.1).astype(int)
        assert len(s.t) <= end_index[-1] - end_index[0] + 2  # no more readings than updates
        update = -math.inf
        for i, end in enumerate(end_index):
            options = [u for u, mean in ((end - 1, before[i]), (end, now[i]))
                       if u > update and math.isclose(power[i], mean, rel_tol=1e-3)]
            assert options, f"reading {i} at {bench_t[i]:.3f} s repeats an update already read"
            update = options[0]
        assert np.all(np.diff(s.data["energy_j"]) > 0) and s.data["energy_j"][0] == 0.0
        assert s.dataset_attrs["power_w"]["semantics"] == "window_mean"
        [integ] = [e for e in run.events if e.name == "integration"]
        started = (integ.detail["started_ns"] - emulator["t0_monotonic_ns"]) / 1e9
        stopped = (integ.detail["stopped_ns"] - emulator["t0_monotonic_ns"]) / 1e9
        truth_j = profile.energy_j(started, stopped)
        assert math.isclose(integ.detail["energy_j"], truth_j, abs_tol=0.001 * truth_j + 0.3 * (stopped - started)
                            + 250.0 * integ.detail["time_uncertainty_s"] + 0.5)


def test_capture_refuses_a_wrong_address_with_one_line(tmp_path):
    res = run_hwval("capture", "--no-nvml", "--no-rapl", "-m", "wt300:TCPIP::127.0.0.1::1::SOCKET?timeout_s=0.5",
                    "--duration", "1", "-o", str(tmp_path / "x.h5"))
    assert res.returncode == 2
    assert "TCPIP::127.0.0.1::1::SOCKET" in res.stderr and "hwval emulate wt300" in res.stderr
