"""The n6705 streaming driver through pyvisa-py over TCP to the N6705C emulator (ASCII and
binary REAL blocks), and through pyvisa-sim."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from hwval.benchmodel import Bench, MeterModel, PowerProfile
from hwval.emulators.n6705 import N6705
from hwval.sources.base import SourceSpec
from hwval.sources.visa.n6705 import create, sample_times_ns
from test_visa_support import RecordingContext, record, serve  # noqa: F401  (fixture)


def source(resource: str, **options):
    return create(SourceSpec("n6705", resource, "rail", None, options))


def run_for(src, ctx: RecordingContext, seconds: float) -> None:
    timer = threading.Timer(seconds, ctx.stop.set)
    timer.start()
    src.run(ctx)
    timer.cancel()


def test_sample_times_are_reconstructed_back_from_receipt():
    t = sample_times_ns(10_000_000, 4, 0.001)
    assert t.tolist() == [7_000_000, 8_000_000, 9_000_000, 10_000_000]


@pytest.mark.parametrize("fmt", ["ascii", "real"])
def test_arrays_decoded_with_per_sample_times(serve, fmt):
    # 0.05 s steps sampled every ~1 ms: each array holds both levels
    inst = N6705(Bench(PowerProfile.parse("steps:60@0.05,250@0.05")), MeterModel(), rail_v=12.0)
    server = serve(inst)
    src = source(server.resource, points=100, interval_s=0.001, format=fmt, vi=True)
    ctx = RecordingContext()
    info = src.open(ctx)[0]
    run_for(src, ctx, 0.5)
    src.close()
    cmds = server.commands(1)
    assert cmds[:8] == ["*IDN?", "*CLS", "SENS:SWE:POIN 100,(@1)", "SENS:SWE:TINT 0.001,(@1)",
                        "FORM:BORD NORM", "FORM REAL" if fmt == "real" else "FORM ASC", "SYST:ERR?",
                        "SENS:SWE:TINT? (@1)"]
    interval = 49 * 20.48e-6  # the module rounds 1 ms up to its 20.48 us time base
    assert info.period_s == pytest.approx(interval) and info.scope == "dc"
    n_acq = len(inst.acquisitions)
    assert n_acq >= 2 and len(ctx.readings) == 100 * n_acq
    times = np.array([t for t, _, _ in ctx.readings])
    power = np.array([v["power_w"] for _, _, v in ctx.readings])
    for k, (start_ns, tint, n) in enumerate(inst.acquisitions):
        t = times[k * 100:(k + 1) * 100]
        assert np.allclose(np.diff(t), tint * 1e9, atol=1)  # spaced by the real interval
        # reconstructed times sit just after the true sample times (transfer lag only; the
        # bound is loose because a loaded machine delays the reply: the spacing above and the
        # sign here are what catch a wrong reconstruction)
        lag_s = (t - (start_ns + np.arange(n) * tint * 1e9)) / 1e9
        assert np.all(lag_s > 0) and np.all(lag_s < 1.0)
        # values equal the true power at each sample time (float32 for REAL)
        truth = inst.bench.profile.power_w(inst.bench.t_s(start_ns) + np.arange(n) * tint)
        assert np.allclose(power[k * 100:(k + 1) * 100], truth, rtol=1e-6)
    assert set(np.round(power)) == {60.0, 250.0}
    assert all(v["voltage_v"] == 12.0 for _, _, v in ctx.readings)
    assert ctx.readings[0][2]["current_a"] == pytest.approx(ctx.readings[0][2]["power_w"] / 12.0, rel=1e-6)
    assert ctx.errors == {}


def test_malformed_array_and_drop_under_recorder(serve):
    inst = N6705(Bench(PowerProfile.parse("constant:100")), MeterModel())
    server = serve(inst, malformed_every=2, drop_after=3)
    cap = record(source(server.resource, points=50, interval_s=0.002, timeout_s=0.3), 2.0, name="rail")
    assert cap.stats["error_counts"].get("malformed", 0) >= 1
    names = cap.names()
    assert names.index("gap_start") < names.index("reconnect") < names.index("gap_end")
    assert len(cap.t_ns) >= 100 and np.allclose(cap.values["power_w"], 100.0)


def test_through_pyvisa_sim():
    src = source("TCPIP::127.0.0.1::5024::SOCKET", backend="sim", points=8, interval_s=0.001, vi=True)
    ctx = RecordingContext()
    src.open(ctx)
    receipt_ns, arrays = src.acquire()
    src.close()
    assert arrays["power_w"].tolist() == [60.0, 60.0, 250.0, 250.0, 250.0, 60.0, 60.0, 60.0]
    assert arrays["current_a"][2] == pytest.approx(20.83333)
    assert src.interval_s == 0.001 and ctx.errors == {}
