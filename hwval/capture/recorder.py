"""The recorder: one thread per source, readings stamped at receipt on CLOCK_MONOTONIC, a
bounded queue, and one dispatcher thread that turns readings into documents for subscribers.

A failing source never stops the others: its thread records ``gap_start``/``gap_end``,
``reconnect`` and ``error`` events and keeps trying with backoff until the capture stops.
"""

from __future__ import annotations

import logging
import math
import collections
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hwval.runfile.documents import Descriptor, Document, Event, Page, Start, Stop
from hwval.clock import PeriodicSchedule, now_ns
from hwval.capture.lateness import LatenessStats
from hwval.sources.base import Disconnected, Source, SourceError, StreamInfo, TransientError
from hwval.runfile.error_counts import counted_error_detail
from hwval.runfile.schema import EventName

log = logging.getLogger(__name__)

#: Pages are handed to subscribers at least this often (the writer's flush cadence rides on it).
PAGE_INTERVAL_S = 0.2
#: Backoff between reconnect / retry attempts of one failing source.
BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
#: The stream of run-level events and errors (the schema's ``stream ""``).
RUN_LEVEL = ""
#: Repeats of the same error kind become an event at most this often.
ERROR_EVENT_INTERVAL_S = 1.0


@dataclass
class StreamStats:
    readings: int = 0
    dropped: int = 0
    error_counts: dict[str, int] = field(default_factory=dict)
    last_error_event_ns: dict[str, int] = field(default_factory=dict)


#: Per stream, readings waiting for the next page: times and rows of ``emit``, and the pieces
#: (a block's arrays, or rows that arrived before a block) kept in arrival order before them.
_Buffer = tuple[list[int], list[Mapping[str, float]], list[tuple[Any, Any]]]


class _SourceRunner:
    """Runs one source on its own thread and is the :class:`SourceContext` it sees."""

    def __init__(self, recorder: "Recorder", source: Source, label: str):
        self.recorder = recorder
        self.source = source
        self.label = label
        self.infos: list[StreamInfo] = []
        self.stream_names: list[str] = []
        self.stop = recorder.stop_event
        self.in_gap = False
        self.missed_deadlines = 0
        #: Why the source's thread ended before the capture stopped ("" while it runs).
        self.died = ""
        #: how late polled reads started against their deadlines (constant memory); for benchmarks.
        self.lateness = LatenessStats()
        self.thread = threading.Thread(target=self._main, name=f"hwval-source-{label}", daemon=True)

    # -- SourceContext -------------------------------------------------------------------
    def emit(self, stream: str, values: Mapping[str, float], t_ns: int | None = None) -> None:
        t = now_ns() if t_ns is None else t_ns
        if self.in_gap:
            self._end_gap(t)
        self.recorder.put_reading(stream, t, values)

    def emit_block(self, stream: str, t_ns: Sequence[int] | np.ndarray,
                   values: Mapping[str, Sequence[float] | np.ndarray]) -> None:
        # copies: the page is written later, and a driver may refill its arrays meanwhile
        times = np.array(t_ns, dtype=np.int64)
        try:
            columns = {key: np.array(column, dtype=np.float64) for key, column in values.items()}
        except (TypeError, ValueError) as exc:
            self.count_error(stream, "bad_reading", f"block of {times.size} readings is not numbers by key: {exc}")
            return
        bad = {k: c.shape for k, c in columns.items() if c.shape != times.shape}
        if times.ndim != 1 or bad:
            self.count_error(stream, "bad_reading", f"block columns {bad} do not match its "
                             f"{times.shape} times; not stored")
            return
        if not times.size:
            return
        if self.in_gap:  # as emit: the gap ends at the first reading that arrives after it
            self._end_gap(int(times[0]))
        self.recorder.put_block(stream, times, columns)

    def event(self, name: str, stream: str = "", t_ns: int | None = None, **detail: Any) -> None:
        self.recorder.put_event(name, stream, now_ns() if t_ns is None else t_ns, detail)

    def count_error(self, stream: str, kind: str, message: str = "") -> None:
        self.recorder.count_error(stream or self.label, kind, message)

    # -- loop ----------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            if self.source.mode == "streaming":
                self._run_streaming()
            else:
                self._run_polled()
        except Exception as exc:  # a bug outside read()/run(): a gap to the end, and the run
            # is not complete (the recorder says why); never a thread dying in silence
            log.debug("source %s stopped", self.label, exc_info=exc)
            self.died = _describe(exc)
            if not self.in_gap:
                self.in_gap = True
                for name in self.stream_names:
                    self.recorder.put_event(EventName.GAP_START, name, now_ns(), {"reason": self.died})
            self.event(EventName.ERROR, self.label, kind="source_stopped", message=self.died)
        finally:
            try:
                self.source.close()
            except Exception as exc:  # close problems are worth a line, never a lost capture
                self.event(EventName.ERROR, self.label, where="close", message=_describe(exc))

    def _run_polled(self) -> None:
        period = self.source.period_s or 1.0
        schedule = PeriodicSchedule(period, self.stop)
        read = self.source.read
        put = self.recorder.put_reading
        add_lateness = self.lateness.add
        while (deadline := schedule.wait()) is not None:
            started = now_ns()
            try:
                items = read().items()
            except Exception as exc:  # every failure becomes a gap; see _failed
                self._failed(exc)
                continue
            t = now_ns()
            add_lateness(started - deadline)
            if self.in_gap:
                self._end_gap(t)
            for stream, values in items:
                put(stream, t, values)
        self.missed_deadlines = schedule.stats.missed

    def _run_streaming(self) -> None:
        while not self.stop.is_set():
            try:
                self.source.run(self)
                return
            except Exception as exc:  # every failure becomes a gap; see _failed
                self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        t = now_ns()
        if not self.in_gap:
            self.in_gap = True
            for name in self.stream_names:
                self.recorder.put_event(EventName.GAP_START, name, t, {"reason": _describe(exc)})
        if isinstance(exc, Disconnected):
            self._reconnect(exc)
            return
        kind = "transient" if isinstance(exc, TransientError) else type(exc).__name__
        self.recorder.count_error(self.label, kind, _describe(exc))
        if not isinstance(exc, SourceError):
            log.debug("source %s raised", self.label, exc_info=exc)
        # Back off a little so a permanently failing read does not spin a core.
        self.stop.wait(BACKOFF_S[0])

    def _reconnect(self, exc: BaseException) -> None:
        self.event(EventName.ERROR, self.label, kind="disconnected", message=_describe(exc))
        try:
            self.source.close()
        except Exception as close_exc:  # the transport is gone; closing it may fail too
            log.debug("close after disconnect of %s: %s", self.label, close_exc)
        attempt = 0
        while not self.stop.is_set():
            self.stop.wait(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
            if self.stop.is_set():
                return
            attempt += 1
            try:
                infos = self.source.open(self)
            except Exception as open_exc:  # still unplugged: keep trying with backoff
                if attempt == 1 or attempt % 10 == 0:
                    self.event(EventName.ERROR, self.label, kind="reconnect_failed", attempt=attempt,
                               message=_describe(open_exc))
                continue
            changed = [i.name for i in infos if i.name not in self.stream_names]
            if changed:
                self.event(EventName.ERROR, self.label, kind="streams_changed", streams=changed)
            self.event(EventName.RECONNECT, self.label, attempt=attempt)
            return

    def _end_gap(self, t: int) -> None:
        self.in_gap = False
        for name in self.stream_names:
            self.recorder.put_event(EventName.GAP_END, name, t, {})


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Recorder:
    """Owns the queue, the source threads and the dispatcher.

    Sources are opened by :meth:`add_source` before :meth:`start`, so a source that cannot
    start is reported before any document (and so any file) exists; what they record while
    opening waits in the queue. Then :meth:`start`, and :meth:`finish` once.
    """

    def __init__(self, start_doc: Start, subscribers: Sequence[Callable[[Document], None]],
                 queue_size: int = 200_000):
        self.start_doc = start_doc
        self.origin_ns = start_doc.origin_monotonic_ns
        self.subscribers = list(subscribers)
        self.stop_event = threading.Event()
        # A deque, not queue.Queue: append/popleft are atomic under the GIL and cost ~0.1 us,
        # while Queue takes a lock and notifies a condition per item. The dispatcher drains it
        # every PAGE_INTERVAL_S instead of waking per reading.
        self._queue: collections.deque = collections.deque()
        self.queue_size = queue_size
        self._finishing = threading.Event()
        self._dispatch_done = threading.Event()
        self._lock = threading.Lock()
        self.stats: dict[str, StreamStats] = {}
        self.infos: dict[str, StreamInfo] = {}
        self.runners: list[_SourceRunner] = []
        self._dispatcher = threading.Thread(target=self._dispatch, name="hwval-dispatch", daemon=True)
        self.subscriber_errors: list[str] = []

    def add_source(self, label: str, source: Source) -> list[StreamInfo]:
        """Open ``source`` (its errors propagate) and register its streams."""
        runner = _SourceRunner(self, source, label)
        infos = list(source.open(runner))
        for info in infos:
            if info.name in self.infos:
                source.close()
                raise ValueError(f"two streams are named {info.name!r}; rename one (name=...)")
        for info in infos:
            self.infos[info.name] = info
            # setdefault: errors the source counted while opening are kept
            self.stats.setdefault(info.name, StreamStats())
        runner.infos = infos
        runner.stream_names = [i.name for i in infos]
        self.runners.append(runner)
        return infos

    def close_sources(self) -> None:
        """Close opened sources when the capture is abandoned before :meth:`start`. ``stop`` is
        set first: it tells a source this close is final, not a reconnect (an analyzer then
        stops its integrator)."""
        self.stop_event.set()
        for runner in self.runners:
            try:
                runner.source.close()
            except Exception as exc:  # abandoning anyway; keep the first problem visible
                log.warning("closing %s: %s", runner.label, exc)

    # -- producers (any thread) ------------------------------------------------------------
    def put_reading(self, stream: str, t_ns: int, values: Mapping[str, float]) -> None:
        if len(self._queue) < self.queue_size:
            self._queue.append((0, stream, t_ns, values))
        else:
            stats = self.stats.get(stream)
            if stats is not None:
                stats.dropped += 1

    def put_block(self, stream: str, t_ns: np.ndarray, columns: Mapping[str, np.ndarray]) -> None:
        """Readings as arrays (``t_ns`` int64, one float64 array per key, equal lengths): one
        queue item for the whole block, so an array instrument costs no per-sample dict."""
        if len(self._queue) < self.queue_size:
            self._queue.append((2, stream, t_ns, columns))
        else:
            stats = self.stats.get(stream)
            if stats is not None:
                stats.dropped += len(t_ns)

    def put_event(self, name: str, stream: str, t_ns: int, detail: Mapping[str, Any]) -> None:
        # Events are never dropped (they are few): a workload_end must not be lost to a full queue.
        self._queue.append((1, name, stream, t_ns, dict(detail)))

    def count_error(self, stream: str, kind: str, message: str = "") -> None:
        t = now_ns()
        with self._lock:
            stats = self.stats.setdefault(stream, StreamStats())
            n = stats.error_counts.get(kind, 0) + 1
            stats.error_counts[kind] = n
            last = stats.last_error_event_ns.get(kind)
            due = last is None or t - last >= ERROR_EVENT_INTERVAL_S * 1e9
            if due:
                stats.last_error_event_ns[kind] = t
        if due:
            self.put_event(EventName.ERROR, stream, t, counted_error_detail(kind, n, message))

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._send(self.start_doc)
        for info in self.infos.values():
            self._send(Descriptor(info))
        self._dispatcher.start()
        for runner in self.runners:
            runner.thread.start()

    def finish(self, exit_code: int, complete: bool = True, reason: str = "",
               marks_lost: int | None = None, marks_refused: int | None = None) -> Stop:
        """Stop sources, drain the queue, send ``Stop``. Safe to call once."""
        self.stop_event.set()
        for runner in self.runners:
            if runner.thread.ident is None:  # start() failed before this one: nothing to join
                continue
            runner.thread.join(timeout=10.0)
            if runner.thread.is_alive():
                complete = False
                self.put_event(EventName.ERROR, runner.label, now_ns(),
                               {"kind": "stuck", "message": "source did not stop within 10 s"})
        reasons = [f"source {r.label} stopped: {r.died}" for r in self.runners if r.died]
        self._finishing.set()  # the dispatcher drains what is left, flushes and exits
        if self._dispatcher.ident is None:
            self._dispatch()  # start() failed before it: drain here, so nothing queued is lost
        self._dispatch_done.wait()
        stream_stats: dict[str, dict[str, Any]] = {}
        missed = {name: r.missed_deadlines for r in self.runners for name in r.stream_names}
        run_level = self.stats.get(RUN_LEVEL)
        for name, st in self.stats.items():
            if name == RUN_LEVEL:  # not a stream: its counts are the run's own (Stop.error_counts)
                continue
            stream_stats[name] = {"readings": st.readings, "dropped": st.dropped,
                                  "error_counts": dict(st.error_counts),
                                  "missed_deadlines": missed.get(name, 0)}
        # Honest completion: a write failure or a dead source makes the run incomplete, with why.
        reasons += self.subscriber_errors
        if reasons:
            complete = False
            reason = "; ".join(([reason] if reason else []) + reasons)
        stop = Stop(exit_code=exit_code, complete=complete, stream_stats=stream_stats, reason=reason,
                    marks_lost=marks_lost, marks_refused=marks_refused,
                    error_counts=dict(run_level.error_counts) if run_level else {})
        n_errors = len(self.subscriber_errors)
        self._send(stop)
        if len(self.subscriber_errors) > n_errors:
            # Finishing itself failed (e.g. the last flush): the journal already holds a stop
            # saying complete; a later stop record overrides it on recovery.
            stop = replace(stop, complete=False,
                           reason="; ".join(filter(None, [stop.reason, *self.subscriber_errors[n_errors:]])))
            self._send(stop)
        return stop

    # -- dispatcher --------------------------------------------------------------------------
    def _send(self, doc: Document) -> None:
        for sub in self.subscribers:
            try:
                sub(doc)
            except Exception as exc:  # one broken subscriber (a full disk) must not stop the rest
                self._subscriber_failed(sub, "", exc)

    def _subscriber_failed(self, sub: object, where: str, exc: Exception) -> None:
        """Keep one line per distinct failure; the session prints them (nothing is logged here,
        so a failure repeating every page cannot fill the terminal)."""
        failure = getattr(sub, "failure", None)  # a subscriber that says what failed, once
        msg = failure or f"{type(sub).__name__}{where}: {_one_line(exc)}"
        if msg not in self.subscriber_errors:
            self.subscriber_errors.append(msg)
        log.debug("subscriber %s failed", type(sub).__name__, exc_info=exc)

    def _tick(self) -> None:
        for sub in self.subscribers:
            tick = getattr(sub, "tick", None)
            if tick is not None:
                try:
                    tick()
                except Exception as exc:  # same policy as _send
                    self._subscriber_failed(sub, ".tick", exc)

    def _dispatch(self) -> None:
        try:
            self._dispatch_loop()
        except Exception as exc:  # a recorder bug: the capture reports it and exits non-zero
            log.debug("dispatcher stopped", exc_info=exc)
            self.subscriber_errors.append(f"dispatcher: {_one_line(exc)}")
        finally:
            # finish() waits on this: whatever happened, it must not wait forever
            self._dispatch_done.set()

    def _dispatch_loop(self) -> None:
        origin = self.origin_ns
        buffers: dict[str, _Buffer] = {}
        popleft = self._queue.popleft
        while True:
            finishing = self._finishing.wait(PAGE_INTERVAL_S)
            while True:
                try:
                    item = popleft()
                except IndexError:
                    break
                if item[0] == 0:
                    _, stream, t_ns, values = item
                    buf = buffers.get(stream)
                    if buf is None:
                        buf = buffers[stream] = ([], [], [])
                    buf[0].append(t_ns)
                    buf[1].append(values)
                elif item[0] == 2:
                    _, stream, t_ns, columns = item
                    buf = buffers.get(stream)
                    if buf is None:
                        buf = buffers[stream] = ([], [], [])
                    if buf[0]:  # rows that came first stay first
                        buf[2].append((list(buf[0]), list(buf[1])))
                        buf[0].clear()
                        buf[1].clear()
                    buf[2].append((t_ns, columns))
                else:
                    _, name, stream, t_ns, detail = item
                    self._send(Event((t_ns - origin) / 1e9, name, stream, detail))
            self._flush(buffers)
            self._tick()
            if finishing and not self._queue:
                break

    def _flush(self, buffers: dict[str, "_Buffer"]) -> None:
        for stream, (ts, rows, chunks) in buffers.items():
            if not ts and not chunks:
                continue
            info = self.infos.get(stream)
            if info is None:
                self.count_error(stream, "undeclared_stream", f"reading for undeclared stream {stream!r}")
                ts.clear()
                rows.clear()
                chunks.clear()
                continue
            keys = info.key_names()
            pieces = [self._columns(stream, keys, t, data) for t, data in chunks]
            if ts:
                pieces.append(self._columns(stream, keys, ts, rows))
            ts_ns = pieces[0][0] if len(pieces) == 1 else np.concatenate([p[0] for p in pieces])
            values = (pieces[0][1] if len(pieces) == 1 else
                      {key: np.concatenate([p[1][key] for p in pieces]) for key in keys})
            extra = set().union(*(p[2] for p in pieces))
            if extra:
                self.count_error(stream, "undeclared_key",
                                 f"reading keys {sorted(extra)} are not in the stream's descriptor; not stored")
            stats = self.stats[stream]
            stats.readings += len(ts_ns)
            ts.clear()
            rows.clear()
            chunks.clear()
            self._send(Page(stream, (ts_ns - self.origin_ns) / 1e9, values))

    def _columns(self, stream: str, keys: Sequence[str], ts: Any, data: Any
                 ) -> tuple[np.ndarray, dict[str, np.ndarray], set[str]]:
        """One buffered piece as (int64 times, a column per declared key, undeclared keys):
        ``data`` is a block's columns (a mapping of arrays) or a list of per-reading rows."""
        if isinstance(data, Mapping):
            n = len(ts)
            values = {key: data[key] if key in data else np.full(n, math.nan) for key in keys}
            return ts, values, set(data) - set(keys)
        t_ns = np.asarray(ts, dtype=np.int64)
        try:
            values = {key: np.fromiter((r.get(key, math.nan) for r in data), dtype=np.float64,
                                       count=len(data)) for key in keys}
            keyset = frozenset(keys)  # a driver bug: keys it did not declare (~0.1 us a row)
            extra = {k for r in data if not keyset.issuperset(r) for k in r if k not in keyset}
        except (AttributeError, TypeError, ValueError):
            values, extra = self._salvage(stream, keys, data)
        return t_ns, values, extra

    def _salvage(self, stream: str, keys: Sequence[str],
                 rows: list[Mapping[str, float]]) -> tuple[dict[str, np.ndarray], set[str]]:
        """Row by row, when a page holds a reading that is not a mapping of numbers (a driver
        bug): keep its time with NaN values and count it, so one bad reading neither loses its
        neighbours nor stops the dispatcher. Returns the columns and the undeclared keys seen."""
        values = {key: np.full(len(rows), math.nan) for key in keys}
        extra: set[str] = set()
        for i, row in enumerate(rows):
            try:
                extra.update(k for k in row if k not in keys)
                for key in keys:
                    values[key][i] = float(row.get(key, math.nan))
            except (AttributeError, TypeError, ValueError) as exc:
                self.count_error(stream, "bad_reading", f"reading {str(row)[:80]} is not numbers by key: {exc}")
        return values, extra
