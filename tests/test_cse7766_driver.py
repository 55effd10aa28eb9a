"""The cse7766 driver through its real transport (pyserial on a pty) against the emulator."""

from __future__ import annotations

import threading

import pytest

from hwval.benchmodel import Bench, MeterModel, PowerProfile
from hwval.emulators.cse7766 import I_PARAM, P_PARAM, V_PARAM, Cse7766Emulator
from hwval.emulators.pty import FaultPlan
from hwval.emulators.pzem004t import Pzem004tEmulator
from hwval.sources.base import Disconnected, SourceSpec, SourceUnavailable, TransientError
from hwval.sources.serial import cse7766_codec as codec
from hwval.sources.serial.cse7766 import create
from hwval.sources.serial.pzem004t import create as create_pzem
from hwval.sources.testing import RecordingContext, run_streaming
from plain_meter import PlainMeter

CSE_MODEL = MeterModel(window_s=0.1)
JOULES_PER_PULSE = P_PARAM * 1e-6


def source(path, **options):
    return create(SourceSpec("cse7766", path, "plug", None, options))


def run_for(src, ctx, seconds):
    """Run the streaming source on its thread for ``seconds``; return what escaped run().
    The driver reports only readings and counted errors: gaps are the recorder's."""
    escaped = run_streaming(src, ctx, seconds, stop_timeout_s=5.0)
    assert ctx.events == [], "the recorder records gaps, not the driver"
    assert {stream for stream, _ in ctx.error_streams} <= {"plug"}
    assert {stream for _, stream, _ in ctx.readings} <= {"plug"}
    return escaped


def test_streams_power_voltage_and_energy_through_a_16bit_wrap():
    bench = Bench(PowerProfile.parse("constant:250"))
    with Cse7766Emulator(bench, CSE_MODEL, cf_start=0xFFE0) as emu:
        src = source(emu.path)
        ctx = RecordingContext()
        [info] = src.open(ctx)
        try:
            assert info.identity["p_param"] == P_PARAM
            assert {k.name: k.semantics for k in info.keys}["power_w"] == "window_mean"
            assert run_for(src, ctx, 1.5) == []
        finally:
            src.close()
    assert len(ctx.rows()) >= 8
    for _, values in ctx.rows():
        assert values["power_w"] == pytest.approx(250.0, abs=250.0 ** 2 / P_PARAM)
        assert values["voltage_v"] == pytest.approx(230.0, abs=230.0 ** 2 / 194400)
        assert values["current_a"] == pytest.approx(250 / (230 * 0.95), rel=1e-4)
    (t0, first), (t1, last) = ctx.rows()[0], ctx.rows()[-1]
    assert first["energy_j"] == 0.0
    truth = bench.true_energy_j(t0, t1)
    # 250 W for > 1 s is > 45 pulses: the counter wrapped from 0xFFE0; one pulse of
    # quantisation at each end plus receipt jitter of the two frames
    assert truth / JOULES_PER_PULSE > 0x20
    assert last["energy_j"] == pytest.approx(truth, abs=2 * JOULES_PER_PULSE + 250 * 0.03)
    assert not ctx.errors


def chip_frame(cf_pulses: int = 0, p_valid: bool = True, power_w: float = 100.0) -> bytes:
    """One frame of a calibrated chip at 230 V and ``power_w`` (the emulator's coefficients);
    ``p_valid`` False: a frame without a new power value (the chip's adj bit 4 clear)."""
    adj = codec.ADJ_V_VALID | codec.ADJ_I_VALID | (codec.ADJ_P_VALID if p_valid else 0)
    return codec.encode_frame(codec.Frame(
        state=codec.STATE_OK, v_param=V_PARAM, v_cycle=codec.cycle_for(V_PARAM, 230.0),
        i_param=I_PARAM, i_cycle=codec.cycle_for(I_PARAM, power_w / 230.0), p_param=P_PARAM,
        p_cycle=codec.cycle_for(P_PARAM, power_w), adj=adj, cf_pulses=cf_pulses))


def test_energy_is_zero_at_the_first_emitted_reading_whatever_frames_came_before():
    # frames without a new power value (emitted by no reading) arrive first, and the CF counter
    # moves before the first one that is emitted: that one must read 0 J, not the pulses before
    # it (it was 10.7 J = 2 pulses in a dry run on a loaded machine)
    opened = threading.Event()
    sent: list[int] = []

    def frames() -> bytes:
        if not opened.is_set():
            return chip_frame(cf_pulses=100, p_valid=False)
        sent.append(0)
        return chip_frame(cf_pulses=102 if len(sent) <= 5 else 105)

    with PlainMeter(None, stream=frames, period_s=0.05) as meter:
        src = source(meter.pts)
        ctx = RecordingContext()
        src.open(ctx)
        opened.set()
        try:
            assert run_for(src, ctx, 1.0) == []
        finally:
            src.close()
    energies = [values["energy_j"] for _, values in ctx.rows()]
    assert len(sent) > 5 and len(energies) > 5
    assert energies[0] == 0.0
    # the counting still starts from the first frame seen: 102 -> 105 is 3 pulses
    assert energies[-1] == pytest.approx(3 * JOULES_PER_PULSE)
    assert not ctx.errors


def test_low_load_emits_only_frames_with_a_power_update():
    bench = Bench(PowerProfile.parse("constant:20"))  # CF period 0.27 s: every 3rd frame
    with Cse7766Emulator(bench, CSE_MODEL) as emu:
        src = source(emu.path)
        ctx = RecordingContext()
        src.open(ctx)
        try:
            run_for(src, ctx, 1.5)
        finally:
            src.close()
        frames = emu.injected["frames"]
    assert 3 <= len(ctx.rows()) <= frames // 2
    assert all(v["power_w"] == pytest.approx(20.0, abs=0.001) for _, v in ctx.rows())


def test_no_load_overflow_is_zero_watts_and_uncalibrated_chip_is_counted():
    bench = Bench(PowerProfile.parse("constant:0"))
    with Cse7766Emulator(bench, CSE_MODEL) as emu:
        src = source(emu.path)
        ctx = RecordingContext()
        src.open(ctx)
        try:
            run_for(src, ctx, 0.5)
        finally:
            src.close()
    assert ctx.rows() and all(v["power_w"] == 0.0 for _, v in ctx.rows())
    bench = Bench(PowerProfile.parse("constant:100"))
    with Cse7766Emulator(bench, CSE_MODEL, uncalibrated=True) as emu:
        src = source(emu.path)
        ctx = RecordingContext()
        [info] = src.open(ctx)
        try:
            run_for(src, ctx, 0.5)
        finally:
            src.close()
    assert info.identity["state"] == "not calibrated"
    assert ctx.rows() and all(v["power_w"] == pytest.approx(100.0, abs=0.01) for _, v in ctx.rows())
    assert ctx.errors["not_calibrated"] >= 1


def test_gains_apply_the_operators_calibration():
    bench = Bench(PowerProfile.parse("constant:100"))
    with Cse7766Emulator(bench, CSE_MODEL) as emu:
        src = source(emu.path, power_gain=1.02, voltage_gain=0.99, current_gain=1.1)
        ctx = RecordingContext()
        src.open(ctx)
        try:
            run_for(src, ctx, 0.4)
        finally:
            src.close()
    _, values = ctx.rows()[-1]
    assert values["power_w"] == pytest.approx(102.0, abs=0.01)
    assert values["voltage_v"] == pytest.approx(230.0 * 0.99, abs=0.3)
    assert values["current_a"] == pytest.approx(1.1 * 100 / (230 * 0.95), rel=1e-3)


def test_faults_are_counted_and_frames_resynchronised():
    bench = Bench(PowerProfile.parse("constant:150"))
    faults = FaultPlan(garbage_rate=0.3, bad_checksum_rate=0.2, truncate_rate=0.2, seed=11)
    with Cse7766Emulator(bench, CSE_MODEL, faults) as emu:
        src = source(emu.path)
        ctx = RecordingContext()
        src.open(ctx)
        try:
            assert run_for(src, ctx, 2.0) == []
        finally:
            src.close()
        injected = emu.injected
    assert injected["bad_checksum"] and injected["truncate"] and injected["garbage"]
    assert ctx.errors["bad_checksum"] >= 1
    assert ctx.errors["truncated"] + ctx.errors["garbage"] >= 1
    # every frame that survived gave an exact reading; damaged ones gave none
    assert all(v["power_w"] == pytest.approx(150.0, abs=0.01) for _, v in ctx.rows())
    assert len(ctx.rows()) <= injected["frames"] - injected["bad_checksum"] - injected["truncate"]


def test_abnormal_frames_are_counted_not_emitted():
    bench = Bench(PowerProfile.parse("constant:100"))
    good = codec.Frame(codec.STATE_OK, 194400, 845, 16400, 35852, P_PARAM, 53510,
                       codec.ADJ_V_VALID | codec.ADJ_I_VALID | codec.ADJ_P_VALID, 10)
    abnormal = codec.Frame(**{**good.__dict__, "state": 0xF4})  # current cycle overflow
    with Cse7766Emulator(bench, CSE_MODEL, frame_period_s=30.0) as emu:  # silent emulator
        src = source(emu.path, open_timeout_s=1.0)
        ctx = RecordingContext()
        # what a real chip sends, byte-exact, once the port is open (open flushes old input)
        threading.Timer(0.2, emu.write_raw, args=(codec.encode_frame(good),)).start()
        src.open(ctx)
        try:
            emu.write_raw(codec.encode_frame(abnormal) + codec.encode_frame(good))
            run_for(src, ctx, 0.4)
        finally:
            src.close()
    assert [v["power_w"] for _, v in ctx.rows()] == [pytest.approx(100.0)] * 2
    assert ctx.errors["abnormal_state"] == 1
    assert "current cycle overflow" in ctx.messages[0]


def test_stall_becomes_a_transient_error_naming_the_cause():
    bench = Bench(PowerProfile.parse("constant:100"))
    with Cse7766Emulator(bench, CSE_MODEL, FaultPlan(stall_at_s=0.0, stall_s=60.0)) as emu:
        src = source(emu.path, silence_s=0.4)
        ctx = RecordingContext()
        checked = bytes.fromhex("55 5A 02 F7 60 00 03 5A 00 40 10 04 8B 9F 51 A6 58 18 72 75 61 AC A1 30")
        threading.Timer(0.2, emu.write_raw, args=(checked,)).start()  # one frame, then silence
        src.open(ctx)
        try:
            escaped = run_for(src, ctx, 2.0)
        finally:
            src.close()
    assert len(escaped) == 1 and isinstance(escaped[0], TransientError)
    assert "no bytes at all" in str(escaped[0])
    assert ctx.errors["silence"] == 1


def test_wrong_baud_rate_is_named():
    bench = Bench(PowerProfile.parse("constant:100"))
    with Cse7766Emulator(bench, CSE_MODEL) as emu:
        src = source(emu.path, baudrate=9600, open_timeout_s=0.6)
        with pytest.raises(SourceUnavailable, match=r"wrong baud rate\?.*expected 9600 8E1.*bytes arrived"):
            src.open(RecordingContext())


def test_wrong_device_on_the_port_is_named():
    bench = Bench(PowerProfile.parse("constant:100"))
    # a PZEM only answers requests: a CSE7766 reader hears nothing
    with Pzem004tEmulator(bench, MeterModel()) as emu:
        with pytest.raises(SourceUnavailable, match=r"no CSE7766 frame .*\(no bytes at all"):
            source(emu.path, open_timeout_s=0.4).open(RecordingContext())
    # a CSE7766 streams frames at 4800: a PZEM reader at 9600 gets garbage, never a reply
    with Cse7766Emulator(bench, CSE_MODEL) as emu:
        pzem = create_pzem(SourceSpec("pzem004t", emu.path, "wall", None, {"timeout_s": 0.15}))
        with pytest.raises(SourceUnavailable, match="wrong baud rate\\? bytes arrive"):
            pzem.open(RecordingContext())


def test_missing_port_is_clear(tmp_path):
    with pytest.raises(SourceUnavailable, match="does not exist"):
        source(str(tmp_path / "ttyUSB3")).open(RecordingContext())


def test_unplug_raises_disconnected_and_energy_continues_after_replug():
    bench = Bench(PowerProfile.parse("constant:200"))
    with Cse7766Emulator(bench, CSE_MODEL) as emu:
        src = source(emu.path)
        ctx = RecordingContext()
        src.open(ctx)
        threading.Timer(0.5, emu.unplug, args=(0.5,)).start()
        escaped = run_for(src, ctx, 3.0)
        assert len(escaped) == 1 and isinstance(escaped[0], Disconnected)
        src.close()
        before = len(ctx.rows())
        assert emu.plugged.wait(2.0)
        ctx.stop.clear()
        src.open(ctx)
        try:
            run_for(src, ctx, 0.5)
        finally:
            src.close()
    assert len(ctx.rows()) > before
    (t0, _), (t1, last) = ctx.rows()[0], ctx.rows()[-1]
    # the pulses counted while unplugged (0.5 s at 200 W: 100 J) are kept; the margin is the
    # receipt delay of the first and last frame, up to 0.2 s each way on a loaded machine
    # (19 J seen at load 12), far below the 100 J a lost unplug would cost
    assert last["energy_j"] == pytest.approx(bench.true_energy_j(t0, t1),
                                             abs=2 * JOULES_PER_PULSE + 200 * 0.2)


@pytest.mark.parametrize("options, text", [
    ({"power_gain": 0.0}, "power_gain"),
    ({"zero_after_invalid": 0}, "zero_after_invalid"),
    ({"address": 1}, "unknown option 'address'"),
])
def test_bad_options_are_named(options, text):
    with pytest.raises(ValueError, match=text):
        create(SourceSpec("cse7766", "/dev/null", "plug", None, options))
