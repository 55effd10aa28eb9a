"""A recording :class:`~hwval.sources.base.SourceContext` for people who write or test drivers.

A driver can be driven by hand (``open``, then ``read()`` on deadlines or ``run`` on a thread)
without the recorder, the HDF5 writer or any thread of hwval's own::

    ctx = RecordingContext()
    infos = source.open(ctx)          # the context learns the declared keys
    readings = poll(source, ctx, 1.0)  # or: run_streaming(source, ctx, 1.0)
    source.close()
    assert ctx.undeclared == {} and not ctx.errors

It checks what the recorder checks (a reading for a stream or key the source did not declare is
counted as ``undeclared_stream`` / ``undeclared_key``) so a driver test catches data the recorder
would drop.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from hwval.sources.base import StreamInfo


class RecordingContext:
    """Keeps every reading, event and counted error a source reports.

    ``readings``: ``(t_ns, stream, values)`` per reading (a block emit adds one per row);
    ``events``: ``(name, stream, detail)``; ``errors``: count per error kind;
    ``messages``: the message of each counted error, in order; ``undeclared``: per stream, the
    keys it emitted without declaring them (filled once :meth:`declare` or :meth:`open` is used).
    """

    def __init__(self, *, polled: bool = False) -> None:
        self.stop = threading.Event()
        #: True: this context stands for a polled source's, which must never ``emit``.
        self.polled = polled
        self.readings: list[tuple[int, str, dict[str, float]]] = []
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.errors: collections.Counter[str] = collections.Counter()
        self.error_streams: list[tuple[str, str]] = []
        self.messages: list[str] = []
        self.declared: dict[str, frozenset[str]] | None = None
        self.undeclared: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    # -- what a test calls --------------------------------------------------------------------
    def declare(self, infos: Iterable[StreamInfo]) -> list[StreamInfo]:
        """Remember the streams and keys a source declared at ``open``; returns ``infos``."""
        infos = list(infos)
        self.declared = {i.name: frozenset(i.key_names()) for i in infos}
        return infos

    def open(self, source: Any) -> list[StreamInfo]:
        """``source.open(self)``, declaring what it returns."""
        return self.declare(source.open(self))

    def kinds(self) -> list[str | None]:
        """The ``kind`` of every event, in order."""
        return [d.get("kind") for _, _, d in self.events]

    def names(self) -> list[str]:
        """The name of every event, in order."""
        return [name for name, _, _ in self.events]

    def values(self, stream: str, key: str) -> np.ndarray:
        """One key of one stream as an array (NaN where a reading lacks it)."""
        return np.array([v.get(key, np.nan) for _, s, v in self.readings if s == stream], dtype=float)

    def rows(self, stream: str | None = None) -> list[tuple[int, dict[str, float]]]:
        """``(t_ns, values)`` of every reading (of ``stream`` only, when given)."""
        return [(t, v) for t, s, v in self.readings if stream is None or s == stream]

    def times_ns(self, stream: str) -> np.ndarray:
        return np.array([t for t, s, _ in self.readings if s == stream], dtype=np.int64)

    # -- SourceContext ---------------------------------------------------------------------------
    def emit(self, stream: str, values: Mapping[str, float], t_ns: int | None = None) -> None:
        if self.polled:
            raise AssertionError("a polled source must return readings from read(), not emit")
        self.record(stream, values, time.monotonic_ns() if t_ns is None else t_ns)

    def emit_block(self, stream: str, t_ns: Sequence[int] | np.ndarray,
                   values: Mapping[str, Sequence[float] | np.ndarray]) -> None:
        if self.polled:
            raise AssertionError("a polled source must return readings from read(), not emit")
        columns = {k: np.asarray(v, dtype=float) for k, v in values.items()}
        times = np.asarray(t_ns, dtype=np.int64)
        for name, column in columns.items():
            if column.shape != times.shape:
                raise AssertionError(f"block column {name!r} has {column.shape}, times {times.shape}")
        for i, t in enumerate(times):
            self.record(stream, {k: float(c[i]) for k, c in columns.items()}, int(t))

    def event(self, name: str, stream: str = "", t_ns: int | None = None, **detail: Any) -> None:
        with self._lock:
            self.events.append((name, stream, detail))

    def count_error(self, stream: str, kind: str, message: str = "") -> None:
        with self._lock:
            self.errors[kind] += 1
            self.error_streams.append((stream, kind))
            self.messages.append(message)

    def record(self, stream: str, values: Mapping[str, float], t_ns: int) -> None:
        """Keep one reading (what ``emit`` does; :func:`poll` calls it for ``read()`` results)."""
        values = dict(values)
        with self._lock:
            self.readings.append((t_ns, stream, values))
            if self.declared is None:
                return
            keys = self.declared.get(stream)
            if keys is None:
                self.errors["undeclared_stream"] += 1
                self.undeclared.setdefault(stream, set()).update(values)
            elif not keys.issuperset(values):
                self.errors["undeclared_key"] += 1
                self.undeclared.setdefault(stream, set()).update(set(values) - keys)


def poll(source: Any, ctx: RecordingContext, duration_s: float) -> list[tuple[int, str, dict[str, float]]]:
    """Call ``source.read()`` on absolute ``source.period_s`` deadlines for ``duration_s`` (as
    the recorder does) and record each reading in ``ctx``; returns the readings of this call."""
    out: list[tuple[int, str, dict[str, float]]] = []
    period_s = source.period_s
    deadline = time.monotonic()
    end = deadline + duration_s
    while deadline < end and not ctx.stop.is_set():
        deadline += period_s
        time.sleep(max(0.0, deadline - time.monotonic()))
        for stream, values in source.read().items():
            t_ns = time.monotonic_ns()
            ctx.record(stream, values, t_ns)
            out.append((t_ns, stream, dict(values)))
    return out


def run_streaming(source: Any, ctx: RecordingContext, duration_s: float,
                  stop_timeout_s: float = 10.0) -> list[BaseException]:
    """Run a streaming source's ``run(ctx)`` on a thread for ``duration_s``, then set
    ``ctx.stop``; returns what escaped ``run`` (the recorder would turn it into a gap).
    Raises ``AssertionError`` when ``run`` does not return once ``stop`` is set."""
    escaped: list[BaseException] = []

    def target() -> None:
        try:
            source.run(ctx)
        except Exception as exc:  # the recorder's job; handed to the caller here
            escaped.append(exc)

    thread = threading.Thread(target=target, name="hwval-testing-run", daemon=True)
    thread.start()
    thread.join(duration_s)
    ctx.stop.set()
    thread.join(stop_timeout_s)
    if thread.is_alive():
        raise AssertionError(f"run() did not return within {stop_timeout_s} s of ctx.stop")
    return escaped
