"""One capture from start to finish: resolve the output, open every source, start the recorder
and its subscribers, run the workload (or wait ``duration_s``), and finish the file.

Everything that can be refused is refused before the run file exists: a bad output path, an
existing file without ``force``, a command that cannot be found, a meter that cannot open.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from hwval import __version__
from hwval.runfile.documents import Start
from hwval.capture import pulse_blocks
from hwval.capture.hdf5_writer import HDF5Writer
from hwval.runfile.claim import OutputClaim, OutputRefused, claim_output
from hwval.runfile.journal import JournalWriter, journal_path
from hwval.runfile.schema import EventName
from hwval.capture.live_view import LiveView
from hwval.capture.marker_server import MarkerServer
from hwval.capture.recorder import Recorder
from hwval.capture import workload as _workload
from hwval.capture.workload import CommandError, Workload, resolve_command
from hwval.clock import now_ns
from hwval.config import DEFAULT_OUTPUT, CaptureConfig, ConfigError, expand_output
from hwval.sources.base import SourceSpec, SourceUnavailable
from hwval.sources.emulated import emulated_note
from hwval.sources.options import located
from hwval.sources.registry import Registry

#: Exit code when the workload succeeded but the capture itself failed (e.g. disk full).
CAPTURE_FAILED = 1


class CaptureError(Exception):
    """The capture cannot start; the message is one line naming what to fix."""


@dataclass
class CaptureRequest:
    config: CaptureConfig
    command: list[str] = field(default_factory=list)
    duration_s: float | None = None
    output: str | None = None
    force: bool = False
    #: None: live view when stdout is a TTY.
    live: bool | None = None
    registry: Registry = field(default_factory=Registry)
    #: Where notes (skipped software meters, summary) go.
    notes: TextIO = field(default_factory=lambda: sys.stderr)
    #: Called with the Recorder once running (tests and benchmarks read its statistics).
    on_started: Callable[[Recorder], None] | None = None
    #: ``--sync-pulses``: a pulse block before and after the workload (see capture.pulse_blocks);
    #: ``pulse_chip_s`` None: the chip the slowest meter needs.
    sync_pulses: bool = False
    pulse_chip_s: float | None = None


def resolve_output(request: CaptureRequest, run_id: str) -> OutputClaim:
    """Expand the output template and claim the file (created exclusively, with its journal)."""
    template = request.output or request.config.output
    path = Path(expand_output(template, run_id))
    generated = any(p in template for p in ("{date}", "{time}", "{run_id}"))
    try:
        _check_parent(path, request, template)
        return claim_output(path, force=request.force, generated=generated)
    except PermissionError:
        raise CaptureError(f"output {path}: a folder on the way is not accessible by this user; "
                           "choose another -o") from None
    except OutputRefused as exc:
        raise CaptureError(str(exc)) from None


def _check_parent(path: Path, request: CaptureRequest, template: str) -> None:
    parent = path.parent
    if parent.exists():
        return
    if request.output is None and template == DEFAULT_OUTPUT:
        # The default template writes under runs/: create it, as the operator did not choose.
        parent.mkdir(parents=True, exist_ok=True)
        return
    if request.output is None and request.config.path:
        # A config's output is not created silently: a typo there would scatter runs anywhere.
        raise CaptureError(f"output {path} (output in {request.config.path}): folder {parent} does not "
                           f"exist; create it (mkdir -p {parent}) or change output in {request.config.path}")
    # -o: the claim's exclusive create names the problem (missing folder, a file on the way)


def software_specs(config: CaptureConfig) -> list[tuple[SourceSpec, bool]]:
    """(spec, required) for the software meters; auto (None) ones are not required."""
    sw = config.software
    out = []
    if sw.nvml is not False:
        out.append((SourceSpec("nvml", "", "nvml", sw.nvml_period_s, {}), sw.nvml is True))
    if sw.rapl is not False:
        out.append((SourceSpec("rapl", sw.rapl_root, "rapl", sw.rapl_period_s, {}), sw.rapl is True))
    return out


def run_capture(request: CaptureRequest) -> int:
    """Run one capture; returns the process exit code (the workload's, see README)."""
    run_id = str(uuid.uuid4())
    command = list(request.command)
    if command:
        resolve_command(command)  # CommandError before any file exists
    elif request.duration_s is None:
        raise CaptureError("nothing to capture: give a command after -- or --duration S")
    if request.duration_s is not None and not 0 < request.duration_s < math.inf:
        raise CaptureError(f"--duration must be a finite number of seconds > 0, got {request.duration_s}")
    if request.sync_pulses and request.pulse_chip_s is not None:
        try:
            pulse_blocks.chip_length_s([], request.pulse_chip_s)
        except pulse_blocks.PulseOptionError as exc:
            raise CaptureError(str(exc)) from None
    claim = resolve_output(request, run_id)
    output = claim.path

    origin_ns = now_ns()
    origin_rt = time.time_ns()
    start = Start(run_id=run_id, created_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(),
                  hostname=socket.gethostname(), command=command, origin_monotonic_ns=origin_ns,
                  origin_realtime_ns=origin_rt, config_json=request.config.to_json(),
                  hwval_version=__version__)
    journal = JournalWriter(str(output), fd=claim.journal_fd)
    # The journal comes first: it is the write-ahead copy of every page.
    writer = HDF5Writer(str(output))
    subscribers: list = [journal, writer]
    live = request.live if request.live is not None else LiveView.enabled_for(sys.stdout)
    if live:
        subscribers.append(LiveView(lambda name: recorder.stats[name].dropped))
    recorder = Recorder(start, subscribers)
    with SignalPolicy() as signals:  # until the recorder starts, a signal aborts (KeyboardInterrupt)
        try:
            _open_sources(recorder, request)
        except BaseException:
            claim.release()  # nothing was recorded: leave no file behind
            raise
        try:
            markers = MarkerServer(recorder.put_event, recorder.count_error, origin_ns=origin_ns)
        except OSError as exc:
            recorder.close_sources()
            claim.release()
            raise CaptureError(f"cannot create the marker socket under {tempfile.gettempdir()}: {exc}; "
                               "set TMPDIR to a short, writable folder") from None
        except BaseException:
            recorder.close_sources()
            claim.release()
            raise
        # From here the run file exists: a signal never interrupts the code that writes it.
        # One arriving before the run phase is held and handed to it.
        signals.hold()
        try:
            recorder.start()
            markers.start()
            if request.on_started is not None:
                request.on_started(recorder)
            pulses = pulse_blocks.plan(recorder.infos.values(), request.pulse_chip_s) if request.sync_pulses else None
            exit_code, reason = _run_phase(command, request.duration_s, recorder, markers, signals, pulses)
            if not reason and signals.forwarded:
                # the operator ended the run through the workload: it must not read as a full one
                reason = f"stopped by {signals.forwarded[0]} (forwarded to the workload)"
        except CommandError:
            # Popen failed after all (a race with the checks above): leave no half-written file.
            _finish(recorder, markers, signals, exit_code=-1, complete=False,
                    reason="command could not start")
            output.unlink(missing_ok=True)
            journal.discard()
            raise
        except BaseException as exc:
            # Unexpected: still finish the file (it holds good data), flagged incomplete.
            _finish(recorder, markers, signals, exit_code=-1, complete=False,
                    reason=f"capture aborted: {type(exc).__name__}: {exc}")
            journal.close()
            raise
        _finish(recorder, markers, signals, exit_code=exit_code, complete=True, reason=reason)
    died = [f"source {r.label} stopped: {r.died}" for r in recorder.runners if r.died]
    if recorder.subscriber_errors and writer.failure is None and writer.file is None:
        # Only the journal (or the live view) failed: the run file was written and closed whole,
        # so the journal, which holds less, must not be offered for a recovery.
        journal.discard()
        print(f"hwval: error: {output} holds the whole run, but the capture had errors (the run "
              "is marked incomplete):", file=request.notes)
        for msg in recorder.subscriber_errors + died:
            print(f"  {msg}", file=request.notes)
        return exit_code or CAPTURE_FAILED
    if recorder.subscriber_errors:
        journal.close()
        print(f"hwval: error: the capture failed writing {output}; the run is marked incomplete:",
              file=request.notes)
        for msg in recorder.subscriber_errors + died:
            print(f"  {msg}", file=request.notes)
        print(f"  the crash journal {journal_path(output)} is kept; `hwval recover {output}` "
              "rebuilds what it holds", file=request.notes)
        return exit_code or CAPTURE_FAILED
    journal.discard()
    if died:
        print(f"hwval: error: {output} is incomplete (a gap to the end of the run):", file=request.notes)
        for msg in died:
            print(f"  {msg}", file=request.notes)
        return exit_code or CAPTURE_FAILED
    total = sum(s.readings for s in recorder.stats.values())
    n = len(recorder.infos)
    print(f"hwval: wrote {output} ({n} stream{'s' * (n != 1)}, {total} reading{'s' * (total != 1)})",
          file=request.notes)
    note = emulated_note(name for name, info in recorder.infos.items() if info.emulated)
    if note:
        print(f"hwval: {note}", file=request.notes)
    return exit_code


class SignalPolicy:
    """One handler for SIGINT, SIGTERM and SIGHUP over the whole capture, so that no signal
    ever interrupts the code writing the run file.

    It starts out raising ``KeyboardInterrupt`` (opening meters may hang on a dead instrument:
    Ctrl-C must abort it); :meth:`during` gives the action of each later phase (forward to the
    workload, end a ``--duration``, then, while the file is finished, ignore); :meth:`hold` keeps
    the signals that come between two phases for the next one. Installed only in
    the main thread (Python delivers signals there); elsewhere it does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self._action: Callable[[int], None] = self._interrupt
        self._held: list[int] = []
        self._previous: dict[int, object] = {}
        #: Names of the signals forwarded to the workload, in order (the run's stop reason).
        self.forwarded: list[str] = []
        #: Names of every signal that arrived, in order, whatever the phase did with it: a phase
        #: compares its length before and after to know whether the operator asked to stop.
        self.received: list[str] = []

    def __enter__(self) -> "SignalPolicy":
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handler) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)

    def hold(self, pending: list[int] | None = None) -> None:
        """Keep signals for the next :meth:`during` instead of acting on them; ``pending`` (ones
        the ending phase took but did not act on) come first."""
        self._held[:0] = pending or []
        self._action = self._held.append

    def during(self, action: Callable[[int], None]) -> None:
        """Act on signals with ``action(signum)`` from now on, first on any held ones."""
        self._action = action
        while self._held:
            action(self._held.pop(0))

    def _handler(self, signum: int, _frame: object) -> None:
        self.received.append(_signame(signum))
        self._action(signum)

    @staticmethod
    def _interrupt(signum: int) -> None:
        raise KeyboardInterrupt(_signame(signum))


def _signame(signum: int) -> str:
    return signal.Signals(signum).name


#: While the file is being finished, this many signals abandon the finish (the journal, written
#: ahead, holds everything: the run is then recovered like after a kill).
ABANDON_AFTER_SIGNALS = 3


def _finish(recorder: Recorder, markers: MarkerServer, signals: SignalPolicy,
            exit_code: int, complete: bool, reason: str) -> None:
    ignored: list[str] = []

    def finishing(signum: int) -> None:
        ignored.append(_signame(signum))
        if len(ignored) >= ABANDON_AFTER_SIGNALS:
            print(f"hwval: abandoning the finish after {len(ignored)} signals; the crash journal is "
                  "kept: run `hwval recover` on the run file", file=sys.stderr, flush=True)
            os._exit(exit_code if exit_code > 0 else CAPTURE_FAILED)
        print(f"hwval: {ignored[-1]} ignored: finishing the run file (send it "
              f"{ABANDON_AFTER_SIGNALS - len(ignored)} more time(s) to abandon)", file=sys.stderr, flush=True)

    signals.during(finishing)
    markers.close()
    recorder.finish(exit_code=exit_code, complete=complete, reason=reason,
                    marks_lost=markers.lost, marks_refused=markers.refused)


def _run_phase(command: list[str], duration_s: float | None, recorder: Recorder, markers: MarkerServer,
               signals: SignalPolicy, pulses: pulse_blocks.PulsePlan | None = None) -> tuple[int, str]:
    """Run the workload, or wait ``duration_s``: returns (exit code, stop reason). With
    ``pulses``, a sync-pulse block before and after it."""
    if pulses is not None:
        return _run_with_pulses(command, duration_s, recorder, markers, signals, pulses)
    if command:
        return _run_command(command, recorder, markers, signals, duration_s)
    return 0, _wait_duration(duration_s or 0.0, signals)


def _run_with_pulses(command: list[str], duration_s: float | None, recorder: Recorder, markers: MarkerServer,
                     signals: SignalPolicy, pulses: pulse_blocks.PulsePlan) -> tuple[int, str]:
    runner = pulse_blocks.PulseRunner(pulses, recorder.infos.values(), markers.record)
    got: list[int] = []

    def stop_pulses(signum: int) -> None:
        # A signal during the pulses ends them: the operator wants to stop, not wait a block.
        got.append(signum)
        runner.stop.set()

    try:
        signals.during(stop_pulses)
        if not runner.block():
            why = f"stopped by {_signame(got[0])} during the sync pulses before the workload"
            return (128 + got[0], f"{why} (the workload did not run)") if command else (0, why)
        # A signal from here until the workload's phase takes over is the workload's: held for
        # it, with any that came as the block ended (those count as asking to stop, too).
        before = len(signals.received) - len(got)
        signals.hold(got[:])
        got.clear()
        code, reason = _run_phase(command, duration_s, recorder, markers, signals)
        if len(signals.received) > before:
            # The operator asked to stop (a Ctrl-C forwarded to the workload, or one ending a
            # --duration wait): a closing block would keep them waiting through its settling and
            # chips. A --duration that runs out is no such request (no signal came): it plays.
            return code, _closing_block_skipped(recorder, signals.received[before], reason, command)
        signals.during(stop_pulses)
        if runner.block():
            runner.tail()
        if got:
            why = f"stopped by {_signame(got[0])} during the sync pulses after the workload"
            reason = f"{reason}; {why}" if reason else why
        return code, reason
    finally:
        runner.close()


def _closing_block_skipped(recorder: Recorder, signame: str, reason: str, command: list[str]) -> str:
    """Record that the closing block was skipped for ``signame``; returns the stop reason."""
    recorder.put_event(EventName.SIGNAL, "", now_ns(), {"signal": signame,
                                                        "action": "skipped the closing sync-pulse block"})
    why = f"stopped by {signame} (forwarded to the workload)" if command else f"stopped by {signame}"
    if why not in reason:  # a --duration reason, or none yet: the signal must show too
        reason = f"{reason}; {why}" if reason else why
    return f"{reason}; the closing sync-pulse block was skipped"


def _open_sources(recorder: Recorder, request: CaptureRequest) -> None:
    # Every meter's options are checked (its source built, nothing opened) before any software
    # meter is tried: a typo is then the only line printed, not the last after NVML/RAPL notes.
    meters = []
    for spec in request.config.meters:
        try:
            meters.append((spec, request.registry.create(spec)))
        except ValueError as exc:  # UnknownDriver, an option error: the spec must change
            raise ConfigError(located(spec, exc)) from None
    try:
        for spec, required in software_specs(request.config):
            try:
                source = request.registry.create(spec)
                recorder.add_source(spec.name, source)
            except (SourceUnavailable, ImportError) as exc:
                if required:
                    raise CaptureError(f"{spec.driver}: {exc}") from None
                print(f"hwval: note: {spec.driver} not used: {exc}", file=request.notes)
        for spec, source in meters:
            try:
                recorder.add_source(spec.name, source)
            except SourceUnavailable as exc:
                raise CaptureError(f"meter {spec.name!r} ({spec.driver}:{spec.resource}): {exc}") from None
            except ValueError as exc:
                raise ConfigError(located(spec, exc)) from None
    except BaseException:
        recorder.close_sources()
        raise
    if not recorder.runners:
        recorder.close_sources()
        raise CaptureError("no source to record: name a meter with -m DRIVER:RESOURCE or -c lab.toml "
                           "(no NVML GPU or RAPL domain was found here)")


def _run_command(command: list[str], recorder: Recorder, markers: MarkerServer, signals: SignalPolicy,
                 duration_s: float | None) -> tuple[int, str]:
    """Run the workload to its end: (its exit code, the stop reason when --duration ended it)."""
    workload = Workload(command, markers.env)

    def forward(signum: int) -> None:
        # Its own event type: an operator's Ctrl-C is how a run ends, not a fault.
        recorder.put_event(EventName.SIGNAL, "", now_ns(), {"signal": _signame(signum),
                                                            "action": "forwarded to the workload"})
        signals.forwarded.append(_signame(signum))
        workload.forward(signum)

    signals.during(forward)
    # Stamped before the child exists, so no mark of the workload can precede its start.
    t_start = now_ns()
    pid = workload.start()
    recorder.put_event(EventName.WORKLOAD_START, "", t_start, {"command": command, "pid": pid})
    deadline = time.monotonic() + duration_s if duration_s is not None else None
    timed_out: list[bool] = []

    def duration_reached() -> None:
        timed_out.append(True)
        recorder.put_event(EventName.ERROR, "", now_ns(),
                           {"kind": "duration", "message": "--duration reached; workload terminated"})

    code = workload.wait(deadline, on_timeout=duration_reached)
    # The leader is gone; its leftover children (if any) must not outlive the capture.
    ended = workload.end_group()
    # Stamped after the children are gone, so every mark they sent precedes this.
    detail: dict = {"exit_code": code}
    if ended:
        detail["leftover_processes_ended_by"] = ended
    recorder.put_event(EventName.WORKLOAD_END, "", now_ns(), detail)
    # The workload did not run its course: the run must not read as a full one (a --duration
    # without a command that runs out is the planned end, and has no stop reason).
    if not timed_out:
        return code, ""
    # Say which: "terminated" tells the reader the workload ran its SIGTERM clean-up (a
    # checkpoint, a flush); one that ignored SIGTERM and was SIGKILLed ran none.
    ended = (f"the workload was killed with SIGKILL, {_workload.TERM_GRACE_S:g} s after SIGTERM"
             if workload.killed_after_grace and code == 128 + signal.SIGKILL
             else "the workload was terminated")
    return code, f"stopped by --duration ({duration_s:g} s reached; {ended})"


def _wait_duration(duration_s: float, signals: SignalPolicy) -> str:
    """Wait for the duration or a SIGINT/SIGTERM/SIGHUP; returns the stop reason."""
    stop = threading.Event()
    got: list[str] = []

    def end_early(signum: int) -> None:
        got.append(_signame(signum))
        stop.set()

    signals.during(end_early)
    stop.wait(duration_s)
    return f"stopped by {got[0]}" if got else ""
