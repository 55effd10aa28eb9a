"""Byte-fixture and property tests of the PZEM-004T Modbus-RTU codec (pure, no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwval.sources.serial import pzem004t_codec as codec
from hwval.sources.serial.framing import FrameScanner, iter_chunks

#: Checked reply (docs/protocols/pzem004t.md#input-registers) = 225.7 V, 0.108 A, 24.4 W, 38 Wh,
#: 50.0 Hz, PF 1.00.
CHECKED_REPLY = bytes.fromhex("01 04 14 08 D1 00 6C 00 00 00 F4 00 00 00 26 00 00 01 F4 00 64 00 00 51 34")


def test_read_request_is_the_documented_bytes():
    assert codec.read_measurement_request(1) == bytes.fromhex("01 04 00 00 00 0A 70 0D")


def test_reset_request_is_the_documented_bytes():
    assert codec.reset_energy_request(1) == bytes.fromhex("01 42 80 11")


def test_crc_known_values():
    # CRC-16/MODBUS check value for "123456789" is 0x4B37 (the catalogue's check string)
    assert codec.crc16_modbus(b"123456789") == 0x4B37
    assert codec.crc_ok(CHECKED_REPLY)
    assert not codec.crc_ok(CHECKED_REPLY[:-1] + bytes([CHECKED_REPLY[-1] ^ 0x01]))


def test_checked_reply_decodes_to_documented_values():
    assert codec.match_reply(CHECKED_REPLY, codec.READ_INPUT, 1) == 25
    reply = codec.parse_reply(CHECKED_REPLY)
    assert isinstance(reply, codec.RegistersReply)
    m = codec.decode_measurement(reply.registers)
    assert m.voltage_v == pytest.approx(225.7)
    assert m.current_a == pytest.approx(0.108)
    assert m.power_w == pytest.approx(24.4)
    assert m.energy_wh == 38
    assert m.frequency_hz == pytest.approx(50.0)
    assert m.power_factor == pytest.approx(1.00)
    assert m.alarm is False


def test_32bit_values_low_word_first():
    # power 0x0001_86A0 = 100000 -> 10000.0 W: low word 0x86A0 comes first on the wire
    regs = (2300, 0, 0, 0x86A0, 0x0001, 0, 0, 500, 95, 0xFFFF)
    m = codec.decode_measurement(regs)
    assert m.power_w == pytest.approx(10000.0)
    assert m.alarm is True
    assert codec.encode_measurement(m) == regs


def test_exception_reply_is_named():
    frame = codec.exception_reply(1, codec.READ_INPUT, 0x02)
    assert codec.match_reply(frame, codec.READ_INPUT, 1) == 5
    reply = codec.parse_reply(frame)
    assert isinstance(reply, codec.ExceptionReply)
    assert reply.function == codec.READ_INPUT
    assert "illegal data address" in reply.text


def test_reset_echo_matches():
    echo = codec.reset_energy_request(7)
    assert codec.match_reply(echo, codec.RESET_ENERGY, 7) == 4
    assert codec.parse_reply(echo) == codec.EchoReply(7, codec.RESET_ENERGY, b"")


def test_wrong_address_and_function_are_rejected():
    assert codec.match_reply(CHECKED_REPLY, codec.READ_INPUT, 2) == -1
    assert codec.match_reply(CHECKED_REPLY, codec.READ_HOLDING, 1) == -1
    # the general address accepts the module's own address in the reply
    assert codec.match_reply(CHECKED_REPLY, codec.READ_INPUT, codec.GENERAL_ADDRESS) == 25


@pytest.mark.parametrize("cut", [1, 2, 3, 10, 24])
def test_truncated_reply_asks_for_more(cut):
    assert codec.match_reply(CHECKED_REPLY[:cut], codec.READ_INPUT, 1) == 0


def test_bad_crc_is_rejected():
    bad = bytearray(CHECKED_REPLY)
    bad[10] ^= 0x40
    assert codec.match_reply(bytes(bad), codec.READ_INPUT, 1) == -1
    with pytest.raises(ValueError, match="bad CRC"):
        codec.parse_reply(bytes(bad))


def test_scanner_finds_reply_after_garbage_fed_byte_by_byte():
    garbage = bytes.fromhex("00 FF 01 04 99 13 37 01")  # includes a false start "01 04 99"
    scanner = FrameScanner(lambda b: codec.match_reply(b, codec.READ_INPUT, 1))
    frames = []
    for chunk in iter_chunks(garbage + CHECKED_REPLY, 1):
        frames += scanner.feed(chunk)
    assert frames == [CHECKED_REPLY]
    assert scanner.skipped_bytes == len(garbage)


def test_request_matcher_round_trip_and_unknown_function():
    req = codec.read_measurement_request(1)
    assert codec.match_request(req) == 8
    parsed = codec.parse_request(req)
    assert (parsed.address, parsed.function, parsed.start, parsed.count) == (1, 4, 0, 10)
    assert codec.match_request(codec.reset_energy_request(1)) == 4
    unknown = codec.append_crc(bytes((1, 0x11)))  # "report slave id": not implemented by PZEM
    assert codec.match_request(unknown) == 4
    assert codec.match_request(req[:5]) == 0


@pytest.mark.parametrize("address", [0, 248 + 1, 300, -1])
def test_invalid_address_is_a_clear_error(address):
    with pytest.raises(ValueError, match="1..247"):
        codec.check_address(address)


# ------------------------------------------------------------------------------ properties

@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_never_crash_reply_matcher(data):
    for function in (codec.READ_INPUT, codec.READ_HOLDING, codec.RESET_ENERGY):
        n = codec.match_reply(data, function, 1)
        assert n == -1 or 0 <= n <= len(data)
        if n > 0:
            codec.parse_reply(data[:n])  # a matched frame always parses
    scanner = FrameScanner(lambda b: codec.match_reply(b, codec.READ_INPUT, codec.GENERAL_ADDRESS))
    for frame in scanner.feed(data):
        codec.parse_reply(frame)
    n = codec.match_request(data)
    assert n == -1 or 0 <= n <= len(data)


measurements = st.builds(
    codec.Measurement,
    voltage_v=st.integers(0, 0xFFFF).map(lambda x: x / 10),
    current_a=st.integers(0, 0xFFFFFFFF).map(lambda x: x / 1000),
    power_w=st.integers(0, 0xFFFFFFFF).map(lambda x: x / 10),
    energy_wh=st.integers(0, 0xFFFFFFFF),
    frequency_hz=st.integers(0, 0xFFFF).map(lambda x: x / 10),
    power_factor=st.integers(0, 100).map(lambda x: x / 100),
    alarm=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(measurements, st.integers(1, 247), st.binary(max_size=12))
def test_valid_replies_round_trip_through_garbage(m, address, garbage):
    frame = codec.registers_reply(address, codec.READ_INPUT, codec.encode_measurement(m))
    scanner = FrameScanner(lambda b: codec.match_reply(b, codec.READ_INPUT, address))
    frames = scanner.feed(garbage + frame)
    # garbage may by chance contain a CRC-valid frame; the real one is always the last found
    assert frames and frames[-1] == frame
    decoded = codec.decode_measurement(codec.parse_reply(frames[-1]).registers)
    assert decoded == m
