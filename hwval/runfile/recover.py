"""``hwval recover RUN.h5``: rebuild a run file from its crash journal without ever losing what the
run file already holds.

The journal is written ahead of the HDF5 file, so after a kill it normally holds everything the
file has and more. But not always: on a full disk the journal stops first while the file may go
on, and a journal can be damaged. So recovery *merges*, per stream, in time order: the journal's
pages, plus every reading of the run file that no journal page covers (before the journal's first
page, in holes left by damaged records, after its last page). Within a page's time span the
journal wins: a capture killed inside an HDF5 append leaves rows whose values were never written.
A complete run file to which the journal adds nothing is left untouched (the journal is removed).

The journal is read record by record and never trusted: a record whose framing, JSON or fields
are wrong is skipped and counted, and reading resynchronises on the next record header, so any
bytes give a result or one error line. The rebuilt file is written to ``RUN.h5.recovering`` and
moved over the run file only once finished; that temporary file is removed on any failure.
A run file that cannot be read at all is kept beside the result as ``RUN.h5.damaged``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from hwval.runfile import error_counts, layout, schema
from hwval.runfile.documents import Descriptor, Document, Event, Page, Start, Stop
from hwval.runfile.claim import reserve_path
from hwval.runfile.journal import JournalInUse, journal_path
from hwval.runfile.schema import EVENTS, STREAMS, T, RootAttr, RunFileError, StreamAttr, printable
from hwval.sources.base import Key, StreamInfo

_LEN = struct.Struct("<I")
#: Every record header is the JSON text of a dict whose first key is "type" (JournalWriter).
_SIGNATURE = b'{"type"'
#: Headers are small (the largest, the start record, carries the resolved config).
MAX_HEADER_BYTES = 1 << 24
#: Rows gathered per stream before one append to the rebuilt file (bounds recovery memory).
RECOVER_BATCH = 1 << 20
#: Rows of the old run file's ``t`` read at a time, and events written per append.
_T_BLOCK = 1 << 16
_EVENT_BLOCK = 1 << 16


class RecoverError(Exception):
    """Recovery is impossible or would lose data; the message says why and what is left as it was."""


@dataclass
class JournalDamage:
    """What reading a journal had to skip."""

    skipped_records: int = 0      # records with bad framing, JSON or fields
    skipped_bytes: int = 0
    torn_tail_bytes: int = 0      # an unfinished last record: normal after a kill


# -- reading the journal ---------------------------------------------------------------------

def read_journal(path: str | os.PathLike, damage: JournalDamage | None = None) -> Iterator[Document]:
    """The journal's valid documents, in order. Damaged records are skipped (and counted in
    ``damage``); a torn final record is ignored.

    The file is memory-mapped, not read whole: a long capture's journal can be larger than the
    memory one would want a recovery to take."""
    damage = damage if damage is not None else JournalDamage()
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield from _records(data, damage)


def _records(data: mmap.mmap, damage: JournalDamage) -> Iterator[Document]:
    pos, size = 0, len(data)
    while pos < size:
        framed = _frame(data, pos)
        if framed is None:
            nxt = _resync(data, pos + 1)
            if nxt is None:
                damage.torn_tail_bytes = size - pos
                return
            damage.skipped_records += 1
            damage.skipped_bytes += nxt - pos
            pos = nxt
            continue
        header, payload_at, end = framed
        doc = _document(header, data, payload_at)
        if doc is None:
            damage.skipped_records += 1
            damage.skipped_bytes += end - pos
        else:
            yield doc
        pos = end


def _frame(data: mmap.mmap, pos: int) -> tuple[dict, int, int] | None:
    """``(header, payload offset, record end)`` of a well-framed record at ``pos``, else None."""
    if pos + _LEN.size > len(data):
        return None
    (n,) = _LEN.unpack_from(data, pos)
    start = pos + _LEN.size
    if n < len(_SIGNATURE) or n > MAX_HEADER_BYTES or start + n > len(data):
        return None
    if data[start:start + len(_SIGNATURE)] != _SIGNATURE:
        return None
    try:
        header = json.loads(data[start:start + n])
    except (ValueError, RecursionError):
        return None
    if not isinstance(header, dict):
        return None
    end = start + n
    if header.get("type") == "page":
        rows, keys = header.get("n"), header.get("keys")
        if not _is_int(rows) or rows < 0 or not isinstance(keys, list):
            return None
        end += 8 * rows * (1 + len(keys))
        if end > len(data):
            return None
    return header, start + n, end


def _resync(data: mmap.mmap, start: int) -> int | None:
    """Offset of the next well-framed record at or after ``start``, or None."""
    k = data.find(_SIGNATURE, start + _LEN.size)
    while k != -1:
        if _frame(data, k - _LEN.size) is not None:
            return k - _LEN.size
        k = data.find(_SIGNATURE, k + 1)
    return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_name(v: Any) -> bool:
    """A usable HDF5 member name: text, not empty, no '/', not '.'."""
    return isinstance(v, str) and v not in ("", ".") and "/" not in v and "\x00" not in v


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


# Field types of the documents, checked before a document is built from untrusted JSON.
_START_TYPES = {"run_id": str, "created_utc": str, "hostname": str, "config_json": str,
                "hwval_version": str, "origin_monotonic_ns": int, "origin_realtime_ns": int}


def _document(header: dict, data: mmap.mmap, payload_at: int) -> Document | None:
    kind = header.get("type")
    try:
        if kind == "page":
            return _page(header, data, payload_at)
        if kind == "event":
            return _event(header)
        if kind == "descriptor":
            return _descriptor(header.get("info"))
        if kind == "start":
            return _start(header)
        if kind == "stop":
            return _stop(header)
    except (TypeError, ValueError):  # a field the dataclass itself refuses
        return None
    return None


def _page(header: dict, data: mmap.mmap, payload_at: int) -> Page | None:
    stream, rows, keys = header.get("stream"), header["n"], header["keys"]
    if not _is_name(stream) or not all(_is_name(k) and k != T for k in keys) or len(set(keys)) != len(keys):
        return None
    arrays = np.frombuffer(data, dtype="<f8", count=rows * (1 + len(keys)), offset=payload_at)
    arrays = arrays.reshape(1 + len(keys), rows).copy()  # a copy: views must not outlive the mapping
    t = arrays[0]
    if not np.all(np.isfinite(t)) or (rows > 1 and not np.all(t[1:] >= t[:-1])):
        return None
    return Page(stream, t, {k: arrays[i + 1] for i, k in enumerate(keys)})


def _event(h: dict) -> Event | None:
    if not (_is_real(h.get("t")) and isinstance(h.get("name"), str) and isinstance(h.get("stream"), str)
            and isinstance(h.get("detail", {}), dict)):
        return None
    return Event(float(h["t"]), h["name"], h["stream"], h.get("detail", {}))


def _start(h: dict) -> Start | None:
    for name, kind in _START_TYPES.items():
        if name in h and (not isinstance(h[name], kind) or isinstance(h[name], bool)):
            return None
    if "command" in h and not _is_str_list(h["command"]):
        return None
    return Start(**_known_fields(Start, h))


def _stop(h: dict) -> Stop | None:
    if not (_is_int(h.get("exit_code")) and isinstance(h.get("complete"), bool)
            and isinstance(h.get("stream_stats", {}), dict) and isinstance(h.get("reason", ""), str)
            and all(h.get(k) is None or (_is_int(h[k]) and 0 <= h[k] < 2**62)
                    for k in ("marks_lost", "marks_refused"))):
        return None
    return Stop(**_known_fields(Stop, h))


def _descriptor(info: Any) -> Descriptor | None:
    if not isinstance(info, dict) or not _is_name(info.get("name")):
        return None
    if not all(isinstance(info.get(k), str) for k in ("kind", "driver", "resource", "scope")):
        return None
    period = info.get("period_s")
    if period is not None and not (_is_real(period) and period > 0):
        return None
    keys = info.get("keys")
    if not isinstance(keys, list) or not all(isinstance(k, dict) and _is_name(k.get("name")) and k["name"] != T
                                             and isinstance(k.get("unit"), str) for k in keys):
        return None
    if len({k["name"] for k in keys}) != len(keys):
        return None
    for k in keys:
        if k.get("semantics") is not None and not isinstance(k["semantics"], str):
            return None
        if k.get("window_s") is not None and not _is_real(k["window_s"]):
            return None
        if not isinstance(k.get("description", ""), str):
            return None
    if not isinstance(info.get("identity", {}), dict) or not isinstance(info.get("emulated", False), bool):
        return None
    if not _is_str_list(info.get("notes", [])):
        return None
    fields = _known_fields(StreamInfo, info)
    fields["keys"] = tuple(Key(**_known_fields(Key, k)) for k in keys)
    fields["notes"] = tuple(info.get("notes", ()))
    return Descriptor(StreamInfo(**fields))


def _known_fields(cls: type, values: dict) -> dict:
    # Fields a later writer added are dropped; a missing required one makes the dataclass refuse.
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


# -- recovering ------------------------------------------------------------------------------

@dataclass
class RecoverSummary:
    streams: int = 0
    samples: int = 0
    events: int = 0
    complete: bool = False
    #: Readings kept from the old run file that the journal did not have.
    from_file: int = 0
    #: Rows at the end of an old stream never fully written (a kill inside an append), dropped.
    torn_rows: int = 0
    #: Why the old run file could not be used at all (it is kept as ``damaged_copy``).
    old_problem: str = ""
    damaged_copy: str = ""
    #: The run file was complete and the journal added nothing: left untouched.
    unchanged: bool = False
    damage: JournalDamage = field(default_factory=JournalDamage)


def recover(run_path: str | os.PathLike) -> RecoverSummary:
    """Rebuild ``run_path`` from its journal, merged with what the run file holds (see the module
    docstring). Raises :class:`JournalInUse` while a capture writes the run, and
    :class:`RecoverError` when there is nothing to rebuild from."""
    run_path = Path(run_path)
    jpath = journal_path(run_path)
    tmp = Path(f"{os.fspath(run_path)}.recovering")
    try:
        fd = os.open(jpath, os.O_RDONLY)
    except FileNotFoundError:
        raise RecoverError(f"{jpath}: no journal to recover from") from None
    try:
        try:
            # Held until done: a second recover, or a capture reusing the name, must not interleave.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JournalInUse(f"{run_path}: a capture is still writing this run (its journal {jpath} is "
                               "locked); wait for it to finish, or stop it, before recovering") from None
        try:
            summary = _rebuild(run_path, jpath, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if summary.unchanged:
            tmp.unlink(missing_ok=True)
        else:
            if summary.old_problem and run_path.exists():
                summary.damaged_copy = str(_free_name(Path(f"{os.fspath(run_path)}.damaged")))
                os.replace(run_path, summary.damaged_copy)
            os.replace(tmp, run_path)
        jpath.unlink(missing_ok=True)
        # A killed capture also leaves the 2 MiB it set aside for closing the file: no longer needed.
        reserve_path(run_path).unlink(missing_ok=True)
        return summary
    finally:
        os.close(fd)


def _free_name(path: Path) -> Path:
    candidate, i = path, 1
    while candidate.exists():
        candidate, i = Path(f"{path}.{i}"), i + 1
    return candidate


def _open_old(run_path: Path) -> tuple[h5py.File | None, str]:
    """The old run file when it is a valid run, else None and why not ("" when there is none)."""
    if not run_path.exists():
        return None, ""
    try:
        f = h5py.File(run_path, "r")
    except OSError as exc:
        return None, f"not readable as HDF5 ({str(exc).split('(')[0].strip() or type(exc).__name__})"
    try:
        schema.validate(f)
    except RunFileError as exc:
        f.close()
        return None, str(exc)
    return f, ""


def _rebuild(run_path: Path, jpath: Path, tmp: Path) -> RecoverSummary:
    old, problem = _open_old(run_path)
    if old is not None:
        try:
            with old:
                return _merge(jpath, old, tmp, "")
        except (OSError, RunFileError) as exc:  # a dataset of the old file fails to read midway
            problem = f"a dataset cannot be read ({type(exc).__name__}: {str(exc).split('(')[0].strip()})"
    return _merge(jpath, None, tmp, problem)


def _merge(jpath: Path, old: h5py.File | None, tmp: Path, old_problem: str) -> RecoverSummary:
    summary = RecoverSummary(old_problem=old_problem)
    start: Start | None = None
    stop: Stop | None = None
    journal_events: list[Event] = []
    with h5py.File(tmp, "w") as out:
        streams = out.create_group(STREAMS)
        merges: dict[str, _StreamMerge] = {}
        if old is not None:
            for key, value in old.attrs.items():
                out.attrs[key] = value
            # A complete file was finished by the writer: none of its rows can be torn.
            trusted = bool(old.attrs[RootAttr.COMPLETE])
            for name, g in old[STREAMS].items():
                merges[name] = _StreamMerge(_copy_structure(g, streams), g, trusted)
        for doc in read_journal(jpath, summary.damage):
            if isinstance(doc, Page):
                merge = merges.get(doc.stream)
                if merge is None:  # its descriptor was lost: nothing says what the values are
                    summary.damage.skipped_records += 1
                else:
                    merge.page(doc)
            elif isinstance(doc, Event):
                journal_events.append(doc)
            elif isinstance(doc, Descriptor):
                if doc.info.name not in merges:
                    merges[doc.info.name] = _StreamMerge(layout.create_stream_group(streams, doc.info), None)
            elif isinstance(doc, Start) and start is None:
                start = doc
                if old is None:
                    layout.write_root_attrs(out, doc)
            elif isinstance(doc, Stop) and stop is None:
                stop = doc
        if old is None and start is None:
            why = f"; the run file {old_problem}" if old_problem else ""
            raise RecoverError(f"{jpath}: the journal has no usable start record{why}: nothing to rebuild "
                               "the run from (both files are left as they are)")
        for merge in merges.values():
            merge.finish()
            summary.samples += merge.rows
            summary.from_file += merge.from_file
            summary.torn_rows += merge.torn_rows
        summary.streams = len(merges)
        if old_problem and summary.samples == 0:
            raise RecoverError(f"{jpath}: the journal holds no readings and the run file {old_problem}: "
                               "nothing recovered (both files are left as they are)")
        trust_journal = stop is not None and summary.damage.skipped_records == 0
        events, added = _merged_events(journal_events, None if old is None or trust_journal else old[EVENTS])
        summary.events = len(events)
        ev = layout.create_events_group(out)
        for lo in range(0, len(events), _EVENT_BLOCK):
            layout.append_events(ev, events[lo:lo + _EVENT_BLOCK])
        old_complete = old is not None and bool(old.attrs[RootAttr.COMPLETE])
        if old_complete and added == 0 and all(m.only_covered for m in merges.values()):
            # Nothing the journal holds is new (the file may even hold more): keep the file.
            summary.unchanged, summary.complete = True, True
            return summary
        summary.complete = _finish_attrs(out, stop, old_complete, events)
    return summary


def _finish_attrs(out: h5py.File, stop: Stop | None, old_complete: bool, events: list[Event]) -> bool:
    """Exit code, stop reason, statistics and ``complete`` (last); returns ``complete``."""
    if stop is not None:
        for name, stats in stop.stream_stats.items():
            if _is_name(name) and name in out[STREAMS] and isinstance(stats, dict):
                g = out[STREAMS][name]
                g.attrs[StreamAttr.DROPPED_READINGS] = _count(stats.get("dropped"))
                g.attrs[StreamAttr.MISSED_DEADLINES] = _count(stats.get("missed_deadlines"))
                g.attrs[StreamAttr.ERROR_COUNTS] = _counts_json(stats.get("error_counts"))
        out.attrs[RootAttr.EXIT_CODE] = int(stop.exit_code)
        out.attrs[RootAttr.ERROR_COUNTS] = _counts_json(stop.error_counts)
        if stop.reason:
            out.attrs[RootAttr.STOP_REASON] = stop.reason
        layout.write_mark_counts(out, stop)
        complete = bool(stop.complete)
    else:
        _rebuild_error_counts(out, events)
        complete = old_complete
        if not complete and not schema.plain(out.attrs.get(RootAttr.STOP_REASON, "")):
            out.attrs[RootAttr.STOP_REASON] = "recovered from journal: the capture ended before finishing the file"
    out.attrs[RootAttr.RECOVERED] = True
    out.flush()
    out.attrs[RootAttr.COMPLETE] = complete
    return complete


def _rebuild_error_counts(out: h5py.File, events: list[Event]) -> None:
    """Without a stop record the totals were never written: rebuild the root's and each
    stream's from the running counts their error events carry (never below what is there)."""
    for stream, counts in error_counts.counts_from_events(events).items():
        if stream == "":
            attrs, key = out.attrs, RootAttr.ERROR_COUNTS
        elif _is_name(stream) and stream in out[STREAMS]:  # h5py finds "." and "a/b" too
            attrs, key = out[STREAMS][stream].attrs, StreamAttr.ERROR_COUNTS
        else:  # an undeclared stream's errors: no group to hold them (its events keep them)
            continue
        have = json.loads(_counts_json(_json_or_none(attrs.get(key))))
        attrs[key] = _counts_json({k: max(counts.get(k, 0), have.get(k, 0)) for k in {*counts, *have}})


def _json_or_none(text: Any) -> Any:
    """An attribute's JSON value, or None where it is missing or not JSON text."""
    try:
        return json.loads(schema.plain(text)) if text is not None else None
    except (TypeError, ValueError):
        return None


def _counts_json(counts: Any) -> str:
    """A journal's {kind: count} as the schema's JSON text (a crafted one reads as counts of 0)."""
    counts = {str(k): _count(v) for k, v in counts.items()} if isinstance(counts, dict) else {}
    return json.dumps(counts, sort_keys=True)


def _count(v: Any) -> int:
    return v if _is_int(v) and v >= 0 else 0


def _event_key(t: float, name: str, stream: str, detail_json: str) -> tuple:
    return (float(t), name, stream, detail_json)


def _merged_events(journal: list[Event], old_events: h5py.Group | None) -> tuple[list[Event], int]:
    """The journal's events plus the old file's that the journal lacks, in time order; also how
    many of the journal's the old file did not have."""
    seen: set[tuple] = set()
    merged: list[Event] = []
    old_keys: set[tuple] = set()
    if old_events is not None:
        t = old_events["t"][:]
        names = old_events["name"].asstr(errors="replace")[:]
        streams = old_events["stream"].asstr(errors="replace")[:]
        details = old_events["detail"].asstr(errors="replace")[:]
        for i in range(len(t)):
            if not math.isfinite(t[i]):
                continue
            key = _event_key(t[i], names[i], streams[i], details[i])
            old_keys.add(key)
            if key not in seen:
                seen.add(key)
                merged.append(Event(float(t[i]), str(names[i]), str(streams[i]), schema.event_detail(details[i], i)))
    added = 0
    for e in journal:
        key = _event_key(e.t, e.name, e.stream, json.dumps(e.detail, default=str, sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        merged.append(e)
        added += key not in old_keys
    merged.sort(key=lambda e: e.t)  # stable: equal stamps keep their arrival order
    return merged, added


def _copy_structure(src: h5py.Group, streams: h5py.Group) -> h5py.Group:
    """An empty stream group shaped like ``src`` (same attrs, same datasets and their attrs)."""
    g = streams.create_group(src.name.rsplit("/", 1)[-1])
    for key, value in src.attrs.items():
        g.attrs[key] = value
    for key, ds in src.items():
        new = g.create_dataset(key, shape=(0,), maxshape=(None,), dtype=np.float64,
                               chunks=(layout.CHUNK_ROWS,), fillvalue=None if key == T else np.nan)
        for a, v in ds.attrs.items():
            new.attrs[a] = v
    return g


def _valid_rows(t: h5py.Dataset) -> int:
    """Rows of an old ``t`` that a finished append wrote: a prefix of finite, positive,
    non-decreasing stamps (a kill after the resize leaves fill zeros at the end)."""
    last = 0.0
    for lo in range(0, t.shape[0], RECOVER_BATCH):
        block = t[lo:lo + RECOVER_BATCH]
        ok = np.isfinite(block) & (block > 0) & (block >= np.maximum.accumulate(np.concatenate(([last], block)))[:-1])
        bad = np.flatnonzero(~ok)
        if len(bad):
            return lo + int(bad[0])
        last = float(block[-1]) if len(block) else last
    return int(t.shape[0])


class _StreamMerge:
    """One stream of the rebuilt file: journal pages in order, with the old file's readings
    filled in wherever no page covers them. Invariant: every old row with ``t <= cursor`` has
    been either copied or found covered by a page."""

    def __init__(self, dst: h5py.Group, src: h5py.Group | None, trusted: bool = False) -> None:
        self.dst, self.src = dst, src
        self.keys = [k for k in dst if k != T]
        self.src_n = 0 if src is None else int(src[T].shape[0]) if trusted else _valid_rows(src[T])
        self.torn_rows = (int(src[T].shape[0]) - self.src_n) if src is not None else 0
        self.src_i = 0
        self._block_at, self._block = 0, np.zeros(0)
        self.cursor = -math.inf
        self._buf: list[dict[str, np.ndarray]] = []
        self._buf_rows = 0
        self.rows = self.from_file = 0
        #: Every journal row replaced an old row one for one (nothing new from the journal).
        self.only_covered = True

    def page(self, page: Page) -> None:
        keep = page.t > self.cursor  # a replayed or crafted page never goes back in time
        t = page.t[keep]
        if not len(t):
            return
        self._take_old(below=t[0], copy=True)
        covered = self._take_old(below=t[-1], copy=False, inclusive=True)
        if covered != len(t):
            self.only_covered = False
        self._add({T: t, **{k: layout.page_column(page, k)[keep] for k in self.keys}})
        self.cursor = float(t[-1])

    def finish(self) -> None:
        self._take_old(below=math.inf, copy=True)
        self._flush()

    def _old_t(self, i: int) -> np.ndarray:
        """The cached block of old ``t`` holding row ``i``, from ``i`` on."""
        if not (self._block_at <= i < self._block_at + len(self._block)):
            self._block_at = i
            self._block = self.src[T][i:min(i + _T_BLOCK, self.src_n)]
        return self._block[i - self._block_at:]

    def _take_old(self, below: float, copy: bool, inclusive: bool = False) -> int:
        """Advance over old rows with ``t < below`` (``<=`` when inclusive): copy them, or count
        them as covered by a journal page. Returns how many."""
        if self.src is None:
            return 0
        done = 0
        while self.src_i < self.src_n:
            t = self._old_t(self.src_i)
            n = int(np.searchsorted(t, below, side="right" if inclusive else "left"))
            if n == 0:
                break
            if copy:
                lo, hi = self.src_i, self.src_i + n
                self._add({key: self.src[key][lo:hi] for key in (T, *self.keys) if key in self.src})
                self.from_file += n
            self.src_i += n
            done += n
            if n < len(t):
                break
        return done

    def _add(self, cols: dict[str, np.ndarray]) -> None:
        self._buf.append(cols)
        self._buf_rows += len(cols[T])
        self.rows += len(cols[T])
        if self._buf_rows >= RECOVER_BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        for key in (T, *self.keys):
            n = [len(c[T]) for c in self._buf]
            layout.append_columns(self.dst[key], [c[key] if key in c else np.full(k, np.nan)
                                                  for c, k in zip(self._buf, n)])
        self._buf, self._buf_rows = [], 0


def describe(summary: RecoverSummary, run_path: str | os.PathLike) -> str:
    """The one line ``hwval recover`` prints."""
    path = printable(os.fspath(run_path))
    if summary.unchanged:
        return (f"{path} already holds everything in its journal (a complete run); "
                "removed the leftover journal and left the file as it was")
    parts = [f"recovered {path}: {plural(summary.streams, 'stream')}, {plural(summary.samples, 'sample')}"
             + (f" ({summary.from_file} kept from the run file, missing from the journal)" if summary.from_file else "")
             + f", {plural(summary.events, 'event')}; complete: {'yes' if summary.complete else 'no'}"]
    d = summary.damage
    if d.skipped_records:
        parts.append(f"skipped {plural(d.skipped_records, 'damaged journal record')} ({d.skipped_bytes} bytes)")
    if summary.torn_rows:
        parts.append(f"dropped {plural(summary.torn_rows, 'unwritten row')} of the run file")
    if summary.damaged_copy:
        parts.append(f"the old run file was unusable ({printable(summary.old_problem)}) and is kept as "
                     f"{printable(summary.damaged_copy)}")
    return "; ".join(parts)


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
