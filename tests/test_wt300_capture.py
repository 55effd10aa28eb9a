"""End to end: 'hwval emulate wt300' and 'hwval capture -m wt300:...' as real processes."""

from __future__ import annotations

import json
import math
import signal
import time

import numpy as np
import pytest

from conftest import popen_hwval, run_hwval
from hwval.emulators.bench import PowerProfile
from hwval.store import open_run

PROFILE = "steps:60@0.5,250@0.5"


@pytest.fixture
def emulator(tmp_path):
    ready = tmp_path / "ready.json"
    proc = popen_hwval("emulate", "wt300", "--port", "0", "--profile", PROFILE, "--ready-file", str(ready))
    deadline = time.monotonic() + 20
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "emulator did not get ready"
        time.sleep(0.05)
    yield json.loads(ready.read_text())
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "wt300 emulator ready: use -m wt300:TCPIP::127.0.0.1::" in out


def test_capture_records_analyzer_values_and_integration(emulator, tmp_path):
    out = tmp_path / "wt.h5"
    spec = f"wt300:{emulator['resource']}?name=wall&update_s=0.1&integrate=true"
    res = run_hwval("capture", "--no-nvml", "--no-rapl", "-m", spec, "--duration", "2.5", "-o", str(out))
    assert res.returncode == 0, res.stderr
    profile = PowerProfile.parse(PROFILE)
    with open_run(out) as run:
        s = run.stream("wall")
        assert 18 <= len(s.t) <= 27  # 10 updates per second, each read once
        bench_t = (run.origin_monotonic_ns + s.t * 1e9 - emulator["t0_monotonic_ns"]) / 1e9
        # each value is the mean over the update interval that ended at the last boundary
        ends = np.floor(bench_t / 0.1) * 0.1
        truth = np.array([profile.mean_w(e - 0.1, e) for e in ends])
        close = np.isclose(s.data["power_w"], truth, rtol=1e-3)
        assert close.mean() > 0.9, (s.data["power_w"], truth)
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
