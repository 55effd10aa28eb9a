"""How a capture's end reads in the run file: a Ctrl-C during a pulsed capture skips the closing
sync-pulse block (the operator asked to stop), a --duration that runs out still plays it, and a
workload that ignores the --duration's SIGTERM is said to be killed, not terminated."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from hwval.capture import pulse_blocks, workload as workload_mod
from hwval.capture.marker_server import MarkerServer
from hwval.capture.session import CaptureRequest, run_capture
from hwval.config import CaptureConfig, parse_meter_spec
from hwval.runfile import open_run
from hwval.runfile.schema import EventName
from hwval.sources.registry import Registry

SYN = "synthetic:constant:50?period_s=0.1&name=syn"
#: Sends a mark once it is up (and, where a test needs it, has set its signal handling).
READY_WORKLOAD = "import hwval, time; hwval.mark('ready'); time.sleep(60)"


def _request(out, command, **kwargs) -> CaptureRequest:
    registry = Registry()
    config = CaptureConfig().with_meters([parse_meter_spec(SYN, registry.names())])
    return CaptureRequest(config=config, command=command, output=str(out), live=False, registry=registry,
                          **kwargs)


def _on_mark(monkeypatch, name, action) -> None:
    """Run ``action()`` once the capture has recorded the workload's mark ``name``."""
    record = MarkerServer.record

    def record_then_act(self, mark, t_ns, detail, pid):
        record(self, mark, t_ns, detail, pid)
        if mark == name:
            action()

    monkeypatch.setattr(MarkerServer, "record", record_then_act)


@pytest.mark.slow  # ~6 s: a real opening block of 0.3 s chips, long enough to tell a skip from a block
def test_sigint_during_a_pulsed_workload_skips_the_closing_block(tmp_path, monkeypatch):
    chip_s = 0.3
    sent: list[float] = []

    def interrupt():
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    # the workload's own mark comes after the opening block, whatever a loaded machine took to get there
    _on_mark(monkeypatch, "ready", interrupt)
    out = tmp_path / "stopped.h5"
    request = _request(out, [sys.executable, "-c", READY_WORKLOAD], sync_pulses=True, pulse_chip_s=chip_s)
    assert run_capture(request) == 128 + signal.SIGINT
    ended_s = time.monotonic() - sent[0]
    with open_run(out) as run:
        assert run.complete and run.stop_reason == ("stopped by SIGINT (forwarded to the workload); "
                                                    "the closing sync-pulse block was skipped")
        names = [e.name for e in run.events]
        signals = [e.detail for e in run.events if e.name == EventName.SIGNAL]
    assert names.count(EventName.PULSE_START) == 1 and names.count(EventName.PULSE_END) == 1
    assert names.index(EventName.PULSE_END) < names.index(EventName.WORKLOAD_START)
    assert signals == [{"signal": "SIGINT", "action": "forwarded to the workload"},
                       {"signal": "SIGINT", "action": "skipped the closing sync-pulse block"}]
    # A closing block would have taken its settling (1 s), 13 chips and the tail (1 s or more):
    # ending the workload and finishing the file, even on a loaded machine, takes less.
    assert ended_s < 1.0 + 13 * chip_s + 1.0, ended_s


def test_a_sigint_as_the_opening_block_ends_goes_to_the_workload(tmp_path, monkeypatch):
    """Between the opening block's end and the workload's start a Ctrl-C is held for the
    workload (it is forwarded once it runs), not taken by the finished block and lost."""
    monkeypatch.setattr(pulse_blocks, "MIN_SETTLE_S", 0.2)
    block = pulse_blocks.PulseRunner.block
    calls: list[bool] = []

    def block_then_interrupt(self):
        played = block(self)
        calls.append(played)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, before block() returns
        return played

    monkeypatch.setattr(pulse_blocks.PulseRunner, "block", block_then_interrupt)
    out = tmp_path / "late.h5"
    request = _request(out, [sys.executable, "-c", "import time; time.sleep(60)"], sync_pulses=True,
                       pulse_chip_s=0.05)
    started = time.monotonic()
    code = run_capture(request)
    # the workload's own exit: 1 when the SIGINT lands in Python's start-up (a KeyboardInterrupt
    # while importing site, as a loaded machine makes likely), 130 once its handler is set
    assert code in (1, 128 + signal.SIGINT), code
    assert calls == [True]  # the opening block played; the closing one was skipped, not run
    assert time.monotonic() - started < 45  # the workload was stopped, not waited out (60 s)
    with open_run(out) as run:
        assert run.stop_reason == ("stopped by SIGINT (forwarded to the workload); "
                                   "the closing sync-pulse block was skipped")
        signals = [e.detail for e in run.events if e.name == EventName.SIGNAL]
    assert signals == [{"signal": "SIGINT", "action": "forwarded to the workload"},
                       {"signal": "SIGINT", "action": "skipped the closing sync-pulse block"}]


def test_a_duration_that_ends_the_workload_still_plays_the_closing_block(tmp_path, monkeypatch):
    monkeypatch.setattr(pulse_blocks, "MIN_SETTLE_S", 0.2)  # two blocks and a tail, not 3 s of idle
    out = tmp_path / "timed.h5"
    request = _request(out, [sys.executable, "-c", "import time; time.sleep(60)"], duration_s=0.5,
                       sync_pulses=True, pulse_chip_s=0.1)
    assert run_capture(request) == 128 + signal.SIGTERM
    with open_run(out) as run:
        assert run.complete
        assert run.stop_reason == "stopped by --duration (0.5 s reached; the workload was terminated)"
        events = list(run.events)
    names = [e.name for e in events]
    assert names.count(EventName.PULSE_START) == 2 and names.count(EventName.PULSE_END) == 2
    assert EventName.SIGNAL not in names
    # one block before the workload, one after it, neither cut short
    first_end, last_start = names.index(EventName.PULSE_END), len(names) - 1 - names[::-1].index(EventName.PULSE_START)
    assert first_end < names.index(EventName.WORKLOAD_START) < names.index(EventName.WORKLOAD_END) < last_start
    assert all(e.detail.get("aborted") is not True for e in events if e.name == EventName.PULSE_END)


def test_a_workload_that_ignores_the_durations_sigterm_is_said_to_be_killed(tmp_path, monkeypatch):
    monkeypatch.setattr(workload_mod, "TERM_GRACE_S", 0.5)
    ready = threading.Event()
    _on_mark(monkeypatch, "ready", ready.set)
    # The --duration's clock starts only once the workload ignores SIGTERM: on a loaded machine
    # its interpreter may start after a short duration, and SIGTERM would then kill it.
    wait = workload_mod.Workload.wait

    def wait_once_ready(self, deadline_monotonic=None, on_timeout=None):
        assert ready.wait(60), "the workload never sent its ready mark"
        return wait(self, time.monotonic() + 0.2, on_timeout)

    monkeypatch.setattr(workload_mod.Workload, "wait", wait_once_ready)
    out = tmp_path / "killed.h5"
    ignore_term = ("import hwval, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                   "hwval.mark('ready'); time.sleep(60)")
    assert run_capture(_request(out, [sys.executable, "-c", ignore_term], duration_s=0.2)) == 128 + signal.SIGKILL
    with open_run(out) as run:
        assert run.complete
        assert run.stop_reason == ("stopped by --duration (0.2 s reached; the workload was killed with "
                                   "SIGKILL, 0.5 s after SIGTERM)")
        (end,) = [e for e in run.events if e.name == EventName.WORKLOAD_END]
    assert end.detail["exit_code"] == 128 + signal.SIGKILL
