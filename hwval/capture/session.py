"""One capture from start to finish: resolve the output, open every source, start the recorder
and its subscribers, run the workload (or wait ``duration_s``), and finish the file.

Everything that can be refused is refused before the run file exists: a bad output path, an
existing file without ``force``, a command that cannot be found, a meter that cannot open.
"""

from __future__ import annotations

import datetime as _dt
import os
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from hwval import __version__
from hwval.capture.documents import Start
from hwval.capture.hdf5_writer import HDF5Writer
from hwval.capture.journal import JournalWriter, journal_path
from hwval.capture.live_view import LiveView
from hwval.capture.marker_server import MarkerServer
from hwval.capture.recorder import Recorder
from hwval.capture.workload import CommandError, Workload, resolve_command
from hwval.clock import now_ns
from hwval.config import CaptureConfig, ConfigError, expand_output
from hwval.sources.base import SourceSpec, SourceUnavailable
from hwval.sources.registry import Registry, UnknownDriver

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


def resolve_output(request: CaptureRequest, run_id: str) -> Path:
    template = request.output or request.config.output
    path = Path(expand_output(template, run_id))
    try:
        return _check_output(path, request)
    except PermissionError:
        raise CaptureError(f"output {path}: a folder on the way is not accessible by this user; "
                           "choose another -o") from None


def _check_output(path: Path, request: CaptureRequest) -> Path:
    if path.exists() and not request.force:
        raise CaptureError(f"output {path} already exists; choose another -o or pass --force to overwrite")
    if path.is_dir():
        raise CaptureError(f"output {path} is a directory; give a file name such as {path}/run.h5")
    parent = path.parent
    if request.output is None and not parent.exists():
        # The default template writes under runs/: create it, as the operator did not choose.
        parent.mkdir(parents=True, exist_ok=True)
    if not parent.is_dir():
        raise CaptureError(f"output {path}: directory {parent} does not exist; create it or choose another -o")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CaptureError(f"output {path}: directory {parent} is not writable by this user; choose another -o")
    return path


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
    output = resolve_output(request, run_id)
    command = list(request.command)
    if command:
        resolve_command(command)  # CommandError before any file exists
    elif request.duration_s is None:
        raise CaptureError("nothing to capture: give a command after -- or --duration S")
    if request.duration_s is not None and not request.duration_s > 0:
        raise CaptureError(f"--duration must be > 0 seconds, got {request.duration_s}")

    origin_ns = now_ns()
    origin_rt = time.time_ns()
    start = Start(run_id=run_id, created_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(),
                  hostname=socket.gethostname(), command=command, origin_monotonic_ns=origin_ns,
                  origin_realtime_ns=origin_rt, config_json=request.config.to_json(),
                  hwval_version=__version__)
    journal = JournalWriter(str(output))
    # The journal comes first: it is the write-ahead copy of every page.
    subscribers: list = [journal, HDF5Writer(str(output))]
    live = request.live if request.live is not None else LiveView.enabled_for(sys.stdout)
    if live:
        subscribers.append(LiveView(lambda name: recorder.stats[name].dropped))
    recorder = Recorder(start, subscribers)
    _open_sources(recorder, request)

    markers = MarkerServer(recorder.put_event, recorder.count_error)
    recorder.start()
    markers.start()
    if request.on_started is not None:
        request.on_started(recorder)
    exit_code = 0
    reason = ""
    try:
        if command:
            exit_code = _run_command(command, recorder, markers, request.duration_s)
        else:
            reason = _wait_duration(request.duration_s or 0.0)
    except CommandError:
        # Popen failed after all (a race with the checks above): leave no half-written file.
        markers.close()
        recorder.finish(exit_code=-1, complete=False, reason="command could not start")
        output.unlink(missing_ok=True)
        journal.discard()
        raise
    markers.close()
    recorder.finish(exit_code=exit_code, complete=True, reason=reason)
    if recorder.subscriber_errors:
        print(f"hwval: the capture had errors writing {output}:", file=request.notes)
        for msg in recorder.subscriber_errors:
            print(f"  {msg}", file=request.notes)
        print(f"  the crash journal {journal_path(output)} is kept; try `hwval recover {output}`",
              file=request.notes)
        return exit_code or CAPTURE_FAILED
    journal.discard()
    total = sum(s.readings for s in recorder.stats.values())
    print(f"hwval: wrote {output} ({len(recorder.infos)} streams, {total} readings)", file=request.notes)
    return exit_code


def _open_sources(recorder: Recorder, request: CaptureRequest) -> None:
    try:
        for spec, required in software_specs(request.config):
            try:
                source = request.registry.create(spec)
                recorder.add_source(spec.name, source)
            except (SourceUnavailable, ImportError) as exc:
                if required:
                    raise CaptureError(f"{spec.driver}: {exc}") from None
                print(f"hwval: note: {spec.driver} not used: {exc}", file=request.notes)
        for spec in request.config.meters:
            try:
                source = request.registry.create(spec)
            except UnknownDriver as exc:
                raise ConfigError(f"meter {spec.name!r}: {exc}") from None
            except ValueError as exc:
                raise ConfigError(f"meter {spec.name!r}: {exc}") from None
            try:
                recorder.add_source(spec.name, source)
            except SourceUnavailable as exc:
                raise CaptureError(f"meter {spec.name!r} ({spec.driver}:{spec.resource}): {exc}") from None
            except ValueError as exc:
                raise ConfigError(f"meter {spec.name!r}: {exc}") from None
    except BaseException:
        recorder.close_sources()
        raise
    if not recorder.runners:
        recorder.close_sources()
        raise CaptureError("no source to record: name a meter with -m DRIVER:RESOURCE or -c lab.toml "
                           "(no NVML GPU or RAPL domain was found here)")


def _run_command(command: list[str], recorder: Recorder, markers: MarkerServer,
                 duration_s: float | None) -> int:
    workload = Workload(command, markers.env)
    previous = {}

    def handler(signum: int, _frame: object) -> None:
        recorder.put_event("error", "", now_ns(), {"kind": "signal", "signal": signal.Signals(signum).name,
                                                   "message": "forwarded to the workload"})
        workload.forward(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, handler)
    try:
        pid = workload.start()
        recorder.put_event("workload_start", "", now_ns(), {"command": command, "pid": pid})
        deadline = time.monotonic() + duration_s if duration_s is not None else None
        code = workload.wait(deadline, on_timeout=lambda: recorder.put_event(
            "error", "", now_ns(), {"kind": "duration", "message": "--duration reached; workload terminated"}))
        recorder.put_event("workload_end", "", now_ns(), {"exit_code": code})
        return code
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _wait_duration(duration_s: float) -> str:
    """Wait for the duration or a SIGINT/SIGTERM/SIGHUP; returns the stop reason."""
    stop = threading.Event()
    got: list[str] = []

    def handler(signum: int, _frame: object) -> None:
        got.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        stop.wait(duration_s)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return f"stopped by {got[0]}" if got else ""
