"""End to end: ``hwval capture -m pzem004t:<pty>`` (a real subprocess) against the emulator."""

from __future__ import annotations

import json
import math
import signal
import time

import numpy as np
import pytest

from conftest import popen_hwval
from hwval.benchmodel import Bench, MeterModel, PowerProfile
from hwval.emulators.pty import FaultPlan
from hwval.emulators.pzem004t import Pzem004tEmulator
from hwval.sources.base import SourceSpec, TransientError
from hwval.sources.serial.pzem004t import create
from hwval.sources.testing import RecordingContext
from serial_e2e import MAX_RECEIPT_DELAY_S, capture, event_names

MODEL = MeterModel(window_s=1.0, quantum_w=0.1)
UPDATE_S = 0.5
assert MAX_RECEIPT_DELAY_S < UPDATE_S  # a reply can then only be one refresh old


def registers_power_w(bench: Bench, t_s: float) -> float:
    """What the module served at bench time ``t_s``: its last refresh's quantised 1 s mean."""
    refresh_s = math.floor(t_s / UPDATE_S) * UPDATE_S
    return round(MODEL.true_mean_w(bench.profile, refresh_s) / 0.1) * 0.1


def test_capture_matches_the_true_profile_within_the_quantum(tmp_path):
    # 1.5-3.5 kW so the 1 Wh energy register moves several times in a few seconds
    bench = Bench(PowerProfile.parse("steps:1500@1.3,3500@1.1"), seed=2)
    with Pzem004tEmulator(bench, MODEL, update_s=UPDATE_S, energy_start_wh=38) as emu:
        c = capture(f"pzem004t:{emu.path}?name=wall&period_s=0.25", str(tmp_path / "run.h5"),
                    4.0, bench)
    assert c.returncode == 0, c.stderr
    assert len(c.bench_t_s) >= 12
    power = c.data["power_w"]
    # the reply left the emulator before its receipt (at most MAX_RECEIPT_DELAY_S before, less
    # than one refresh period), so it holds this refresh or the previous one
    for t, p in zip(c.bench_t_s, power):
        candidates = [registers_power_w(bench, t - d) for d in (0.0, MAX_RECEIPT_DELAY_S)]
        assert min(abs(p - q) for q in candidates) <= 0.05 + 1e-9, (t, p, candidates)
    assert np.allclose(c.data["voltage_v"], 230.0) and np.allclose(c.data["frequency_hz"], 50.0)
    energy = c.data["energy_j"]
    assert energy[0] == 0.0 and np.all(np.diff(energy) >= 0)
    assert np.allclose(energy % 3600.0, 0.0)
    truth = bench.profile.energy_j(c.bench_t_s[0], c.bench_t_s[-1])
    assert abs(energy[-1] - truth) <= 3600.0 + 3500 * UPDATE_S  # 1 Wh steps, refresh lag
    assert c.attrs["driver"] == "pzem004t" and c.attrs["emulated"]
    assert c.error_counts == {}


def test_faults_become_counted_errors_gaps_and_a_reconnect(tmp_path):
    bench = Bench(PowerProfile.parse("constant:432.1"))
    faults = FaultPlan(garbage_rate=0.2, bad_checksum_rate=0.25, truncate_rate=0.15,
                       drop_rate=0.1, stall_at_s=2.5, stall_s=1.5, disconnect_at_s=5.0,
                       disconnect_s=0.8, seed=5)
    with Pzem004tEmulator(bench, MODEL, faults, update_s=UPDATE_S) as emu:
        c = capture(f"pzem004t:{emu.path}?name=wall&period_s=0.25&timeout_s=0.15&retries=2",
                    str(tmp_path / "run.h5"), 9.0, bench, emulator=emu)  # 3.2 s after the re-plug:
        # the reconnect is slow under load (7.0 s once left 1.2 s, and one reading in it)
        injected = dict(emu.injected)
    assert c.returncode == 0, c.stderr
    assert np.allclose(c.data["power_w"], 432.1)  # every recorded reading is exact
    names = event_names(c)
    # the stall (no reply for 1.5 s) is a gap; unplugging is a reconnect; capture continued
    assert "gap_start" in names and "gap_end" in names and "reconnect" in names
    t_reconnect = next(e.t for e in c.events if e.name == "reconnect")
    assert any(e.name == "gap_end" and e.t >= t_reconnect for e in c.events)
    t_first = c.bench_t_s[0]
    assert (c.bench_t_s > emu.fault_origin_s + 5.0 + 0.8).sum() >= 3, "readings resumed after the re-plug"
    assert t_first < emu.fault_origin_s + 2.5  # read before the stall
    assert injected["bad_checksum"] >= 1 and injected["drop"] >= 1
    for kind in ("bad_crc", "no_reply"):
        assert c.error_counts.get(kind, 0) >= 1, (kind, c.error_counts, injected)


def test_missing_port_refuses_to_start_with_one_line(tmp_path, hwval_cmd):
    proc = hwval_cmd("capture", "--no-nvml", "--no-rapl", "-m", f"pzem004t:{tmp_path}/ttyUSB7",
                     "--duration", "1", "-o", str(tmp_path / "x.h5"))
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("args", [["--exception-rate", "2"], ["--address", "0"]])
def test_emulator_cli_rejects_bad_options(args, hwval_cmd):
    proc = hwval_cmd("emulate", "pzem004t", *args, timeout=30)
    assert proc.returncode == 2 and "Error" in proc.stderr


def test_hwval_emulate_pzem004t_serves_the_driver_and_reports_counts(tmp_path):
    ready, counts = tmp_path / "ready.json", tmp_path / "counts.json"
    emu = popen_hwval("emulate", "pzem004t", "--profile", "constant:77.7", "--address", "3",
                      "--exception-rate", "1", "--exception-code", "2",
                      "--ready-file", str(ready), "--counts-file", str(counts))
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert emu.poll() is None and time.monotonic() < deadline, emu.communicate()
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        assert info["address"] == 3
        src = create(SourceSpec("pzem004t", info["resource"], "wall", None, {"address": 3}))
        ctx = RecordingContext(polled=True)
        [stream] = src.open(ctx)
        try:
            assert stream.identity["modbus_address"] == 3
            with pytest.raises(TransientError, match="illegal data address"):
                src.read()
        finally:
            src.close()
    finally:
        emu.send_signal(signal.SIGTERM)
        emu.communicate(timeout=10)
    assert emu.returncode == 0
    assert ctx.errors == {"modbus_exception": 1} and ctx.events == []
    assert json.loads(counts.read_text())["exception"] == 1
