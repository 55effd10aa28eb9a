"""The tasmota driver through its real transport (pyserial on a pty) against the emulator:
in-process for the device loop, and ``hwval capture`` end to end with faults."""

from __future__ import annotations

import os
import tempfile
import threading
import time

import numpy as np
import pytest

from hwval.benchmodel import Bench, MeterModel, PowerProfile
from hwval.emulators.pty import FaultPlan
from hwval.emulators.tasmota import TasmotaEmulator
from hwval.sources.base import SourceSpec, TransientError
from hwval.sources.serial.port import open_serial
from hwval.sources.serial.tasmota import create
from hwval.sources.testing import RecordingContext

from serial_e2e import capture, event_names, expected_power_w, near_step


def spec(path: str, **options) -> SourceSpec:
    return SourceSpec("tasmota", path, "wall", options=options)


def test_unknown_and_bad_options_are_rejected():
    with pytest.raises(ValueError, match="unknown option 'baud'.*accepted: baudrate"):
        create(spec("/dev/null", baud=9600))
    with pytest.raises(ValueError, match="'command' must be one of status10, status8, got 'status11'"):
        create(spec("/dev/null", command="status11"))
    with pytest.raises(ValueError, match="'mode' must be one of poll, sensor"):
        create(spec("/dev/null", mode="push"))


@pytest.mark.parametrize("resolution, message", [
    ({"WattRes": 4}, "WattRes must be a whole number of decimals 0..3, got 4"),
    ({"EnergyRes": -1}, "EnergyRes must be a whole number of decimals 0..5, got -1"),
    ({"AmpRes": "2"}, "AmpRes must be a whole number of decimals 0..3, got '2'"),
    ({"Watts": 1}, "unknown resolution 'Watts' \\(known: WattRes, VoltRes"),
])
def test_a_refused_resolution_leaves_no_link_folder(tmp_path, monkeypatch, resolution, message):
    # the base emulator makes its link folder with tempfile.mkdtemp: a private temp folder shows
    # whether a refused option left one behind
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    bench, model = Bench(PowerProfile.parse("constant:100")), MeterModel()
    with pytest.raises(ValueError, match=message):
        TasmotaEmulator(bench, model, resolution=resolution)
    assert os.listdir(tmp_path) == []
    # the control: an accepted one makes its folder right there (and stop() removes it)
    emu = TasmotaEmulator(bench, model, resolution={"WattRes": 3, "EnergyRes": 5})
    assert os.path.dirname(emu.path) == str(tmp_path / os.listdir(tmp_path)[0])
    assert emu.res["WattRes"] == 3 and emu.res["EnergyRes"] == 5 and emu.res["AmpRes"] == 3
    emu.stop()
    assert os.listdir(tmp_path) == []


def test_old_firmware_falls_back_to_status8_and_reads_statuspwr():
    bench = Bench(PowerProfile.parse("constant:100"))
    with TasmotaEmulator(bench, MeterModel(), old_firmware=True) as emu:
        source, ctx = create(spec(emu.path)), RecordingContext()
        info = source.open(ctx)[0]
        try:
            assert info.identity["version"] == "5.14.0"
            readings = []
            for _ in range(3):
                try:
                    readings.append(source.read()["wall"])
                except TransientError:
                    continue  # the one poll that discovered the old format
        finally:
            source.close()
    assert any(e[2].get("kind") == "fallback" for e in ctx.events)
    assert source.command == "Status 8"
    assert readings and all(r["power_w"] == 100.0 for r in readings)


def test_channel_option_and_sensor_mode():
    bench = Bench(PowerProfile.parse("constant:100"))
    with TasmotaEmulator(bench, MeterModel(), channels=2, mqtt="connected", heap=True) as emu:
        for channel, want in ((0, 110.0), (1, 100.0), (2, 10.0)):
            source = create(spec(emu.path, channel=channel))
            source.open(RecordingContext())
            try:
                assert source.read()["wall"]["power_w"] == want
            finally:
                source.close()
        # sensor mode: record what the telemetry timer publishes (TelePeriod forces one)
        source, ctx = create(spec(emu.path, mode="sensor")), RecordingContext()
        source.open(ctx)
        thread = threading.Thread(target=source.run, args=(ctx,))
        thread.start()
        for n in range(1, 4):
            emu.publish_sensor()
            deadline = time.monotonic() + 10.0  # wait on the reading, not a fixed pause (busy CI)
            while len(ctx.rows()) < n and time.monotonic() < deadline:
                ctx.stop.wait(0.02)
        ctx.stop.set()
        thread.join(2)
        source.close()
    assert source.mode == "streaming"
    assert [v["power_w"] for _, v in ctx.rows()] == [110.0] * 3
    assert ctx.rows()[0][1]["energy_j"] == 0.0


def test_sensor_mode_without_telemetry_is_a_gap():
    bench = Bench(PowerProfile.parse("constant:100"))
    with pytest.raises(ValueError, match="'stale_s' applies to mode=sensor only"):
        create(spec("/dev/null", stale_s=5.0))
    with TasmotaEmulator(bench, MeterModel(), tele_period_s=0) as emu:  # telemetry off
        source, ctx = create(spec(emu.path, mode="sensor", stale_s=0.4)), RecordingContext()
        source.open(ctx)
        try:
            emu.publish_sensor()  # one message arrives, then the plug goes quiet
            started = time.monotonic()
            with pytest.raises(TransientError, match=r"no SENSOR telemetry from .* for \d+\.\d s"):
                source.run(ctx)
            waited = time.monotonic() - started
        finally:
            source.close()
    assert [v["power_w"] for _, v in ctx.rows()] == [100.0]
    assert 0.4 <= waited < 5.0


def test_capture_matches_truth_through_faults_stall_and_unplug(tmp_path):
    bench = Bench(PowerProfile.parse("steps"))
    model = MeterModel(window_s=0.2, latency_s=0.2)
    faults = FaultPlan(garbage_rate=0.1, drop_rate=0.1, truncate_rate=0.1, bad_checksum_rate=0.1,
                       stall_at_s=2.0, stall_s=0.8, disconnect_at_s=3.4, disconnect_s=0.4, seed=4)
    with TasmotaEmulator(bench, model, faults, resolution={"EnergyRes": 5}) as emu:
        c = capture(f"tasmota:{emu.path}?name=wall&period_s=0.2", str(tmp_path / "t.h5"), 6.0, bench, emulator=emu)
        injected = dict(emu.injected)
    assert c.returncode == 0, c.stderr
    power = c.data["power_w"]
    assert len(power) > 10
    # good samples are the bench model rounded to integer watts (WattRes 0)
    keep = ~near_step(bench, model, c.bench_t_s)
    err = np.abs(power[keep] - expected_power_w(bench, model, c.bench_t_s[keep]))
    assert keep.sum() > 5 and err.max() <= 0.5 + 1e-9
    # faults became counted errors, gaps and a reconnect, and the capture went on after them
    assert 0 < c.error_counts.get("garbage", 0) <= injected.get("garbage", 0)
    assert 0 < c.error_counts.get("bad_payload", 0) <= injected.get("truncate", 0) + injected.get("bad_checksum", 0)
    assert c.error_counts.get("transient", 0) >= injected.get("drop", 0) - 1
    names = event_names(c)
    assert {"gap_start", "gap_end", "reconnect"} <= set(names)
    reconnect_t = next(e.t for e in c.events if e.name == "reconnect")
    assert any(e.name == "gap_end" and e.t >= reconnect_t for e in c.events)
    assert injected["disconnect"] == 1 and injected["stall"] == 1
    assert (c.bench_t_s > 3.8).sum() >= 3  # samples after the re-plug
    # energy: the plug's Total at EnergyRes 5 (0.01 Wh = 36 J) follows the true energy
    energy = c.data["energy_j"]
    ok = ~np.isnan(energy)
    t_first, t_last = c.bench_t_s[ok][0], c.bench_t_s[ok][-1]
    truth = bench.profile.energy_j(t_first, t_last)
    assert energy[ok][0] == 0.0
    assert abs(energy[ok][-1] - truth) < 36 + 250 * 0.02


def test_wrong_baud_rate_is_reported_and_capture_continues(tmp_path):
    bench = Bench(PowerProfile.parse("constant:100"))
    with TasmotaEmulator(bench, MeterModel()) as emu:
        c = capture(f"tasmota:{emu.path}?name=wall&baudrate=9600&silence_s=1",
                    str(tmp_path / "b.h5"), 2.5, bench)
        assert emu.injected["wrong_baud_bytes"] > 0
    assert c.returncode == 0, c.stderr
    assert c.error_counts.get("silence", 0) >= 1
    messages = [e.detail.get("message", "") for e in c.events if e.name == "error"]
    assert any("wrong baud rate? nothing parseable on" in m and "115200 8N1" not in m
               and "9600 8N1" in m for m in messages)


def test_missing_and_busy_ports_refuse_to_start(tmp_path):
    bench = Bench(PowerProfile.parse("constant:100"))
    missing = str(tmp_path / "ttyUSB7")
    c = capture(f"tasmota:{missing}?name=wall", str(tmp_path / "m.h5"), 1.0, bench)
    assert c.returncode == 2 and f"serial port {missing} does not exist" in c.stderr
    with TasmotaEmulator(bench, MeterModel()) as emu:
        holder = open_serial(emu.path, baudrate=115200)
        try:
            c = capture(f"tasmota:{emu.path}?name=wall", str(tmp_path / "busy.h5"), 1.0, bench)
        finally:
            holder.close()
    assert c.returncode == 2 and "is busy: another program has it open" in c.stderr
