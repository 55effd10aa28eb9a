"""The wt300 driver through pyvisa-py over TCP to the WT310 emulator (in-process server)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from hwval.benchmodel import Bench, MeterModel, PowerProfile
from hwval.emulators.wt300 import Wt300
from hwval.sources.base import SourceSpec, SourceUnavailable
from hwval.sources.visa.profile import profile_dir
from hwval.sources.visa.wt300 import create
from test_visa_support import RecordingContext, poll, record, run_polled, serve  # noqa: F401  (fixture)

SETUP = ["*CLS", ":STAT:QMES ON", ":COMM:HEAD OFF", ":COMM:VERB ON", ":SYST:COMM:COMM WT300",
         ":NUM:FORM ASCII"]


#: The WT310 profile's accuracy (IM WT310-02EN §7.3.2): ±(0.1 % of reading + 0.1 % of range).
PCT_READING, PCT_RANGE = 0.1, 0.1


def instrument(profile: str = "steps:60@0.5,250@0.5", model: MeterModel | None = None, **kw) -> Wt300:
    return Wt300(Bench(PowerProfile.parse(profile)), model or MeterModel(), **kw)


def source(resource: str, **options):
    return create(SourceSpec("wt300", resource, "wall", None, {"update_s": 0.1, **options}))


def test_setup_sequence_is_sent_in_order(serve):
    inst = instrument()
    server = serve(inst)
    # a generous reply timeout: the in-process server thread can be starved for seconds on a
    # loaded machine, and this test is about the order of the setup, not the timeout
    src = source(server.resource, ranging="fixed", voltage_range_v=300, current_range_a=2.0, integrate=True,
                 timeout_s=10.0)
    ctx = RecordingContext()
    info = src.open(ctx)[0]
    ctx.stop.set()
    src.close()
    expected = [
        "*IDN?", *SETUP, ":NUM:NORM:NUM 4", ":NUM:NORM:ITEM1 U,1", ":NUM:NORM:ITEM2 I,1",
        ":NUM:NORM:ITEM3 P,1", ":NUM:NORM:ITEM4 WH,1", ":STAT:ERR?", ":SAMP:RATE 0.1", ":STAT:ERR?",
        ":INP:VOLT:RANG 300", ":INP:CURR:RANG 2", ":INTEG:MODE NORM", ":INTEG:TIM 0,0,0", ":INTEG:RES",
        ":INTEG:STAR", ":INTEG:STAT?", ":STAT:FILT1 FALL", ":STAT:EESR?", ":STAT:ERR?"]
    assert server.commands(1)[:len(expected)] == expected
    assert inst.clock.interval_s == 0.1 and not inst.voltage_auto and inst.current_range_a == 2.0
    assert info.identity["idn"] == "YOKOGAWA,WT310,HWVAL-EMULATOR,F1.03" and info.period_s == 0.1
    assert info.emulated  # from the identity, not the address
    power = next(k for k in info.keys if k.name == "power_w")
    assert (power.semantics, power.window_s) == ("window_mean", 0.1)
    assert ctx.errors == {}


def test_rate_falls_back_to_rate_header(serve):
    server = serve(instrument(rate_headers="rate"))
    src = source(server.resource)
    src.open(RecordingContext())
    src.close()
    cmds = server.commands(1)
    i = cmds.index(":SAMP:RATE 0.1")
    assert cmds[i + 1: i + 4] == [":STAT:ERR?", ":STAT:ERR?", ":RATE 0.1"]
    assert server.instrument.clock.interval_s == 0.1


def test_each_update_is_read_once_and_decoded(serve):
    # a little noise makes every update's reply unique, so a value read twice would show
    inst = instrument(model=MeterModel(noise_w=0.05))
    server = serve(inst)
    # polled until 11 updates are in, not for a fixed time: beside two busy loops the in-process
    # server thread was once starved so long that 1.5 s of polling saw only 9 (CI, 2026-12-07)
    ctx, _, readings = run_polled(source(server.resource), 30.0, min_readings=11)
    served = inst.clock.served
    # an update that completes between :STAT:EESR? and :NUM:NORM:VAL? is served again at the
    # next poll (the driver cannot know before asking) and must then be dropped, not recorded
    updates = sorted(set(served))
    assert all(b >= a for a, b in zip(served, served[1:]))
    assert len(readings) == len(updates) >= 11, (served, len(readings))
    assert sum(b - a - 1 for a, b in zip(updates, updates[1:])) <= 1  # none (or one, under load) missed
    for index, (_, values) in zip(updates, readings):
        truth = inst.power_w(index)  # mean true power over that update interval (+ its noise)
        assert values["power_w"] == pytest.approx(truth, rel=1e-4)
        assert values["voltage_v"] == pytest.approx(230.0)
        assert values["current_a"] == pytest.approx(truth / (230.0 * 0.95), rel=1e-3)
        v_range, i_range = (300.0, 0.5) if truth < 100 else (300.0, 2.0)
        assert values["power_uncertainty_w"] == pytest.approx(
            PCT_READING / 100 * truth + PCT_RANGE / 100 * v_range * i_range, rel=1e-3)
    powers = {round(v["power_w"]) for _, v in readings}
    assert powers == {60, 250}
    assert ctx.errors == {}


def test_update_flag_follows_the_transition_filter():
    """UPD is high while the data are being updated: its rising edge comes before the new values
    are readable, its falling edge when they are (so the driver waits on FALL)."""
    from hwval.emulators.scpi_server import parse_message

    inst = instrument()
    inst.clock = type(inst.clock)(0.5)

    def ask(text: str) -> str | None:
        return inst.execute(parse_message(text)[0])[0]

    # The bench clock held at t_s seconds (not t0 moved on the running clock: 5 ms of a loaded
    # machine between two asks crossed the 1.0 s update and flipped the flag)
    held = {"t_s": 0.0}
    inst.bench.t_s = lambda t_ns=None: held["t_s"]

    def at(t_s: float) -> None:
        held["t_s"] = t_s

    at(0.9)
    assert ask(":STAT:FILT1?") == "NEVER"
    ask(":STAT:EESR?")
    at(0.995)  # 5 ms before the update at 1.0 s: UPD has risen, the values are the old ones
    assert ask(":STAT:EESR?") == "0"
    ask(":STAT:FILT1 RISE")
    at(0.9)
    ask(":STAT:EESR?")
    at(0.995)
    assert ask(":STAT:EESR?") == "1" and inst.clock.index(inst.bench.t_s()) == 1  # flagged, not readable
    ask(":STAT:FILT1 FALL")
    assert ask(":STAT:EESR?") == "0"
    at(1.001)
    assert ask(":STAT:EESR?") == "1" and inst.clock.index(inst.bench.t_s()) == 2  # flagged and readable
    assert ask(":STAT:EESR?") == "0"  # reading clears it
    ask(":STAT:FILT1 BOGUS")
    assert inst.errors == [(-224, "Illegal parameter value")]


def test_integration_energy_equals_true_energy_within_spec(serve):
    inst = instrument()
    server = serve(inst)
    ctx, _, readings = run_polled(source(server.resource, integrate=True), 1.2)
    [event] = [d for n, s, d in ctx.events if n == "integration"]
    start_s, stop_s = inst.integrations[-1]
    truth_j = inst.bench.profile.energy_j(start_s, stop_s)
    duration_s = stop_s - start_s
    # spec: 0.1 % of reading + 0.1 % of the (300 V x 2 A) range, over the integration time
    assert event["energy_j"] == pytest.approx(
        truth_j, abs=PCT_READING / 100 * truth_j + PCT_RANGE / 100 * 600.0 * duration_s)
    # the driver's own start/stop stamps bracket the instrument's to within a few ms
    host_truth = inst.bench.true_energy_j(event["started_ns"], event["stopped_ns"])
    assert event["energy_j"] == pytest.approx(host_truth, abs=250.0 * event["time_uncertainty_s"] + 0.5)
    energy = np.array([v["energy_j"] for _, v in readings])
    assert energy[0] == 0.0 and np.all(np.diff(energy) > 0)
    assert server.commands(1)[-8:].count(":INTEG:STOP") == 1


def test_ranging_pass_fixes_ranges_from_maxima(serve):
    inst = instrument("steps:60@0.3,250@0.3")
    server = serve(inst)
    src = source(server.resource, ranging="pass", ranging_s=0.7, integrate=True)
    ctx = RecordingContext()
    src.open(ctx)
    assert ":INTEG:STAR" not in server.commands(1)  # integration waits for the fixed ranges
    poll(src, ctx, 1.0)
    ctx.stop.set()
    src.close()
    phases = [d for n, _, d in ctx.events if n == "ranging"]
    assert [p["phase"] for p in phases] == ["start", "fixed"]
    fixed = phases[1]
    # max current 250 W / (230 V x 0.95) = 1.144 A; x 1.1 = 1.26 A -> 2 A range; 230 V -> 300 V
    assert fixed["max_current_a"] == pytest.approx(1.144, rel=1e-3)
    assert (fixed["voltage_range_v"], fixed["current_range_a"]) == (300.0, 2.0)
    cmds = server.commands(1)
    assert cmds.index(":INP:CURR:RANG 2") < cmds.index(":INTEG:STAR")
    assert not inst.voltage_auto and not inst.current_auto and inst.current_range_a == 2.0
    assert any(n == "integration" for n, _, _ in ctx.events)


def test_overload_becomes_nan_counted_and_error_queue_read(serve):
    inst = instrument("constant:250")
    server = serve(inst)
    ctx, _, readings = run_polled(source(server.resource, ranging="fixed", voltage_range_v=300,
                                         current_range_a=0.5), 0.5)
    assert readings and all(math.isnan(v["power_w"]) and math.isnan(v["current_a"]) for _, v in readings)
    assert all(v["voltage_v"] == pytest.approx(230.0) for _, v in readings)
    assert ctx.errors["overload"] == len(readings)
    cmds = server.commands(1)
    after = cmds[cmds.index(":NUM:NORM:VAL?") + 1]
    assert after == ":STAT:ERR?"


def test_instrument_errors_surface_with_scpi_message(serve, tmp_path):
    text = (profile_dir() / "wt310.toml").read_text().replace('":NUM:FORM ASCII"]', '":NUM:FORM ASCII", ":SYST:BOGUS 1"]')
    profile = tmp_path / "wt310-bogus.toml"
    profile.write_text(text)
    server = serve(instrument())
    src = source(server.resource, profile=str(profile))
    ctx = RecordingContext()
    src.open(ctx)
    src.close()
    assert ctx.errors == {"scpi_-113": 1}
    assert 'instrument error -113,"Undefined header" after setup' in ctx.messages[0]


def test_wrong_instrument_is_a_clear_error(serve):
    server = serve(instrument(), idn="Rohde&Schwarz,HMC8015,021123456,01.400")
    with pytest.raises(SourceUnavailable, match=r"HMC8015.*right instrument"):
        source(server.resource).open(RecordingContext())


def test_nobody_listening_names_the_resource():
    with pytest.raises(SourceUnavailable, match=r"TCPIP::127.0.0.1::1::SOCKET.*hwval emulate wt300"):
        source("TCPIP::127.0.0.1::1::SOCKET", timeout_s=0.5).open(RecordingContext())


def test_update_interval_must_be_the_instruments(serve):
    server = serve(instrument())
    with pytest.raises(SourceUnavailable, match=r"update_s=0.3 is not one of .*0.1, 0.25"):
        source(server.resource, update_s=0.3).open(RecordingContext())


# -- faults, under the real recorder ---------------------------------------------------------------

def readings_after_gap_end(n: int):
    """``until`` for :func:`record`: a gap has ended and ``n`` readings came after it."""
    def done(cap) -> bool:
        ends = [cap.origin_ns + e.t * 1e9 for e in cap.events if e.name == "gap_end"]
        return bool(ends) and int(np.count_nonzero(cap.t_ns > ends[0])) >= n
    return done


@pytest.mark.parametrize("fault", [{"drop_after": 4}, {"stall_after": 4}])
def test_connection_drop_and_timeout_become_gap_and_reconnect(serve, fault):
    inst = instrument("constant:100")
    server = serve(inst, **fault)
    # 1 s reply timeout: a loaded machine may hold the emulator's thread back for a good part
    # of a second, and every query of the reopen uses it too. Recorded until the gap has closed
    # and readings followed it, however long the machine takes (at most 20 s).
    cap = record(source(server.resource, timeout_s=1.0), 20.0, until=readings_after_gap_end(4))
    names = cap.names()
    assert "gap_start" in names and "reconnect" in names and "gap_end" in names
    assert names.index("gap_start") < names.index("reconnect") < names.index("gap_end")
    gap_start = next(e for e in cap.events if e.name == "gap_start")
    assert server.resource in gap_start.detail["reason"]
    assert server._connections == 2
    # data before and after the gap, and all of it decoded
    assert len(cap.t_ns) >= 8 and np.allclose(cap.values["power_w"], 100.0)


def test_malformed_replies_are_counted_not_fatal(serve):
    inst = instrument("constant:100")
    server = serve(inst, malformed_every=3)
    cap = record(source(server.resource), 1.3)
    assert cap.stats["error_counts"]["malformed"] >= 2
    assert len(cap.t_ns) >= 6 and np.allclose(cap.values["power_w"], 100.0)
    assert server._connections == 1


def test_integrator_lost_across_a_reconnect_is_restarted_and_energy_keeps_counting(serve):
    inst = instrument("constant:100")
    server = serve(inst)

    def power_cycle_then_drop(elapsed_s: float) -> None:
        if 0.6 <= elapsed_s and inst.integ_state == "START" and len(inst.integrations) == 1:
            # the instrument lost its integrator (power cycle), then the link drops
            inst.integ_state, inst.integ_done_j, inst.integ_start_s = "RESET", 0.0, None
            server.faults.drop_after = server._data_answered

    cap = record(source(server.resource, integrate=True, timeout_s=1.0), 20.0, during=power_cycle_then_drop,
                 until=readings_after_gap_end(6))
    names = cap.names()
    assert names.index("gap_start") < names.index("reconnect") < names.index("gap_end")
    restarted = [e for e in cap.events if e.name == "error" and e.detail.get("kind") == "integration_restarted"]
    assert len(restarted) == 1 and len(inst.integrations) == 2
    energy = cap.values["energy_j"]
    energy = energy[np.isfinite(energy)]
    # one cumulative counter: never falls back to 0 after the restart
    assert energy[0] == 0.0 and np.all(np.diff(energy) >= 0) and energy[-1] > 100.0 * 0.6
    [integ] = [e for e in cap.events if e.name == "integration"]
    assert integ.detail["earlier_runs_j"] > 0.0
