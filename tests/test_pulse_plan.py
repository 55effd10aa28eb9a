"""The idle tail after a capture's last sync-pulse block: the settling plus the slowest meter's
lag, so the last chip's readings arrive before the capture stops."""

from __future__ import annotations

import time

import pytest

from hwval.capture.pulse_blocks import UNDECLARED_HARDWARE_LAG_S, PulsePlan, PulseRunner, meter_lag_s, plan
from hwval.sources.base import Key, StreamInfo

POWER = (Key("power_w", "W", "window_mean"),)


def _info(name, kind, period_s, **identity) -> StreamInfo:
    return StreamInfo(name, kind, "test", "", "wall", period_s, POWER, identity=identity)


def test_each_stream_lags_by_what_it_declares_or_a_default_for_hardware():
    assert meter_lag_s(_info("plug", "hardware", 0.25)) == UNDECLARED_HARDWARE_LAG_S == 1.0
    assert meter_lag_s(_info("rapl", "software", 0.01)) == 0.0
    assert meter_lag_s(_info("gpu", "software", 0.01, update_period_s=0.1)) == 0.1
    assert meter_lag_s(_info("analyzer", "hardware", 0.5, update_s=0.5)) == 0.5  # declared: no default
    assert meter_lag_s(_info("probe", "hardware", 0.5, update_s=0.5, latency_s=2.0)) == 2.0
    # a field that is not a number of seconds is not a declaration
    assert meter_lag_s(_info("gpu", "software", 0.01, update_period_s=None)) == 0.0
    assert meter_lag_s(_info("odd", "hardware", 0.5, latency_s=float("nan"), update_s=True)) == 1.0


def test_the_tail_adds_the_slowest_lag_to_the_settling():
    plug = _info("plug", "hardware", 0.25)
    gpu = _info("gpu", "software", 0.01, update_period_s=0.1)
    p = plan([plug, gpu])
    assert p.chip_s == 0.721 and p.settle_s == pytest.approx(2 * 0.721)
    assert p.tail_s == pytest.approx(2 * 0.721 + 1.0)
    # software meters alone: nothing to wait for beyond the settling
    q = plan([_info("rapl", "software", 0.01)], 0.2)
    assert q.settle_s == q.tail_s == 1.0


def test_the_runner_idles_the_tail_not_the_settling():
    runner = PulseRunner(PulsePlan(chip_s=0.1, settle_s=30.0, tail_s=0.2), [], lambda *a: None)
    try:
        start = time.monotonic()
        runner.tail()
        waited_s = time.monotonic() - start
    finally:
        runner.close()
    # 0.2 s asked, 30 s of settling not: the bound leaves a loaded machine room
    assert 0.19 <= waited_s < 20, waited_s
