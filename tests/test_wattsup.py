"""Watts Up? codec (documented record, packets, garbage, truncation, properties) and the
wattsup driver end to end against its emulator."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from hwval.benchmodel import MeterModel, PowerProfile
from hwval.emulators.pty import FaultPlan
from hwval.emulators.wattsup import WattsUpEmulator
from hwval.sources.base import SourceSpec
from hwval.sources.serial import wattsup_codec as codec
from hwval.sources.serial.wattsup import create

from serial_e2e import MAX_RECEIPT_DELAY_S, RecordingBench, capture, event_names

DOC_RECORD = b"#d,-,18,124,1191,97,0,_,_,_,124,_,_,_,_,_,100,_,_,_,_;"


def packets(data: bytes) -> list:
    return codec.PacketBuffer().feed(data)


def test_documented_record_scaling():
    (text,) = packets(DOC_RECORD)
    values = codec.decode_record(codec.parse_packet(text))
    assert values == pytest.approx({"power_w": 12.4, "voltage_v": 119.1, "current_a": 0.097,
                                    "energy_j": 0.0, "power_factor": 1.0})


def test_banner_outside_packets_is_ignored_and_whitespace_inside_is_dropped():
    buf = codec.PacketBuffer()
    out = buf.feed(b"WattsUp.NET $ Version: 3.23 $ 200712212301 60Hz 120V\r\n#h,-,2,\r\nW,\tV;")
    assert out == ["h,-,2,W,V"]
    assert b"Version: 3.23" in bytes(buf.outside)


def test_truncation_garbage_and_bad_fields():
    assert packets(b"#d,-,18,12" + DOC_RECORD) == [None, DOC_RECORD[1:-1].decode()]
    assert packets(b"\x00\xffnoise" + DOC_RECORD)[0] == DOC_RECORD[1:-1].decode()
    with pytest.raises(codec.WattsupDecodeError, match="announces 18 fields, has 17"):
        codec.parse_packet("d,-,18," + ",".join(["1"] * 17))
    with pytest.raises(codec.WattsupDecodeError, match="W='x24' is not an integer"):
        codec.decode_record(codec.parse_packet(DOC_RECORD[1:-1].decode().replace("124", "x24", 1)))
    with pytest.raises(codec.WattsupDecodeError, match="fewer than 3 fields"):
        codec.parse_packet("d,-")


def test_frequency_field_is_read_under_either_spelling():
    # captured meters' headers name it "Hz", the protocol's record description "<HZ>"
    record = codec.parse_packet(codec.encode_record(100.0, 120.0, 0.9, 1.0, 0.93, frequency_hz=60.0)[1:-1].decode())
    assert "Hz" in codec.HEADER_FIELDS and "HZ" not in codec.HEADER_FIELDS
    for spelling in ("Hz", "HZ", "hz"):
        header = tuple(spelling if f == "Hz" else f for f in codec.HEADER_FIELDS)
        assert codec.decode_record(record, header)["frequency_hz"] == pytest.approx(60.0)


def test_version_answer():
    packet = codec.parse_packet("v,-,8,3,131072,1,2,3,23,200712212301,42")
    assert codec.decode_version(packet)["fw_timestamp"] == "200712212301"
    assert codec.encode_logging_command(2) == b"#L,W,3,E,,2;"


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_crash(data):
    for text in codec.PacketBuffer().feed(data):
        if text is None:
            continue
        try:
            packet = codec.parse_packet(text)
            if packet.command == "d":
                codec.decode_record(packet)
        except codec.WattsupDecodeError:
            pass  # rejected with a reason: that is the contract


@given(power=st.floats(0, 1800), volt=st.floats(90, 260), energy_wh=st.floats(0, 1e5),
       pf=st.floats(0, 1), chunk=st.integers(1, 20))
@settings(max_examples=200, deadline=None)
def test_records_round_trip_in_any_chunking(power, volt, energy_wh, pf, chunk):
    frame = codec.encode_record(power, volt, power / volt, energy_wh, pf, 60.0, power)
    buf = codec.PacketBuffer()
    texts = [t for i in range(0, len(frame), chunk) for t in buf.feed(frame[i:i + chunk])]
    (text,) = texts
    values = codec.decode_record(codec.parse_packet(text))
    assert values["power_w"] == pytest.approx(round(power * 10) / 10)
    assert values["energy_j"] == pytest.approx(round(energy_wh * 10) / 10 * 3600)
    assert values["power_factor"] == pytest.approx(round(pf * 100) / 100)


def test_period_s_is_the_logging_interval_in_whole_seconds():
    def source(period_s=None, **options):
        return create(SourceSpec("wattsup", "/dev/null", "wall", period_s, options))

    assert source().interval_s == 1
    assert source(3.0).interval_s == 3 and source(3.0).period_s == 3.0
    assert source(3.0, interval_s=2).interval_s == 2  # the explicit option wins
    with pytest.raises(ValueError, match="period_s must be whole seconds"):
        source(0.5)
    with pytest.raises(ValueError, match="'interval_s' must be a whole number >= 1"):
        source(interval_s=0)


def test_capture_matches_truth_through_faults_stall_and_unplug(tmp_path):
    bench = RecordingBench(PowerProfile.parse("steps"))
    model = MeterModel(window_s=1.0)
    faults = FaultPlan(garbage_rate=0.3, truncate_rate=0.15, bad_checksum_rate=0.15,
                       stall_at_s=2.5, stall_s=2.2, disconnect_at_s=5.5, disconnect_s=0.3, seed=2)
    with WattsUpEmulator(bench, model, faults) as emu:
        c = capture(f"wattsup:{emu.path}?name=wall&interval_s=1&stale_s=1.5",
                    str(tmp_path / "w.h5"), 9.0, bench, emulator=emu)
        injected = dict(emu.injected)
    assert c.returncode == 0, c.stderr
    identity = c.attrs["identity"]
    assert "200712212301" in identity
    power, t = c.data["power_w"], c.bench_t_s
    assert len(power) >= 4
    # A record is the mean over the second before the meter sent it, in tenths of a watt. It
    # reaches the capture a little later; across a step edge that mean moves by up to 130 W/s,
    # so compare it with the truth at the instant the meter computed it: exact to 0.05 W.
    for t_recv, p in zip(t, power):
        t_sent, _ = bench.computed_before(t_recv)
        assert 0.0 <= t_recv - t_sent < MAX_RECEIPT_DELAY_S, (t_recv, t_sent)
        truth = model.true_mean_w(bench.profile, t_sent)
        assert abs(p - truth) <= 0.05 + 1e-9, (t_recv, p, truth)
    counted = c.error_counts.get("truncated", 0) + c.error_counts.get("bad_packet", 0)
    assert counted <= injected.get("truncate", 0) + injected.get("bad_checksum", 0)
    assert {"gap_start", "gap_end", "reconnect"} <= set(event_names(c))
    assert (t > emu.fault_origin_s + 6.0).sum() >= 1  # logging restarted after the re-plug
    # the frequency comes through the "Hz" field of the emulator's header (as a meter names it)
    assert c.data["frequency_hz"] == pytest.approx(60.0)
