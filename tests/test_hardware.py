"""Checks against real meters, run only when named: ``pytest tests/test_hardware.py --meter SPEC``
(repeatable), e.g. ``--meter tasmota:/dev/ttyUSB0`` or ``--meter 'wt300:TCPIP::10.0.0.5::INSTR'``.
Without ``--meter`` these tests are skipped (see conftest.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import run_hwval
from hwval.runfile.reader import open_run


def pytest_generate_tests(metafunc):
    if "meter_spec" in metafunc.fixturenames:
        specs = metafunc.config.getoption("--meter") or ["(none named)"]
        metafunc.parametrize("meter_spec", specs)


@pytest.mark.hardware
def test_real_meter_records_plausible_power_for_ten_seconds(meter_spec, tmp_path):
    out = tmp_path / "hw.h5"
    spec = meter_spec + ("&" if "?" in meter_spec else "?") + "name=dut"
    res = run_hwval("capture", "--no-nvml", "--no-rapl", "-m", spec, "--duration", "10", "-o", str(out),
                    timeout=120)
    assert res.returncode == 0, res.stderr
    with open_run(out) as run:
        s = run.stream("dut")
        assert not s.attrs["emulated"], "named meter resolved to an emulator"
        assert len(s.t) >= 5, f"only {len(s.t)} readings in 10 s"
        power = s.data["power_w"]
        finite = power[np.isfinite(power)]
        assert len(finite) >= 0.8 * len(power), "more than 20 % of readings had no power value"
        assert np.all((finite >= 0) & (finite < 100_000)), "implausible power values"
        assert not [e for e in run.events if e.name == "gap_start"], "the meter had gaps"
        period = s.attrs.get("period_s")
        if period and not math.isnan(period):
            assert np.median(np.diff(s.t)) < 3 * period + 1.0
