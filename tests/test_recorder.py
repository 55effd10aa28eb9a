"""The recorder with sources that fail in every way a meter can, in-process through run_capture."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest

from hwval.runfile.journal import journal_path
from hwval.runfile.recover import read_journal
from hwval.runfile.documents import Page
from hwval.capture.session import CaptureError, CaptureRequest, run_capture
from hwval.config import CaptureConfig, ConfigError, SoftwareConfig, parse_meter_spec
from hwval.sources.base import (Disconnected, Key, SourceSpec, SourceUnavailable, StreamInfo,
                                TransientError)
from hwval.sources.registry import Registry
from hwval.runfile.reader import open_run

NO_SOFTWARE = SoftwareConfig(nvml=False, rapl=False)


class ScriptedSource:
    """Polled source whose read() follows a script of ('ok'|'transient'|'disconnect'|'crash')."""

    mode = "polled"

    def __init__(self, spec: SourceSpec, script: list[str], fail_opens: int = 0):
        self.spec = spec
        self.period_s = spec.period_s or 0.01
        self.script = list(script)
        self.fail_opens = fail_opens
        self.opens = 0
        self.n = 0

    def open(self, ctx):
        self.opens += 1
        if self.opens > 1 and self.fail_opens:
            self.fail_opens -= 1
            raise OSError("still unplugged")
        return [StreamInfo(self.spec.name, "hardware", "scripted", "mem", "wall", self.period_s,
                           (Key("power_w", "W", "instant"),))]

    def read(self):
        step = self.script.pop(0) if self.script else "ok"
        if step == "transient":
            raise TransientError("meter busy")
        if step == "disconnect":
            raise Disconnected("cable pulled")
        if step == "crash":
            raise RuntimeError("driver bug")
        self.n += 1
        return {self.spec.name: {"power_w": float(self.n)}}

    def close(self):
        pass


class StreamingSource:
    mode = "streaming"
    period_s = None

    def __init__(self, spec):
        self.spec = spec
        self.runs = 0

    def open(self, ctx):
        return [StreamInfo(self.spec.name, "hardware", "stream", "mem", "wall", None,
                           (Key("power_w", "W", "instant"), Key("voltage_v", "V")))]

    def run(self, ctx):
        self.runs += 1
        i = 0
        while not ctx.stop.wait(0.005):
            i += 1
            if self.runs == 1 and i == 20:
                raise Disconnected("port vanished")
            if i % 7 == 0:
                ctx.count_error(self.spec.name, "checksum", "bad frame")
                continue
            ctx.emit(self.spec.name, {"power_w": 5.0})  # voltage missing: stored as NaN

    def close(self):
        pass


def _capture(tmp_path, registry, specs, duration_s=1.0):
    out = tmp_path / "run.h5"
    cfg = CaptureConfig(software=NO_SOFTWARE, meters=tuple(parse_meter_spec(s, registry.names()) for s in specs))
    notes = io.StringIO()
    code = run_capture(CaptureRequest(config=cfg, duration_s=duration_s, output=str(out), live=False,
                                      registry=registry, notes=notes))
    return code, out, notes.getvalue()


def test_transient_disconnect_and_crash_become_gaps_while_others_continue(tmp_path):
    script = ["ok"] * 10 + ["transient"] * 3 + ["ok"] * 10 + ["disconnect"] + ["ok"] * 10 + ["crash"] + ["ok"] * 5
    registry = (Registry()
                .with_driver("scripted", lambda spec: ScriptedSource(spec, script, fail_opens=2))
                .with_driver("stream", StreamingSource))
    code, out, notes = _capture(tmp_path, registry, ["scripted:x?period_s=0.01&name=flaky", "stream:y?name=st",
                                                     "synthetic:constant:7?period_s=0.01&name=steady"],
                                 duration_s=2.5)
    assert code == 0
    with open_run(out) as run:
        assert run.complete
        ev = [(e.name, e.stream) for e in run.events]
        flaky_events = [n for n, s in ev if s == "flaky"]
        assert flaky_events.count("gap_start") == 3 and flaky_events.count("gap_end") == 3
        assert ("reconnect", "flaky") in ev and ("reconnect", "st") in ev
        errs = [e for e in run.events if e.name == "error" and e.stream == "flaky"]
        kinds = {e.detail.get("kind") for e in errs}
        assert {"transient", "disconnected", "reconnect_failed", "RuntimeError"} <= kinds
        flaky = run.stream("flaky")
        assert flaky.error_counts == {"RuntimeError": 1, "transient": 3}
        # readings after each failure continue the sequence: nothing recorded twice or lost
        p = flaky.data["power_w"]
        assert np.array_equal(p, np.arange(1, len(p) + 1))
        steady = run.stream("steady")
        # unaffected: no event or error of its own, and it records on through the flaky meter's
        # reconnect (>= 0.4 s of backoff); not a bound on its intervals, which a loaded
        # machine's scheduler sets
        assert steady.error_counts == {} and not any(s == "steady" for _, s in ev)
        starts = [e.t for e in run.events if e.name == "gap_start" and e.stream == "flaky"]
        ends = [e.t for e in run.events if e.name == "gap_end" and e.stream == "flaky"]
        longest = max(zip(starts, ends), key=lambda gap: gap[1] - gap[0])
        assert longest[1] - longest[0] >= 0.4
        assert np.count_nonzero((steady.t > longest[0]) & (steady.t < longest[1])) >= 1
        assert len(steady.t) > 80
        st = run.stream("st")
        assert st.error_counts["checksum"] >= 3
        assert np.all(np.isnan(st.data["voltage_v"])) and np.all(st.data["power_w"] == 5.0)
    assert "wrote" in notes


def test_source_that_cannot_open_refuses_the_capture_and_writes_nothing(tmp_path):
    class Broken(ScriptedSource):
        def open(self, ctx):
            raise SourceUnavailable("port /dev/ttyUSB9 does not exist; plug the meter in")

    registry = Registry().with_driver("broken", lambda spec: Broken(spec, []))
    with pytest.raises(CaptureError, match="ttyUSB9 does not exist"):
        _capture(tmp_path, registry, ["broken:/dev/ttyUSB9", "synthetic:constant:1"])
    assert not list(tmp_path.iterdir())


def test_driver_option_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"^-m 'synthetic:constant:1\?nope=1': unknown option 'nope' "
                                          r"\(accepted: "):
        _capture(tmp_path, Registry(), ["synthetic:constant:1?nope=1"])


def test_required_software_meter_missing_is_an_error_auto_is_a_note(tmp_path):
    def unavailable(spec):
        raise SourceUnavailable("no NVIDIA driver loaded")

    registry = Registry().with_driver("nvml", unavailable).with_driver("rapl", unavailable)
    cfg = CaptureConfig(meters=(parse_meter_spec("synthetic:constant:1", registry.names()),))
    notes = io.StringIO()
    code = run_capture(CaptureRequest(config=cfg, duration_s=0.2, output=str(tmp_path / "a.h5"),
                                      live=False, registry=registry, notes=notes))
    assert code == 0 and "nvml not used: no NVIDIA driver loaded" in notes.getvalue()
    cfg = CaptureConfig(software=SoftwareConfig(nvml=True, rapl=False))
    with pytest.raises(CaptureError, match="nvml: no NVIDIA driver loaded"):
        run_capture(CaptureRequest(config=cfg, duration_s=0.2, output=str(tmp_path / "b.h5"),
                                   live=False, registry=registry))


def test_bounded_queue_counts_drops(tmp_path):
    """A stalled writer must not grow memory without bound: readings beyond the queue are
    counted as dropped per stream."""
    from hwval.runfile.documents import Start
    from hwval.capture.recorder import Recorder
    from hwval.sources.synthetic import SyntheticSource

    gate = threading.Event()

    def slow_subscriber(doc):
        if isinstance(doc, Page):
            gate.wait(60.0)  # released by the test; the bound only ends a broken run

    start = Start("id", "now", "host", [], time.monotonic_ns(), time.time_ns(), "{}", "0")
    rec = Recorder(start, [slow_subscriber], queue_size=50)
    rec.add_source("s", SyntheticSource(SourceSpec("synthetic", "constant:1", "s", 0.001, {})))
    rec.start()
    (runner,) = rec.runners
    # 500 reads while the subscriber stalls, counted rather than slept for: a loaded machine
    # may hold the source thread back for most of any fixed sleep
    deadline = time.monotonic() + 60
    while runner.lateness.count < 500:
        assert time.monotonic() < deadline, f"{runner.lateness.count} reads in 60 s"
        time.sleep(0.01)
    gate.set()
    stop = rec.finish(0)
    stats = stop.stream_stats["s"]
    # room for 50 in the queue: most were dropped, and every read is accounted for, either
    # stored or counted as dropped
    assert stats["dropped"] > 100
    assert stats["readings"] + stats["dropped"] == runner.lateness.count


def test_malformed_readings_are_counted_and_do_not_stop_the_capture(tmp_path):
    """A driver bug (a reading that is not numbers, a key it did not declare, read() returning
    None) costs that reading's values, never the neighbours, the dispatcher or the source."""

    class Sloppy(ScriptedSource):
        def read(self):
            self.n += 1
            if self.n % 10 == 3:
                return {self.spec.name: {"power_w": "n/a"}}
            if self.n % 10 == 6:
                return {self.spec.name: {"power_w": float(self.n), "volts": 230.0}}
            if self.n % 10 == 9:
                return None
            return {self.spec.name: {"power_w": float(self.n)}}

    registry = Registry().with_driver("sloppy", lambda spec: Sloppy(spec, []))
    code, out, _ = _capture(tmp_path, registry, ["sloppy:x?period_s=0.01&name=s"], duration_s=1.0)
    assert code == 0
    with open_run(out) as run:
        assert run.complete
        s = run.stream("s")
        p = s.data["power_w"]
        n_bad = np.count_nonzero(np.isnan(p))
        assert n_bad >= 5 and s.error_counts["bad_reading"] == n_bad
        good = p[~np.isnan(p)]
        assert np.all(good % 10 != 3) and np.all(np.diff(good) > 0)
        assert s.error_counts["undeclared_key"] >= 1
        assert s.error_counts["AttributeError"] >= 5  # read() returned None: a gap, then on


def test_signals_before_the_run_phase_are_held_and_during_the_finish_ignored(tmp_path, capsys):
    """The run file is never left half-written by a signal: one arriving between the start of
    the recorder and the workload waits for it; one arriving while the file is finished is
    reported and ignored."""
    import os
    import signal
    import sys

    from hwval.runfile.documents import Stop

    def sigint_on_stop(doc):
        if isinstance(doc, Stop):
            os.kill(os.getpid(), signal.SIGINT)

    def started(rec):
        rec.subscribers.append(sigint_on_stop)
        os.kill(os.getpid(), signal.SIGTERM)  # before the workload exists

    registry = Registry()
    cfg = CaptureConfig(software=NO_SOFTWARE,
                        meters=(parse_meter_spec("synthetic:constant:1?period_s=0.01", registry.names()),))
    out = tmp_path / "run.h5"
    code = run_capture(CaptureRequest(config=cfg, command=[sys.executable, "-c", "import time; time.sleep(30)"],
                                      output=str(out), live=False, registry=registry, notes=io.StringIO(),
                                      on_started=started))
    assert code == 128 + signal.SIGTERM  # the held SIGTERM reached the workload
    assert "SIGINT ignored: finishing the run file" in capsys.readouterr().err
    with open_run(out) as run:
        assert run.complete and run.attrs["exit_code"] == code
        names = [e.name for e in run.events if e.name != "signal"]
        assert names == ["workload_start", "workload_end"]
        (sig,) = [e for e in run.events if e.name == "signal"]  # its own type, not an error
        assert sig.detail["signal"] == "SIGTERM"


def test_journal_ignores_a_torn_final_record(tmp_path):
    registry = Registry()
    out = tmp_path / "run.h5"
    cfg = CaptureConfig(software=NO_SOFTWARE, meters=(parse_meter_spec("synthetic:constant:3?period_s=0.01", registry.names()),))
    from hwval.runfile.journal import JournalWriter

    # keep the journal: capture with a writer that fails so the session preserves it
    class Keep(JournalWriter):
        def discard(self):
            pass

    import hwval.capture.session as session
    orig = session.JournalWriter
    session.JournalWriter = Keep
    try:
        run_capture(CaptureRequest(config=cfg, duration_s=0.5, output=str(out), live=False,
                                   registry=registry, notes=io.StringIO()))
    finally:
        session.JournalWriter = orig
    jpath = journal_path(out)
    data = jpath.read_bytes()
    full = list(read_journal(jpath))
    jpath.write_bytes(data[:-7])  # cut into the stop record
    torn = list(read_journal(jpath))
    assert len(torn) == len(full) - 1
    pages = [d for d in torn if isinstance(d, Page)]
    assert sum(len(p.t) for p in pages) >= 40
