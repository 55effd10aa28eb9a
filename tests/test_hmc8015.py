"""The hmc8015 driver through pyvisa-py over TCP to the HMC8015 emulator, and through pyvisa-sim."""

from __future__ import annotations

import math

import pytest

from hwval.benchmodel import Bench, MeterModel, PowerProfile
from hwval.emulators.hmc8015 import Hmc8015
from hwval.sources.base import SourceSpec, SourceUnavailable
from hwval.sources.visa.hmc8015 import create
from test_visa_support import RecordingContext, record, run_polled, serve  # noqa: F401  (fixture)


def source(resource: str, **options):
    return create(SourceSpec("hmc8015", resource, "wall", None, options))


def test_cells_configured_in_order_and_values_decoded(serve):
    inst = Hmc8015(Bench(PowerProfile.parse("steps:60@0.3,250@0.3")), MeterModel())
    server = serve(inst)
    ctx, [info], readings = run_polled(source(server.resource), 0.8)
    assert server.commands(1)[:13] == [
        "*IDN?", "*CLS", "CHAN1:MEAS:FUNC P,URMS,IRMS,LAMBda,URANge,IRANge", "VIEW:NUM:PAGE1:SIZE 6",
        "VIEW:NUM:PAGE1:CELL1:FUNC P", "VIEW:NUM:PAGE1:CELL2:FUNC URMS", "VIEW:NUM:PAGE1:CELL3:FUNC IRMS",
        "VIEW:NUM:PAGE1:CELL4:FUNC LAMBda", "VIEW:NUM:PAGE1:CELL5:FUNC URANge",
        "VIEW:NUM:PAGE1:CELL6:FUNC IRANge", "CHAN1:ACQ:VOLT:RANG:AUTO ON", "CHAN1:ACQ:CURR:RANG:AUTO ON",
        "SYST:ERR?"]
    # the measured functions, not the display cells, decide what CHAN1:MEAS:DATA? returns
    assert inst.measured == ["P", "URMS", "IRMS", "LAMBDA", "URANGE", "IRANGE"]
    assert info.period_s == 0.1 and info.identity["model"] == "HMC8015"
    assert any("no new-data flag" in note for note in info.notes)
    assert len(readings) >= 6
    for index, (_, v) in zip(inst.clock.served, readings):
        truth = inst._power_w(index)
        assert v["power_w"] == pytest.approx(truth, rel=1e-4)
        assert v["power_factor"] == pytest.approx(0.95)
        i_range = 0.5 if truth < 100 else 2.0
        assert v["power_uncertainty_w"] == pytest.approx(0.0005 * truth + 0.00015 * 300.0 * i_range, rel=1e-3)
    assert {round(v["power_w"]) for _, v in readings} == {60, 250}
    assert ctx.errors == {}


def test_repeated_replies_are_reported_at_the_end(serve):
    # polled 4 times per 0.1 s refresh: most replies repeat the one before, and the final close
    # says how many (they are kept: a steady load repeats to the last digit as well)
    inst = Hmc8015(Bench(PowerProfile.parse("constant:100")), MeterModel())
    server = serve(inst)
    ctx, _, readings = run_polled(create(SourceSpec("hmc8015", server.resource, "wall", 0.025, {})), 0.5)
    [summary] = [d for n, s, d in ctx.events if n == "repeated_replies"]
    refreshes = len(set(inst.clock.served))
    assert summary["replies"] == len(readings) == len(inst.clock.served)
    # each reply after the first repeats the previous one (constant power, no noise)
    assert summary["repeated"] == len(readings) - 1 and refreshes < len(readings)


def test_fixed_range_overload_is_counted(serve):
    server = serve(Hmc8015(Bench(PowerProfile.parse("constant:250")), MeterModel()))
    src = source(server.resource, ranging="fixed", voltage_range_v=300, current_range_a=0.2)
    ctx = RecordingContext()
    src.open(ctx)
    out = src.read()["wall"]
    src.close()
    assert "CHAN1:ACQ:CURR:RANG 0.2" in server.commands(1) and not inst_auto(server)["current"]
    assert math.isnan(out["power_w"]) and math.isnan(out["current_a"]) and ctx.errors["overload"] == 1


def inst_auto(server) -> dict[str, bool]:
    return server.instrument.auto


def test_wrong_instrument_and_drop_under_recorder(serve):
    bench = Bench(PowerProfile.parse("constant:100"))
    wrong = serve(Hmc8015(bench, MeterModel()), idn="YOKOGAWA,WT310,C2PH13047V,F1.03")
    with pytest.raises(SourceUnavailable, match="WT310"):
        source(wrong.resource).open(RecordingContext())
    server = serve(Hmc8015(bench, MeterModel()), drop_after=3)
    cap = record(source(server.resource, timeout_s=0.3), 1.5)
    names = cap.names()
    assert names.index("gap_start") < names.index("reconnect") < names.index("gap_end")
    assert len(cap.t_ns) >= 5


def test_through_pyvisa_sim():
    src = source("TCPIP::127.0.0.1::5025::SOCKET", backend="sim")
    ctx = RecordingContext()
    src.open(ctx)
    out = src.read()["wall"]
    src.close()
    assert out == pytest.approx({"power_w": 250.31, "voltage_v": 230.12, "current_a": 1.145,
                                 "power_factor": 0.95,
                                 "power_uncertainty_w": 0.0005 * 250.31 + 0.00015 * 600.0})
    assert ctx.errors == {}
