"""End to end: ``hwval capture -m cse7766:<pty>`` (a real subprocess) against the emulator, both
in-process and as ``hwval emulate cse7766`` (the operator's dry run)."""

from __future__ import annotations

import json
import signal
import time

import numpy as np

from conftest import popen_hwval
from hwval.benchmodel import Bench, MeterModel, PowerProfile
from hwval.emulators.cse7766 import P_PARAM, Cse7766Emulator
from hwval.emulators.pty import FaultPlan
from serial_e2e import capture, event_names, near_step

MODEL = MeterModel(window_s=0.1)
JOULES_PER_PULSE = P_PARAM * 1e-6


def wait_ready(path, proc, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(path) as fh:
                return json.load(fh)
        except FileNotFoundError:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
    raise AssertionError("emulator did not become ready")


def test_dry_run_with_hwval_emulate_matches_truth_through_a_counter_wrap(tmp_path):
    ready, counts = tmp_path / "ready.json", tmp_path / "counts.json"
    emu = popen_hwval("emulate", "cse7766", "--profile", "steps:80@1.2,260@1.2",
                      "--cf-start", "65500", "--ready-file", str(ready),
                      "--counts-file", str(counts))
    try:
        info = wait_ready(ready, emu)
        bench = Bench(PowerProfile.parse("steps:80@1.2,260@1.2"), t0_ns=info["t0_monotonic_ns"])
        c = capture(f"cse7766:{info['resource']}?name=wall", str(tmp_path / "run.h5"), 3.5, bench)
    finally:
        emu.send_signal(signal.SIGTERM)
        out, err = emu.communicate(timeout=10)
    assert emu.returncode == 0, err
    assert c.returncode == 0, c.stderr
    assert json.loads(counts.read_text())["frames"] >= 30
    t, power = c.bench_t_s, c.data["power_w"]
    assert len(t) >= 25
    # away from the steps every frame is the level within the chip's 1 us Pcycle quantum;
    # frames whose window touches a step lie between the two levels
    flat = ~near_step(bench, MODEL, t)
    assert flat.sum() >= 10
    level = bench.profile.power_w(t[flat])
    assert np.all(np.abs(power[flat] - level) <= level ** 2 / P_PARAM + 1e-9)
    assert np.all((power >= 80 - 0.01) & (power <= 260 + 0.02))
    # 65500 + ~2.5 s of 80-260 W pulses (15-49 per second) wraps the 16-bit counter
    energy = c.data["energy_j"]
    truth = bench.profile.energy_j(t[0], t[-1])
    assert truth / JOULES_PER_PULSE > 36
    # 0 at the first recorded reading (it was 10.7 J once on a loaded machine, when a frame
    # without a power value came first: test_cse7766_driver checks that case exactly), and the
    # energy recorded between the first and last reading is the truth over that span
    assert energy[0] == 0.0 and np.all(np.diff(energy) >= 0)
    assert abs((energy[-1] - energy[0]) - truth) <= 2 * JOULES_PER_PULSE + 260 * 0.05
    assert c.attrs["emulated"] and c.error_counts == {}


def test_faults_become_counted_errors_gaps_and_a_reconnect(tmp_path):
    bench = Bench(PowerProfile.parse("constant:180"))
    faults = FaultPlan(garbage_rate=0.2, bad_checksum_rate=0.15, truncate_rate=0.1,
                       drop_rate=0.1, stall_at_s=2.0, stall_s=1.6, disconnect_at_s=4.5,
                       disconnect_s=0.8, seed=8)
    with Cse7766Emulator(bench, MODEL, faults) as emu:
        c = capture(f"cse7766:{emu.path}?name=wall&silence_s=0.6", str(tmp_path / "run.h5"),
                    8.5, bench, emulator=emu)  # 3 s after the re-plug: the reconnect is slow under load
        injected = dict(emu.injected)
    assert c.returncode == 0, c.stderr
    assert np.all(np.abs(c.data["power_w"] - 180.0) <= 180.0 ** 2 / P_PARAM)
    names = event_names(c)
    assert "gap_start" in names and "gap_end" in names and "reconnect" in names
    assert (c.bench_t_s > emu.fault_origin_s + 4.5 + 0.8).sum() >= 5, "frames resumed after the re-plug"
    assert c.error_counts.get("silence", 0) >= 1  # the stall
    assert injected["bad_checksum"] >= 1 and c.error_counts.get("bad_checksum", 0) >= 1
    assert c.error_counts.get("garbage", 0) + c.error_counts.get("truncated", 0) >= 1
    # energy keeps counting through the stall and the unplugged time (the chip never stopped)
    truth = bench.profile.energy_j(c.bench_t_s[0], c.bench_t_s[-1])
    assert abs(c.data["energy_j"][-1] - truth) <= 2 * JOULES_PER_PULSE + 180 * 0.05


def test_wrong_baud_rate_refuses_to_start(tmp_path, hwval_cmd):
    bench = Bench(PowerProfile.parse("constant:100"))
    with Cse7766Emulator(bench, MODEL) as emu:
        proc = hwval_cmd("capture", "--no-nvml", "--no-rapl", "-m",
                         f"cse7766:{emu.path}?baudrate=9600&open_timeout_s=0.5",
                         "--duration", "1", "-o", str(tmp_path / "x.h5"))
    assert proc.returncode == 2
    assert "wrong baud rate?" in proc.stderr
    assert "baudrate=9600 differs from the chip's fixed 4800 8E1" in proc.stderr
    assert "Traceback" not in proc.stderr
