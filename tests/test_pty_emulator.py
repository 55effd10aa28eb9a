"""The pty emulator base: stable link, fault plan, wrong-speed garbling, ticks and stalls."""

from __future__ import annotations

import os
import time

import click
import pytest
from click.testing import CliRunner

from hwval.benchmodel import Bench, MeterModel, PowerProfile
from hwval.emulators.pty import FaultPlan, PtyEmulator, fault_options
from hwval.sources.serial.framing import FrameScanner, LineBuffer
from hwval.sources.serial.port import close_quietly, open_serial, read_available


class Ticker(PtyEmulator):
    """Streams ``n<counter>\\n`` every 20 ms; corrupt() marks the frame with ``!``."""

    device = "ticker"
    baudrate = 19200
    tick_period_s = 0.02

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.counter = 0

    def tick(self) -> None:
        self.counter += 1
        self.send_frame(b"n%d\n" % self.counter)

    def corrupt(self, frame: bytes) -> bytes:
        return b"!" + frame

    def truncate(self, frame: bytes) -> bytes:
        return frame[:1] + b"\n"  # keep the terminator: one damaged line per fault

    def garbage(self) -> bytes:
        return b"\x00\xff~\n"


def bench() -> Bench:
    return Bench(PowerProfile.parse("constant:100"))


def collect(path: str, seconds: float, baudrate: int = 19200) -> list[bytes]:
    port = open_serial(path, baudrate=baudrate, timeout_s=0.05)
    lines = LineBuffer()
    out: list[bytes] = []
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            out += lines.feed(read_available(port, path))
    finally:
        close_quietly(port)
    return out


def test_fault_plan_validates_rates_and_durations():
    with pytest.raises(ValueError, match="drop_rate must be a probability"):
        FaultPlan(drop_rate=1.5)
    with pytest.raises(ValueError, match="stall_s must be >= 0"):
        FaultPlan(stall_s=-1)
    plan = FaultPlan(stall_at_s=2.0, stall_s=1.0)
    assert [plan.stalled_at(t) for t in (1.9, 2.0, 2.9, 3.0)] == [False, True, True, False]


def test_bad_checksum_needs_a_protocol_corrupt():
    class Plain(PtyEmulator):
        device = "plain"

    with pytest.raises(ValueError, match="needs a protocol corrupt"):
        Plain(bench(), MeterModel(), FaultPlan(bad_checksum_rate=0.5))


def test_fault_options_build_a_plan():
    seen = {}

    @click.command()
    @fault_options
    def cmd(faults, counts_file):
        seen["faults"], seen["counts_file"] = faults, counts_file

    result = CliRunner().invoke(cmd, ["--drop-rate", "0.25", "--stall-at-s", "3", "--stall-s",
                                      "1.5", "--fault-seed", "7", "--counts-file", "c.json"])
    assert result.exit_code == 0, result.output
    assert seen["faults"] == FaultPlan(drop_rate=0.25, stall_at_s=3.0, stall_s=1.5, seed=7)
    assert seen["counts_file"] == "c.json"
    bad = CliRunner().invoke(cmd, ["--garbage-rate", "2"])
    assert bad.exit_code == 2 and "garbage_rate must be a probability" in bad.output


def test_faults_are_counted_and_visible_on_the_wire():
    plan = FaultPlan(garbage_rate=0.2, drop_rate=0.1, truncate_rate=0.1, bad_checksum_rate=0.1,
                     seed=3)
    with Ticker(bench(), MeterModel(), plan) as emu:
        lines = collect(emu.path, 1.0)
        injected = dict(emu.injected)
    good = [ln for ln in lines if ln.startswith(b"n") and ln[1:].isdigit()]
    assert len(lines) > 20 and injected["frames"] > 20
    assert sum(ln.startswith(b"!") for ln in lines) <= injected["bad_checksum"]
    assert sum(ln == b"\x00\xff~" for ln in lines) <= injected["garbage"]
    assert sum(ln == b"n" for ln in lines) <= injected["truncate"]
    # every frame the host saw intact was sent intact: no fault without its count
    numbers = [int(ln[1:]) for ln in good]
    assert numbers == sorted(numbers)
    assert injected["drop"] > 0 and injected["garbage"] > 0


def test_wrong_host_speed_garbles_everything():
    with Ticker(bench(), MeterModel()) as emu:
        lines = collect(emu.path, 0.4, baudrate=9600)
        assert emu.injected["wrong_baud_bytes"] > 0
        good = collect(emu.path, 0.3, baudrate=19200)
    assert not any(ln.startswith(b"n") and ln[1:].isdigit() for ln in lines)
    assert any(ln.startswith(b"n") and ln[1:].isdigit() for ln in good)


def test_stall_stops_output_then_resumes():
    b = bench()
    with Ticker(b, MeterModel(), FaultPlan(stall_at_s=0.3, stall_s=0.4)) as emu:
        port = open_serial(emu.path, baudrate=19200, timeout_s=0.05)
        arrivals = []
        lines = LineBuffer()
        try:
            while b.t_s() < 1.0:
                if lines.feed(read_available(port, emu.path)):
                    arrivals.append(b.t_s())
        finally:
            close_quietly(port)
        assert emu.injected["stall"] == 1
    gaps = [t1 - t0 for t0, t1 in zip(arrivals, arrivals[1:])]
    assert max(gaps) >= 0.35
    assert arrivals[-1] > 0.7


def test_frame_scanner_resynchronises_and_counts():
    def match(buf: bytes) -> int:  # frames: 0xA5, length, payload, sum(payload) & 0xFF
        if buf[0] != 0xA5:
            return -1
        if len(buf) < 2 or len(buf) < buf[1] + 3:
            return 0
        n = buf[1]
        return n + 3 if sum(buf[2:2 + n]) & 0xFF == buf[2 + n] else -1

    frame = bytes([0xA5, 2, 1, 2, 3])
    scanner = FrameScanner(match)
    stream = b"\x00\x01" + frame + bytes([0xA5, 2, 1, 2, 9]) + frame[:3]
    frames = [f for i in range(len(stream)) for f in scanner.feed(stream[i:i + 1])]
    frames += scanner.feed(frame[3:])
    assert frames == [frame, frame]
    assert scanner.resyncs == 2 and scanner.skipped_bytes == 2 + 5


def test_line_buffer_bounds_a_line_without_terminator():
    lines = LineBuffer(max_line_bytes=8)
    assert lines.feed(b"ab\r\ncd") == [b"ab"]
    assert lines.feed(b"0123456789") == []
    assert lines.overflows == 1 and lines.pending() == b""
    assert lines.feed(b"ok\n") == [b"ok"]


@pytest.mark.parametrize("device", ["tasmota", "esphome", "wattsup"])
def test_hwval_emulate_announces_serves_and_exits_cleanly(tmp_path, device):
    import json
    import signal
    import subprocess
    import sys

    ready, counts = tmp_path / "ready.json", tmp_path / "counts.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hwval.cli", "emulate", device, "--profile", "constant:100",
         "--ready-file", str(ready), "--counts-file", str(counts), "--garbage-rate", "0.5",
         "--fault-seed", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        assert info["device"] == device and info["pid"] == proc.pid
        assert info["faults"]["garbage_rate"] == 0.5
        port = open_serial(info["resource"], baudrate=115200, timeout_s=0.2)
        close_quietly(port)  # the announced resource is a real, openable serial port
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"{device} emulator ready: use -m {device}:" in out and "injected:" in out
    assert isinstance(json.loads(counts.read_text()), dict)
    assert not os.path.exists(info["resource"])  # the private link is cleaned up
