"""Shared helpers for the VISA driver tests (imported by test_wt300*, test_hmc8015*, test_n6705*),
and tests of the emulators' SCPI parser they all rely on.

Drivers run against the real recorder (``hwval.capture.recorder.Recorder``) with an in-memory
subscriber, through pyvisa-py over TCP to an in-process :class:`ScpiServer`, or through
pyvisa-sim with the shipped YAML definitions.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from hwval.runfile.documents import Event, Page, Start
from hwval.capture.recorder import Recorder
from hwval.emulators.scpi_server import (Faults, Instrument, ScpiServer, match_header,
                                         parse_message, split_arguments)
from hwval.sources.testing import RecordingContext
from hwval.sources.testing import poll as poll_source


def poll(source, ctx: RecordingContext, duration_s: float) -> list[tuple[int, dict[str, float]]]:
    """Call ``read()`` on ``source.period_s`` deadlines for ``duration_s``; (receipt ns, values)."""
    return [(t_ns, values) for t_ns, _, values in poll_source(source, ctx, duration_s)]


def run_polled(source, duration_s: float, min_readings: int = 0):
    """Open ``source``, :func:`poll` it for ``duration_s``, then close it for good (``stop`` set,
    as the recorder does at the end). Returns (context, stream infos, readings).

    With ``min_readings``, it polls on in 0.5 s steps until that many readings are in
    (``duration_s`` is then the upper bound): a test waits on what it needs, not on how fast a
    loaded machine serves it."""
    ctx = RecordingContext()
    infos = source.open(ctx)
    if min_readings:
        readings, give_up = [], time.monotonic() + duration_s
        while len(readings) < min_readings and time.monotonic() < give_up:
            readings += poll(source, ctx, 0.5)
    else:
        readings = poll(source, ctx, duration_s)
    ctx.stop.set()
    source.close()
    return ctx, infos, readings


@dataclass
class Capture:
    """What the real recorder produced for one source."""

    t_ns: np.ndarray
    values: dict[str, np.ndarray]
    events: list[Event]
    stats: dict[str, Any]
    #: The run's origin (monotonic ns): an event at ``e.t`` s happened at ``origin_ns + e.t * 1e9``.
    origin_ns: int = 0

    def names(self) -> list[str]:
        return [e.name for e in self.events]


def record(source, duration_s: float, during=None, name: str = "wall", until=None) -> Capture:
    """Run ``source`` under the real recorder for ``duration_s``; ``during(t_s)`` is called
    about every 50 ms (to switch faults on and off). With ``until(capture_so_far)``, the run ends
    as soon as it returns True (``duration_s`` is then only an upper bound): a test waits on
    what it needs to see, not on how fast a loaded machine gets there."""
    origin = time.monotonic_ns()
    docs: list = []
    rec = Recorder(Start("test", "now", "host", [], origin, time.time_ns(), "{}", "0"), [docs.append])
    rec.add_source(name, source)
    rec.start()
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < duration_s:
        if during is not None:
            during(elapsed)
        if until is not None and until(_collect(origin, list(docs), name, {})):
            break
        time.sleep(0.05)
    stop = rec.finish(0)
    return _collect(origin, docs, name, stop.stream_stats.get(name, {}))


def _collect(origin: int, docs: list, name: str, stats: dict[str, Any]) -> Capture:
    pages = [d for d in docs if isinstance(d, Page) and d.stream == name]
    t = np.concatenate([p.t for p in pages]) if pages else np.zeros(0)
    keys = pages[0].values.keys() if pages else ()
    values = {k: np.concatenate([p.values[k] for p in pages]) for k in keys}
    events = [d for d in docs if isinstance(d, Event)]
    return Capture((origin + t * 1e9).astype(np.int64), values, events, stats, origin)


@pytest.fixture
def serve():
    """``serve(instrument, **faults)`` -> a started ScpiServer, stopped after the test."""
    servers: list[ScpiServer] = []

    def start(instrument: Instrument, **faults: Any) -> ScpiServer:
        server = ScpiServer(instrument, faults=Faults(**faults)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@contextmanager
def emulator_process(tmp_path, device: str, *args: str):
    """``hwval emulate DEVICE --port 0 ARGS`` as a real process; yields its ready-file JSON
    (``resource``, ``t0_monotonic_ns``...) and checks it stops cleanly on SIGTERM."""
    from conftest import popen_hwval

    ready = tmp_path / f"{device}-ready.json"
    proc = popen_hwval("emulate", device, "--port", "0", "--ready-file", str(ready), *args)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"{device} emulator did not get ready"
            time.sleep(0.05)
        yield json.loads(ready.read_text())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"{device} emulator ready: use -m {device}:TCPIP::127.0.0.1::" in out


def capture_from_emulator(tmp_path, device: str, query: str, duration_s: float, *emulator_args: str):
    """Start ``hwval emulate DEVICE`` and run ``hwval capture -m DEVICE:RESOURCE?QUERY`` against
    it for ``duration_s``, both as real processes; returns (run file path, emulator ready JSON)."""
    from conftest import run_hwval

    out = tmp_path / f"{device}.h5"
    with emulator_process(tmp_path, device, *emulator_args) as ready:
        res = run_hwval("capture", "--no-nvml", "--no-rapl", "-m", f"{device}:{ready['resource']}?{query}",
                        "--duration", str(duration_s), "-o", str(out))
    assert res.returncode == 0, res.stderr
    return out, ready


# -- the emulators' SCPI parsing ---------------------------------------------------------------

def test_headers_match_short_long_and_suffixes():
    assert match_header(":NUMeric[:NORMal]:VALue", ("NUM", "NORM", "VAL")) == []
    assert match_header(":NUMeric[:NORMal]:VALue", ("numeric", "value")) == []
    assert match_header(":NUMeric[:NORMal]:ITEM#", ("NUM", "NORM", "ITEM12")) == [12]
    assert match_header("VIEW:NUMeric:PAGE#:CELL#:FUNCtion", ("VIEW", "NUM", "PAGE1", "CELL3", "FUNC")) == [1, 3]
    assert match_header(":NUMeric[:NORMal]:VALue", ("NUME", "VAL")) is None  # neither short nor long
    assert match_header(":INPut:VOLTage:RANGe", ("INP", "CURR", "RANG")) is None


def test_messages_split_with_path_inheritance_and_arguments():
    cmds = parse_message(":NUM:NORM:ITEM1 P,1;ITEM2 U,1;*IDN?;:STAT:ERR?")
    assert [c.nodes for c in cmds] == [("NUM", "NORM", "ITEM1"), ("NUM", "NORM", "ITEM2"), ("*IDN",),
                                       ("STAT", "ERR")]
    assert cmds[0].args == ("P", "1") and cmds[2].query and cmds[3].query
    assert split_arguments('1000,(@1,2)') == ["1000", "(@1,2)"]
    assert split_arguments('"a,b",3') == ['"a,b"', "3"]
