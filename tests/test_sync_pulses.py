"""The sync-pulse generator: patterns, chip timing, the marks it records, and real CPU load
gated by chip (worker processes busy only during 1 chips)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from conftest import run_hwval
from hwval.runfile import open_run
from hwval.sync.template import pulse_blocks
from hwval.workloads import pulses
from hwval.workloads.pulses import BARKER13, PulseError, chip_length_s, mseq, pattern_levels, run_pulses


def _aperiodic_sidelobes(code):
    s = 2 * np.asarray(code) - 1
    full = np.correlate(s, s, mode="full")
    return np.delete(full, len(s) - 1)


def test_patterns_have_one_sharp_correlation_peak():
    assert np.max(np.abs(_aperiodic_sidelobes(BARKER13))) == 1
    for n in (5, 6, 7, 8, 9):
        code = mseq(n)
        assert len(code) == 2 ** n - 1 and sum(code) == 2 ** (n - 1)
        s = 2 * np.asarray(code) - 1
        periodic = [int(np.dot(s, np.roll(s, k))) for k in range(1, len(s))]
        assert set(periodic) == {-1}                      # two-valued: N at 0, -1 elsewhere
    assert pattern_levels("mseq5") == mseq(5)
    with pytest.raises(PulseError, match="barker13 or mseq5..mseq9"):
        pattern_levels("barker7")


def test_chip_length_follows_the_slowest_meter():
    # a 1 Hz plug averaging 1 s, a 10 Hz analyzer: 1.25 x 2 s + 0.382 x 1 s
    assert chip_length_s([(1.0, 1.0), (0.1, 0.1)]) == pytest.approx(2.882)
    assert chip_length_s([(0.01, 0.0)]) == 0.1
    assert chip_length_s([]) == pulses.DEFAULT_CHIP_S


def test_blocks_are_marked_at_each_chip_and_the_cpu_load_follows_them():
    marks = []

    def mark(name, **detail):
        import time

        marks.append((time.monotonic_ns(), name, detail))

    chip = 0.2  # long enough that a chip marked late on a loaded machine stays within half a chip
    out = run_pulses("barker13", chip_s=chip, blocks=2, settle_s=0.1, tail_s=0.0, cpus=1, gpus="none", mark=mark)
    names = [m[1] for m in marks]
    assert names == (["pulse_start"] + ["pulse_chip"] * 13 + ["pulse_end"]) * 2
    start = marks[0][2]
    assert start == {"pattern": "barker13", "chip_s": chip, "levels": list(BARKER13), "targets": ["cpu"]}
    chips = [m for m in marks[:15] if m[1] == "pulse_chip"]
    assert [c[2]["index"] for c in chips] == list(range(13))
    assert [c[2]["level"] for c in chips] == list(BARKER13)
    # chips on absolute deadlines: spacing chip_s (half a chip of margin for a loaded machine:
    # a mark 43 ms late was seen at load 5)
    t = np.array([c[0] for c in chips] + [marks[14][0]]) / 1e9
    assert np.all(np.abs(np.diff(t) - chip) < chip / 2)
    assert abs((t[-1] - t[0]) - 13 * chip) < chip / 2
    # the worker burned CPU only during the 1 chips: 9 per block of 13
    busy = out["busy_s"]["cpu"]
    expected = 2 * 9 * chip
    # The CPU time a worker gets depends on what else runs (a loaded CI host gives it a fraction of
    # a core), so only the bounds load cannot move are asserted: it burned CPU, and no more than
    # the 1-chips allow (it idled during the 0-chips and between blocks).
    assert 0.0 < busy < 1.3 * expected + 0.1, busy


def test_bad_options_are_refused():
    with pytest.raises(PulseError, match="--chip-s"):
        run_pulses(chip_s=0.0, gpus="none")
    with pytest.raises(PulseError, match="nothing to drive"):
        run_pulses(cpus=0, gpus="none")
    with pytest.raises(PulseError, match="--gpus"):
        run_pulses(cpus=1, gpus="first")


def test_module_command_under_a_capture_records_a_syncable_block(tmp_path):
    out = tmp_path / "pulses.h5"
    res = run_hwval("capture", "--no-nvml", "--no-rapl", "-m", "synthetic:constant:50?period_s=0.1&name=syn",
                    "-o", str(out), "--", sys.executable, "-m", "hwval.workloads.pulses", "--chip-s", "0.2",
                    "--settle-s", "0.2", "--cpus", "1", "--gpus", "none", timeout=120)
    assert res.returncode == 0, res.stderr
    with open_run(out) as run:
        blocks = pulse_blocks(run.events)
    assert len(blocks) == 1
    b = blocks[0]
    assert b.levels == BARKER13 and b.chip_s == 0.2 and b.targets == ("cpu",)
    assert np.all(np.abs(np.diff(b.chip_t_s) - 0.2) < 0.1)  # half a chip: marks can be late under load
    proc = run_hwval("sync", str(out))
    # the synthetic source follows its own profile, not the host: it never reacts
    assert proc.returncode == 0, proc.stderr
    assert "no_response" in proc.stdout
    bad = run_hwval("capture", "--no-nvml", "--no-rapl", "-m", "synthetic:constant:50?period_s=0.1",
                    "-o", str(tmp_path / "bad.h5"), "--", sys.executable, "-m", "hwval.workloads.pulses",
                    "--pattern", "nope")
    assert bad.returncode == 2 and "hwval: error: pattern 'nope'" in bad.stderr


def test_capture_sync_pulses_plays_a_block_around_the_workload_and_a_signal_cuts_it_short(tmp_path, monkeypatch):
    import os
    import signal

    from hwval.capture.pulse_blocks import PulseOptionError, chip_length_s as capture_chip_s
    from hwval.capture.session import CaptureRequest, run_capture
    from hwval.config import CaptureConfig, parse_meter_spec
    from hwval.sources.registry import Registry

    # the chip follows the slowest stream; an undeclared window counts as the period
    from hwval.sources.base import Key, StreamInfo
    plug = StreamInfo("plug", "hardware", "tasmota", "", "wall", 0.25, (Key("power_w", "W", "window_mean"),))
    assert capture_chip_s([plug]) == chip_length_s([(0.25, 0.25)]) == 0.721
    assert capture_chip_s([plug], 2.0) == 2.0
    with pytest.raises(PulseOptionError, match="--pulse-chip-s"):
        capture_chip_s([plug], -1.0)

    registry = Registry()
    config = CaptureConfig().with_meters([parse_meter_spec("synthetic:constant:50?period_s=0.1&name=syn",
                                                           registry.names())])
    out = tmp_path / "cut.h5"
    # chip 1 s: settling, then a 13 s block; SIGINT once its second chip is recorded lands inside
    # it however long a loaded machine took to get there (a timer from the start could land in
    # the settling)
    from hwval.capture.marker_server import MarkerServer

    record = MarkerServer.record

    def record_then_interrupt(self, name, t_ns, detail, pid):
        record(self, name, t_ns, detail, pid)
        if name == "pulse_chip" and detail.get("index") == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(MarkerServer, "record", record_then_interrupt)
    request = CaptureRequest(config=config, command=[sys.executable, "-c", "import time; time.sleep(30)"],
                             output=str(out), live=False, registry=registry, sync_pulses=True, pulse_chip_s=1.0)
    assert run_capture(request) == 128 + signal.SIGINT
    with open_run(out) as run:
        assert run.complete and "stopped by SIGINT during the sync pulses" in run.stop_reason
        names = [e.name for e in run.events]
        end = [e for e in run.events if e.name == "pulse_end"]
        blocks = pulse_blocks(run.events)
    assert "workload_start" not in names and names.count("pulse_start") == 1
    assert len(end) == 1 and end[0].detail["aborted"] is True
    assert len(blocks) == 1 and 1 <= len(blocks[0].levels) < 13


def test_cpu_workers_are_not_forked_from_the_threaded_caller():
    # The capture runs the recorder's threads: a worker forked from it could inherit a lock another
    # thread held. The workers come from the fork server, a process of their own.
    assert pulses.CPU_START_METHOD == "forkserver"
    pool = pulses.LoadPool(1)
    try:
        ppids = {int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]) for pid in pool.pids}
    finally:
        pool.close()
    assert len(pool.pids) == 1 and len(ppids) == 1
    assert ppids.isdisjoint({os.getpid()}), ppids
