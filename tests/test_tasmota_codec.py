"""Tasmota console codec: documented lines, every log form, garbage, truncation, properties."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from hwval.sources.serial import tasmota_codec as codec

# docs/protocols/tasmota.md: a real console line, and the firmware's ENERGY example
# (xdrv_03_energy.ino)
REAL_LINE = b"10:37:28.549 MQT: stat/tasmota_5A9AE8/RESULT = {\"Command\":\"Unknown\"}"
DOC_ENERGY = ('{"Time":"2018-11-15T08:54:18","ENERGY":{"TotalStartTime":"2018-11-01T00:00:00",'
              '"Total":6.404,"Yesterday":5.340,"Today":1.064,"Period":217,"Power":2629,'
              '"ApparentPower":2645,"ReactivePower":288,"Factor":0.99,"Frequency":50,'
              '"Voltage":226,"Current":11.677}}')


def message(line: bytes) -> codec.Message | None:
    log = codec.parse_log_line(line)
    assert log is not None
    return codec.parse_message(log.text)


def test_real_console_line():
    log = codec.parse_log_line(REAL_LINE)
    assert log == codec.LogLine("10:37:28.549", None, 'MQT: stat/tasmota_5A9AE8/RESULT = {"Command":"Unknown"}')
    m = codec.parse_message(log.text)
    assert (m.kind, m.topic, m.name, m.payload, m.retained) == (
        "MQT", "stat/tasmota_5A9AE8/RESULT", "RESULT", {"Command": "Unknown"}, False)


def test_documented_energy_object_in_si():
    m = message(b"08:54:18.001 MQT: tele/tasmota_5A9AE8/SENSOR = " + DOC_ENERGY.encode())
    assert m.name == "SENSOR"
    values = codec.decode_energy(codec.energy_object(m.payload))
    assert values == {"power_w": 2629.0, "apparent_power_va": 2645.0, "reactive_power_var": 288.0,
                      "power_factor": 0.99, "frequency_hz": 50.0, "voltage_v": 226.0,
                      "current_a": 11.677, "total_kwh": 6.404}


@pytest.mark.parametrize("line, name, heap, retained", [
    (b"12:00:01.250 RSL: STATUS10 = {\"StatusSNS\":{\"ENERGY\":{\"Power\":5}}}", "STATUS10", None, False),
    (b"12:00:01.250-025 RSL: stat/plug/STATUS8 = {\"StatusSNS\":{\"ENERGY\":{\"Power\":5}}}", "STATUS8", 25, False),
    (b"12:00:01 MQTT: stat/sonoff/STATUS8 = {\"StatusPWR\":{\"Power\":5}}", "STATUS8", None, False),
    (b"12:00:01.250 MQT: tele/plug/SENSOR = {\"ENERGY\":{\"Power\":5}} (retained)", "SENSOR", None, True),
])
def test_log_and_topic_forms(line, name, heap, retained):
    log = codec.parse_log_line(line)
    assert log.heap_kb == heap
    m = codec.parse_message(log.text)
    assert (m.name, m.retained) == (name, retained)
    assert codec.decode_energy(codec.energy_object(m.payload)) == {"power_w": 5.0}


def test_echo_and_info_lines_are_not_messages():
    assert message(b"12:00:01.250 CMD: Status 10") is None
    assert message(b"12:00:01.250 WIF: Connected") is None


def test_garbage_is_not_a_log_line():
    assert codec.parse_log_line(b"\xff\xfe\x80garbage") is None
    assert codec.parse_log_line(b"") is None
    assert codec.parse_log_line(b"1:2:3 RSL: X = {}") is None


def test_truncated_or_damaged_json_is_an_error_naming_the_topic():
    with pytest.raises(codec.TasmotaDecodeError, match="malformed JSON in STATUS10"):
        message(b'12:00:01.250 RSL: STATUS10 = {"StatusSNS":{"ENERGY":{"Pow')
    with pytest.raises(codec.TasmotaDecodeError, match="malformed JSON"):
        message(b'12:00:01.250 RSL: STATUS10 = {"StatusSNS":\x01"ENERGY":{}}')


def test_old_status10_has_no_energy_and_statuspwr_has():
    assert codec.energy_object({"StatusSNS": {"Time": "2018-01-01T00:00:00"}}) is None
    old = {"StatusPWR": {"Total": 0.5, "Yesterday": 0, "Today": 0.5, "Power": 12,
                         "Factor": 0.5, "Voltage": 231, "Current": 0.104}}
    assert codec.decode_energy(codec.energy_object(old))["power_w"] == 12.0


def test_multi_channel_arrays():
    energy = {"Total": [1.5, 0.5], "Power": [100, 20], "ApparentPower": [110, 40],
              "Factor": [0.91, 0.5], "Voltage": 230, "Current": [0.478, 0.174]}
    both = codec.decode_energy(energy)
    assert both["power_w"] == 120 and both["current_a"] == pytest.approx(0.652)
    assert both["total_kwh"] == 2.0 and both["power_factor"] == pytest.approx(120 / 150)
    second = codec.decode_energy(energy, channel=2)
    assert (second["power_w"], second["total_kwh"], second["power_factor"]) == (20, 0.5, 0.5)
    with pytest.raises(codec.TasmotaDecodeError, match="channel 3 requested but the plug reports 2"):
        codec.decode_energy(energy, channel=3)


def test_energy_without_power_or_with_bad_types():
    with pytest.raises(codec.TasmotaDecodeError, match="without Power"):
        codec.decode_energy({"Voltage": 230})
    with pytest.raises(codec.TasmotaDecodeError, match="expected a number"):
        codec.decode_energy({"Power": "12"})


def test_firmware_identity():
    payload = {"StatusFWR": {"Version": "13.1.0(tasmota)", "Core": "2_7_4_9", "Boot": 31}}
    assert codec.firmware_identity(payload) == {"version": "13.1.0(tasmota)", "core": "2_7_4_9"}
    assert codec.firmware_identity({"Command": "Unknown"}) == {}


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_crash(data):
    for line in data.split(b"\n"):
        log = codec.parse_log_line(line)
        if log is None:
            continue
        try:
            m = codec.parse_message(log.text)
        except codec.TasmotaDecodeError:
            continue
        if m is not None and codec.energy_object(m.payload) is not None:
            try:
                codec.decode_energy(codec.energy_object(m.payload))
            except codec.TasmotaDecodeError:
                pass  # rejected with a reason: that is the contract


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80))
@settings(max_examples=200, deadline=None)
def test_random_console_text_never_crashes(text):
    line = b"01:02:03.456 RSL: STATUS10 = " + text.encode()
    try:
        m = message(line)
        if m is not None:
            energy = codec.energy_object(m.payload)
            if energy is not None:
                codec.decode_energy(energy)
    except codec.TasmotaDecodeError:
        pass  # rejected with a reason: that is the contract


powers = st.floats(min_value=0, max_value=4000, allow_nan=False)


@given(power=powers, volt=st.floats(min_value=0, max_value=260), total=st.floats(0, 1e5),
       wres=st.integers(0, 3), eres=st.integers(0, 5), vres=st.integers(0, 3),
       clock_s=st.floats(0, 86399.999), heap=st.none() | st.integers(0, 80),
       channels=st.integers(1, 3))
@settings(max_examples=200, deadline=None)
def test_encoded_lines_round_trip(power, volt, total, wres, eres, vres, clock_s, heap, channels):
    res = {"WattRes": wres, "VoltRes": vres, "AmpRes": 3, "EnergyRes": eres}
    multi = (lambda v: [v] * channels) if channels > 1 else (lambda v: v)
    values = {"total_kwh": total, "yesterday_kwh": 1.0, "today_kwh": 0.5, "power_w": multi(power),
              "apparent_power_va": multi(power), "reactive_power_var": multi(0.0),
              "power_factor": multi(1.0), "voltage_v": volt, "current_a": multi(0.1)}
    body = codec.encode_energy(values, res, total_start="2024-01-01T00:00:00")
    payload = '{"StatusSNS":{"Time":"2024-01-01T00:00:00","ENERGY":' + body + "}}"
    line = codec.format_log_line(clock_s, codec.format_message("RSL", "STATUS10", payload), heap)
    assert line.endswith(b"\r\n")
    m = message(line[:-2])
    decoded = codec.decode_energy(codec.energy_object(m.payload), channel=1 if channels > 1 else 0)
    assert decoded["power_w"] == float(f"{power:.{wres}f}")
    assert decoded["voltage_v"] == float(f"{volt:.{vres}f}")
    assert decoded["total_kwh"] == float(f"{total:.{eres}f}")
    assert json.loads(body)["TotalStartTime"] == "2024-01-01T00:00:00"
