"""The pzem004t driver through its real transport (pyserial on a pty) against the emulator."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from hwval.benchmodel import Bench, MeterModel, PowerProfile
from hwval.emulators.pty import FaultPlan
from hwval.emulators.pzem004t import Pzem004tEmulator
from hwval.sources.base import Disconnected, SourceSpec, SourceUnavailable, TransientError
from hwval.sources.serial import pzem004t_codec as codec
from hwval.sources.serial.pzem004t import create
from hwval.sources.testing import RecordingContext
from test_visa_support import record

PZEM_MODEL = MeterModel(window_s=1.0, quantum_w=0.1)


def source(path, **options):
    return create(SourceSpec("pzem004t", path, "wall", 0.5, options))


@pytest.fixture
def bench():
    return Bench(PowerProfile.parse("constant:123.4"), seed=1)


def test_reads_the_emulated_module_with_identity(bench):
    with Pzem004tEmulator(bench, PZEM_MODEL, address=7, energy_start_wh=38) as emu:
        src = source(emu.path, address=7)
        ctx = RecordingContext(polled=True)
        [info] = src.open(ctx)
        try:
            assert info.identity["modbus_address"] == 7
            assert info.identity["power_alarm_threshold_w"] == 2300
            assert info.key_names() == ("power_w", "energy_j", "voltage_v", "current_a",
                                        "frequency_hz", "power_factor")
            power = {k.name: k for k in info.keys}["power_w"]
            assert (power.semantics, power.window_s) == ("window_mean", 1.0)
            # what is known about the refresh, said plainly (docs/protocols/pzem004t.md)
            assert power.description == ("active power, 0.1 W resolution; the manual states no refresh "
                                         "rate, users observe about one refresh per second")
            reading = src.read()["wall"]
        finally:
            src.close()
    assert reading["power_w"] == pytest.approx(123.4)
    assert reading["voltage_v"] == pytest.approx(230.0)
    assert reading["current_a"] == pytest.approx(round(123.4 / (230 * 0.95), 3))
    assert reading["power_factor"] == pytest.approx(0.95)
    assert reading["frequency_hz"] == pytest.approx(50.0)
    assert reading["energy_j"] == 0.0  # relative to the first reading
    assert not ctx.errors


def test_general_address_reaches_any_module(bench):
    with Pzem004tEmulator(bench, PZEM_MODEL, address=42) as emu:
        src = source(emu.path, address=codec.GENERAL_ADDRESS)
        [info] = src.open(RecordingContext(polled=True))
        try:
            assert info.identity["modbus_address"] == 42
            assert src.read()["wall"]["power_w"] == pytest.approx(123.4)
        finally:
            src.close()


def test_energy_is_relative_and_reset_at_start():
    # 3.6 kW: one Wh every second, so the 1 Wh register moves within the test
    bench = Bench(PowerProfile.parse("constant:3600"))
    with Pzem004tEmulator(bench, PZEM_MODEL, update_s=0.25, energy_start_wh=1000) as emu:
        src = source(emu.path, reset_energy=True)
        t_open = time.monotonic()
        [info] = src.open(RecordingContext(polled=True))
        try:
            assert info.identity["energy_reset_at_start"] is True
            t_first = time.monotonic()
            first = src.read()["wall"]["energy_j"]
            t_first_done = time.monotonic()
            time.sleep(1.3)
            t_later = time.monotonic()
            later = src.read()["wall"]["energy_j"]
            raw = codec.decode_measurement(emu.registers_at(bench.t_s())).energy_wh
            t_end = time.monotonic()
        finally:
            src.close()
    assert first == 0.0
    # 1 Wh/s in whole Wh, refreshed every 0.25 s: the Wh between the two reads follow from when
    # they ran (a loaded machine stretches the 1.3 s sleep, never shortens it)
    least_s, most_s = t_later - 0.25 - t_first_done, t_end - (t_first - 0.25)
    assert later % 3600.0 == 0 and math.floor(least_s) <= later / 3600.0 <= math.ceil(most_s)
    assert later >= 3600.0
    assert raw <= math.ceil(t_end - t_open)  # the reset zeroed the module's 1000 Wh


def test_energy_counter_going_backwards_stays_continuous():
    bench = Bench(PowerProfile.parse("constant:3600"))
    with Pzem004tEmulator(bench, PZEM_MODEL, update_s=0.1, energy_start_wh=5) as emu:
        src = source(emu.path)
        ctx = RecordingContext(polled=True)
        src.open(ctx)
        try:
            src.read()
            time.sleep(1.1)
            before = src.read()["wall"]["energy_j"]
            emu.reset_energy()  # someone else zeroed the counter mid-capture
            time.sleep(1.1)
            after = src.read()["wall"]["energy_j"]
        finally:
            src.close()
    assert before >= 3600.0
    assert after >= before
    assert ctx.errors["energy_counter_reset"] == 1


def test_faults_are_counted_and_retried(bench):
    faults = FaultPlan(garbage_rate=0.3, bad_checksum_rate=0.3, truncate_rate=0.2, seed=4)
    with Pzem004tEmulator(bench, PZEM_MODEL, faults) as emu:
        src = source(emu.path, retries=3, timeout_s=0.15)
        ctx = RecordingContext(polled=True)
        src.open(ctx)
        readings, gaps = [], 0
        try:
            for _ in range(12):
                try:
                    readings.append(src.read()["wall"]["power_w"])
                except TransientError:
                    gaps += 1
        finally:
            src.close()
        injected = emu.injected
    assert readings and all(p == pytest.approx(123.4) for p in readings)
    assert injected["bad_checksum"] and injected["truncate"] and injected["garbage"]
    assert ctx.errors["bad_crc"] >= 1 and ctx.errors["truncated"] >= 1
    assert ctx.errors["garbage"] >= 1
    assert len(readings) + gaps == 12


def test_exception_reply_is_counted_with_its_meaning(bench):
    with Pzem004tEmulator(bench, PZEM_MODEL, exception_rate=1.0, exception_code=4) as emu:
        src = source(emu.path)
        ctx = RecordingContext(polled=True)
        src.open(ctx)  # holding registers still answer
        try:
            with pytest.raises(TransientError, match="slave device failure"):
                src.read()
        finally:
            src.close()
    assert ctx.errors["modbus_exception"] == 1
    assert "slave device failure" in ctx.messages[-1]


def test_emulator_answers_illegal_requests_like_the_module(bench):
    emu = Pzem004tEmulator(bench, PZEM_MODEL)
    req = codec.parse_request(codec.read_registers_request(1, codec.READ_INPUT, 0, 11))
    assert codec.parse_reply(emu.answer(req)) == codec.ExceptionReply(1, codec.READ_INPUT, 2)
    unknown = codec.parse_request(codec.append_crc(bytes((1, 0x11))))
    assert codec.parse_reply(emu.answer(unknown)).code == 1
    other = codec.parse_request(codec.read_measurement_request(9))
    assert emu.answer(other) == b""  # another slave's request: silence
    change = codec.parse_request(codec.write_register_request(1, codec.HOLDING_ADDRESS, 9))
    assert codec.parse_reply(emu.answer(change)) == codec.EchoReply(1, codec.WRITE_SINGLE,
                                                                    bytes((0, 2, 0, 9)))
    assert emu.address == 9


def test_emulator_answers_the_general_address_from_it(bench):
    # a module polled at 0xF8 puts 0xF8 in its reply, not its own address (as Tasmota quotes it)
    emu = Pzem004tEmulator(bench, PZEM_MODEL, address=42)
    general = codec.GENERAL_ADDRESS
    read = emu.answer(codec.parse_request(codec.read_measurement_request(general)))
    assert read[0] == general and codec.match_reply(read, codec.READ_INPUT, general) == len(read)
    assert emu.answer(codec.parse_request(codec.read_measurement_request(42)))[0] == 42
    bad = codec.parse_request(codec.read_registers_request(general, codec.READ_INPUT, 0, 11))
    assert codec.parse_reply(emu.answer(bad)) == codec.ExceptionReply(general, codec.READ_INPUT, 2)
    change = codec.parse_request(codec.write_register_request(general, codec.HOLDING_ADDRESS, 7))
    assert codec.parse_reply(emu.answer(change)) == codec.EchoReply(general, codec.WRITE_SINGLE,
                                                                    bytes((0, 2, 0, 7)))
    assert emu.address == 7


def test_a_module_silent_to_the_optional_holding_read_is_still_recorded(bench):
    # readings need only the measurement read (0x04); 0x03 only says who the module is
    with Pzem004tEmulator(bench, PZEM_MODEL, address=5, holding_registers=False) as emu:
        assert emu.answer(codec.parse_request(codec.read_registers_request(
            5, codec.READ_HOLDING, codec.HOLDING_ALARM_THRESHOLD, 2))) == b""
        src = source(emu.path, address=5, timeout_s=0.2)
        ctx = RecordingContext(polled=True)
        [info] = ctx.open(src)
        try:
            assert info.identity["holding_registers"] == (
                "no answer to the 0x03 read (3 tries); the measurement read 0x04 answers")
            assert "modbus_address" not in info.identity
            readings = [src.read()["wall"] for _ in range(2)]
        finally:
            src.close()
    assert [r["power_w"] for r in readings] == [pytest.approx(123.4)] * 2
    assert ctx.errors == {} and ctx.events == []
    # through the real recorder: a clean capture, no error of any kind
    with Pzem004tEmulator(bench, PZEM_MODEL, holding_registers=False) as emu:
        cap = record(source(emu.path, timeout_s=0.2), 20.0, until=lambda c: len(c.t_ns) >= 4)
    assert len(cap.t_ns) >= 4 and cap.stats["error_counts"] == {}
    assert [e.name for e in cap.events] == []
    assert np.allclose(cap.values["power_w"], 123.4)


def test_wrong_address_is_a_clear_start_error(bench):
    with Pzem004tEmulator(bench, PZEM_MODEL, address=1) as emu:
        src = source(emu.path, address=2, timeout_s=0.1)
        with pytest.raises(SourceUnavailable, match="no reply from PZEM-004T at Modbus address 2"):
            src.open(RecordingContext(polled=True))


def test_wrong_baud_rate_is_named(bench):
    with Pzem004tEmulator(bench, PZEM_MODEL) as emu:
        src = source(emu.path, baudrate=4800, timeout_s=0.1)
        # the module cannot decode a request sent at the wrong speed, so it stays silent
        with pytest.raises(SourceUnavailable, match=r"baudrate=4800 differs .* fixed 9600 \(wrong baud"):
            src.open(RecordingContext(polled=True))


def test_missing_and_busy_ports_are_clear(bench, tmp_path):
    with pytest.raises(SourceUnavailable, match="does not exist"):
        source(str(tmp_path / "ttyUSB9")).open(RecordingContext(polled=True))
    with Pzem004tEmulator(bench, PZEM_MODEL) as emu:
        first = source(emu.path)
        first.open(RecordingContext(polled=True))
        try:
            with pytest.raises(SourceUnavailable, match="busy"):
                source(emu.path).open(RecordingContext(polled=True))
        finally:
            first.close()


def test_unplug_raises_disconnected_and_replug_resumes(bench):
    with Pzem004tEmulator(bench, PZEM_MODEL) as emu:
        src = source(emu.path, timeout_s=0.2)
        ctx = RecordingContext(polled=True)
        src.open(ctx)
        assert src.read()["wall"]["power_w"] == pytest.approx(123.4)
        emu.unplug(0.3)
        with pytest.raises(Disconnected):
            src.read()
        src.close()
        assert emu.plugged.wait(2.0)
        src.open(ctx)  # what the recorder does after Disconnected
        try:
            assert src.read()["wall"]["power_w"] == pytest.approx(123.4)
        finally:
            src.close()


@pytest.mark.parametrize("options, text", [
    ({"address": 0}, "'address' must be a whole number >= 1 and <= 248, got 0"),
    ({"address": 250}, "'address' must be a whole number >= 1 and <= 248, got 250"),
    ({"bogus": 1}, "unknown option 'bogus'"),
    ({"timeout_s": 0.0}, "'timeout_s' must be a number > 0 s, got 0.0"),
    ({"reset_energy": "yes"}, "'reset_energy' must be true or false, got 'yes'"),
])
def test_bad_options_are_named(options, text):
    with pytest.raises(ValueError, match=text):
        create(SourceSpec("pzem004t", "/dev/null", "wall", None, options))


def test_replies_that_never_parse_are_reported_as_a_likely_wrong_baud_rate(bench):
    with Pzem004tEmulator(bench, PZEM_MODEL) as emu:
        # 1 s for a reply of ~30 ms at 9600 baud: a loaded machine's late emulator thread must
        # read as a damaged reply, not as none; a failed exchange waits out timeout_s, so three
        # reads last >= 3 s: past silence_s, whatever the load.
        src = source(emu.path, retries=0, timeout_s=1.0, silence_s=2.0)
        ctx = RecordingContext(polled=True)
        src.open(ctx)
        emu.faults = FaultPlan(bad_checksum_rate=1.0)  # from now on every reply is damaged
        t0 = time.monotonic()
        try:
            for _ in range(3):
                with pytest.raises(TransientError, match="CRC"):
                    src.read()
        finally:
            src.close()
        elapsed_s = time.monotonic() - t0
    assert ctx.errors["bad_crc"] == 3
    # once per silence_s (2 s) of nothing parseable: three reads of >= 1 s each reach it, and a
    # loaded machine stretching them may reach it again
    assert 1 <= ctx.errors["silence"] <= 1 + elapsed_s / 2.0
    assert any("wrong baud rate?" in m and "9600 8N1" in m for m in ctx.messages)
