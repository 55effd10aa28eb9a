"""Read API over run files: the only code besides the writer that knows the schema layout.

>>> with open_run("run.h5") as run:                        # doctest: +SKIP
...     wall = run.stream("wall")
...     print(wall.t[-1], wall.data["power_w"].mean())
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

from hwval.runfile import schema
from hwval.runfile.journal import journal_in_use, journal_path
from hwval.runfile.schema import DERIVED_GROUPS, EVENTS, STREAMS, EventName, RunFileError, plain

__all__ = ["DerivedEntry", "Event", "RunFile", "RunFileError", "StreamData", "StreamReader", "open_run",
           "recover_hint_for", "EventName"]

#: Event rows read (and their JSON details parsed) per block: bounds memory at any event count.
EVENT_BLOCK_ROWS = 1 << 16


@dataclass(frozen=True)
class Event:
    t: float
    name: str
    stream: str
    detail: dict[str, Any]


@dataclass
class StreamData:
    name: str
    attrs: dict[str, Any]
    t: np.ndarray
    data: dict[str, np.ndarray]
    units: dict[str, str] = field(default_factory=dict)
    dataset_attrs: dict[str, dict[str, Any]] = field(default_factory=dict)

    # identity and error_counts were checked by the validator when the file was opened.
    @property
    def identity(self) -> dict[str, Any]:
        return json.loads(self.attrs.get("identity", "{}") or "{}")

    @property
    def error_counts(self) -> dict[str, int]:
        return json.loads(self.attrs.get("error_counts", "{}") or "{}")


_plain = plain


class RunFile:
    """An open run. Read-only, except that a run opened with ``mode="r+"`` lets later stages add
    their derived groups (:data:`~hwval.runfile.schema.DERIVED_GROUPS`: /sync, /analysis) through
    :meth:`replace_derived`, and nothing else: the HDF5 handle is private, and the attributes and
    streams handed out are copies (read-only mappings), so /streams, /events and the root's
    attributes cannot be written through it."""

    def __init__(self, path: str | os.PathLike, f: h5py.File) -> None:
        self.path = Path(path)
        self._file = f
        self.attrs: Mapping[str, Any] = MappingProxyType({k: _plain(v) for k, v in f.attrs.items()})

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> "RunFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    @property
    def mode(self) -> str:
        """"r", or "r+" for a run whose derived groups may be replaced."""
        return "r+" if self._file.mode == "r+" else "r"

    # -- root ------------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return bool(self.attrs.get("complete", False))

    @property
    def origin_monotonic_ns(self) -> int:
        return int(self.attrs["origin_monotonic_ns"])

    @property
    def command(self) -> list[str]:
        return schema.command(self._file)

    @property
    def config(self) -> dict[str, Any]:
        return schema.json_attr(self._file, schema.RootAttr.CONFIG, dict, "{}")

    @property
    def stop_reason(self) -> str:
        return str(self.attrs.get(schema.RootAttr.STOP_REASON, "") or "")

    @property
    def marks_lost(self) -> int | None:
        """Marks the workload sent that the capture could not take; None when not recorded."""
        value = self.attrs.get(schema.RootAttr.MARKS_LOST)
        return None if value is None else int(value)

    @property
    def marks_refused(self) -> int | None:
        """Marks refused for a t_ns outside the capture; None when not recorded."""
        value = self.attrs.get(schema.RootAttr.MARKS_REFUSED)
        return None if value is None else int(value)

    @property
    def error_counts(self) -> dict[str, int]:
        """Run-level errors by kind (unreadable or refused marks...); {} when none or not recorded."""
        return schema.error_counts(self._file)

    @property
    def journal(self) -> Path | None:
        """The crash journal beside the file, when one exists."""
        j = journal_path(self.path)
        return j if j.exists() else None

    # -- streams ---------------------------------------------------------------------------
    @property
    def stream_names(self) -> list[str]:
        return list(self._file[STREAMS].keys())

    def stream(self, name: str) -> StreamData:
        try:
            g = self._file[STREAMS][name]
        except KeyError:
            raise KeyError(f"no stream {name!r} in {self.path} (streams: {', '.join(self.stream_names)})") from None
        data, units, dattrs = {}, {}, {}
        for key, ds in g.items():
            if key == "t":
                continue
            data[key] = ds[:]
            dattrs[key] = {k: _plain(v) for k, v in ds.attrs.items()}
            units[key] = dattrs[key].get("unit", "")
        return StreamData(name=name, attrs={k: _plain(v) for k, v in g.attrs.items()},
                          t=g["t"][:], data=data, units=units, dataset_attrs=dattrs)

    def streams(self) -> Iterator[StreamData]:
        for name in self.stream_names:
            yield self.stream(name)

    def stream_reader(self, name: str) -> "StreamReader":
        """Chunked, lazy access to one stream (for runs too large to load whole)."""
        return StreamReader(self, name)

    # -- derived groups --------------------------------------------------------------------
    def read_derived(self, group: str) -> dict[str, "DerivedEntry"]:
        return read_derived(self, group)

    def replace_derived(self, group: str, entries: dict[str, "DerivedEntry"], whole: bool = False) -> None:
        replace_derived(self, group, entries, whole)

    # -- events ----------------------------------------------------------------------------
    @property
    def events(self) -> list[Event]:
        """All events in time order (loads them all: see :meth:`iter_event_rows` for big runs)."""
        return [Event(t, name, stream, detail)
                for t, name, stream, detail in self.iter_event_rows(parsed=True)]

    @property
    def event_count(self) -> int:
        return int(self._file[EVENTS]["t"].shape[0]) if EVENTS in self._file else 0

    def event_times(self) -> np.ndarray:
        """``/events/t`` in stored order (8 bytes per event)."""
        return self._file[EVENTS]["t"][:] if EVENTS in self._file else np.zeros(0)

    def event_order(self) -> np.ndarray | None:
        """Row indices in time order, or None when the rows are stored in time order already
        (the writer keeps them so; a killed capture's file may not be)."""
        t = self.event_times()
        if len(t) < 2 or bool(np.all(t[1:] >= t[:-1])):
            return None
        return np.argsort(t, kind="stable")

    def iter_event_rows(self, start: int = 0, stop: int | None = None, parsed: bool = False
                        ) -> Iterator[tuple[float, str, str, Any]]:
        """Events ``[start, stop)`` in time order as ``(t, name, stream, detail)``, read and
        checked block by block: detail is the JSON text (a dict when ``parsed``); a detail that is
        not a JSON object raises RunFileError."""
        n = self.event_count
        stop = n if stop is None else min(stop, n)
        if start >= stop:
            return
        ev = self._file[EVENTS]
        order = self.event_order()
        for lo in range(start, stop, EVENT_BLOCK_ROWS):
            hi = min(lo + EVENT_BLOCK_ROWS, stop)
            rows = np.arange(lo, hi) if order is None else order[lo:hi]
            cols = _read_rows(ev, rows)
            details = cols["detail"]
            try:
                dicts = _parse_details(details, rows)
            except RunFileError as exc:
                raise RunFileError(f"{self.path}: {exc}") from None
            yield from zip(cols["t"].tolist(), cols["name"], cols["stream"], dicts if parsed else details)

    def event_rows_named(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(t, stream)`` of every event called ``name``, scanning the name column by blocks."""
        if not self.event_count:
            return np.zeros(0), np.zeros(0, dtype=object)
        ev = self._file[EVENTS]
        wanted = name.encode()
        ts, streams = [], []
        for lo in range(0, self.event_count, EVENT_BLOCK_ROWS):
            names = ev["name"][lo:lo + EVENT_BLOCK_ROWS]  # raw bytes: no decoding of every row
            hits = np.flatnonzero(names == wanted) + lo
            if len(hits):
                ts.append(ev["t"][hits])
                streams.append(ev["stream"].asstr(errors="replace")[hits])
        if not ts:
            return np.zeros(0), np.zeros(0, dtype=object)
        return np.concatenate(ts), np.concatenate(streams)


def _read_rows(ev: h5py.Group, rows: np.ndarray) -> dict[str, Any]:
    """The event columns at ``rows`` (any order): one contiguous read when the rows are close
    together (late marks only move a little), else a point selection in increasing order."""
    lo, hi = int(rows.min()), int(rows.max()) + 1
    out: dict[str, Any] = {}
    if hi - lo <= 4 * len(rows):
        pick = rows - lo
        for key in schema.EVENT_FIELDS:
            ds = ev[key] if key == "t" else ev[key].asstr(errors="replace")
            out[key] = ds[lo:hi][pick]
        return out
    order = np.argsort(rows, kind="stable")
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    for key in schema.EVENT_FIELDS:
        ds = ev[key] if key == "t" else ev[key].asstr(errors="replace")
        out[key] = ds[rows[order]][back]
    return out


def _parse_details(details: Any, rows: np.ndarray) -> list[dict[str, Any]]:
    """Every detail as a dict ("" is {}); each must be JSON text of an object. One parse of the
    whole block is much faster than one per row; when it fails, the rows are parsed one by one,
    so the one at fault is named."""
    if all(not d or (d[0] == "{" and d[-1] == "}") for d in details):
        try:
            parsed = json.loads("[" + ",".join(d or "{}" for d in details) + "]")
        except ValueError:
            parsed = None
        if parsed is not None and len(parsed) == len(details) and all(isinstance(p, dict) for p in parsed):
            return parsed
    return [schema.event_detail(d, row) for d, row in zip(details, rows.tolist())]


def open_run(path: str | os.PathLike, mode: str = "r") -> RunFile:
    """Open a run file for reading (``mode="r+"`` for stages that add groups such as /sync).

    Raises :class:`RunFileError` with an actionable message for a missing file, a file that is
    not HDF5 or not a hwval run, a newer schema, or a damaged file with a journal to recover.
    """
    path = Path(path)
    if journal_in_use(path):
        # HDF5 locks a file open for writing, and a journal names recovery: say what is going on.
        raise RunFileError(f"{path}: a capture is still writing this run; wait until it finishes")
    recover_hint = recover_hint_for(path)
    if not path.exists():
        if recover_hint:
            raise RunFileError(f"{path}: run file missing{recover_hint}")
        raise RunFileError(f"{path}: no such file")
    try:
        f = h5py.File(path, mode)
    except OSError as exc:
        if recover_hint:
            raise RunFileError(f"{path}: cannot be opened ({_short(exc)}){recover_hint}") from None
        if not h5py.is_hdf5(path):
            raise RunFileError(f"{path}: not an HDF5 file, so not a hwval run") from None
        raise RunFileError(f"{path}: cannot be opened as HDF5 ({_short(exc)})") from None
    try:
        schema.validate(f)
    except RunFileError as exc:
        f.close()
        raise RunFileError(f"{path}: {exc}") from None
    return RunFile(path, f)


def recover_hint_for(path: str | os.PathLike) -> str:
    """``"; a crash journal exists: run ..."`` when a killed capture left a journal, else ``""``."""
    if journal_path(path).exists():
        return f"; a crash journal exists: run `hwval recover {path}` to rebuild it"
    return ""


def _short(exc: OSError) -> str:
    return str(exc).split("(")[0].strip() or type(exc).__name__


# -- derived groups (/sync, /analysis) and chunked reads --------------------------------------
# Interface contract for the stages after capture. Sync and analysis add their groups only
# through these two methods; raw /streams and /events are never written after capture.

@dataclass
class DerivedEntry:
    """One derived group: its attrs, its datasets, and nested entries (e.g. per-phase results)."""

    attrs: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, np.ndarray] = field(default_factory=dict)
    children: dict[str, "DerivedEntry"] = field(default_factory=dict)


def _attr_value(value: Any) -> Any:
    # h5py stores lists of numbers as arrays, dicts/other lists as JSON text, None as "".
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in value):
            return np.asarray(value, dtype=float)
        return json.dumps(list(value))
    return value


def _write_entry(parent: h5py.Group, name: str, entry: DerivedEntry) -> None:
    if name in parent:
        del parent[name]
    g = parent.create_group(name)
    for key, value in entry.attrs.items():
        g.attrs[key] = _attr_value(value)
    for key, arr in entry.datasets.items():
        g.create_dataset(key, data=np.asarray(arr))
    for key, child in entry.children.items():
        _write_entry(g, key, child)


def _read_entry(g: h5py.Group) -> DerivedEntry:
    entry = DerivedEntry(attrs={k: _plain(v) for k, v in g.attrs.items()})
    for key, obj in g.items():
        if isinstance(obj, h5py.Group):
            entry.children[key] = _read_entry(obj)
        else:
            entry.datasets[key] = obj[()]
    return entry


def _check_group(group: str) -> None:
    if group not in DERIVED_GROUPS:
        raise ValueError(f"derived group {group!r}: expected one of {', '.join(DERIVED_GROUPS)}")


def read_derived(run: "RunFile", group: str) -> dict[str, DerivedEntry]:
    """Every entry of ``/sync`` or ``/analysis`` (empty when the group is absent)."""
    _check_group(group)
    if group not in run._file:
        return {}
    return {name: _read_entry(obj) for name, obj in run._file[group].items()
            if isinstance(obj, h5py.Group)}


def replace_derived(run: "RunFile", group: str, entries: dict[str, DerivedEntry],
                    whole: bool = False) -> None:
    """Write ``entries`` under ``/sync`` or ``/analysis`` of a run opened with ``mode="r+"``.

    ``whole=True`` replaces the group entirely (``hwval sync`` re-run); otherwise only the named
    entries are replaced and the others kept (one comparison re-analysed). This is the only
    write a run allows: every name in ``entries`` (entries, datasets, children, at any depth) is
    checked before anything is written, so a name that would reach outside the group (an
    absolute path such as ``/streams/wall/t``, or ``a/b``) is refused with the file unchanged.
    """
    _check_group(group)
    if run._file.mode != "r+":
        raise RunFileError(f"{run.path}: opened read-only; open with mode='r+' to add /{group}")
    for name, entry in entries.items():
        _check_names(f"/{group}", name, entry)
    if whole and group in run._file:
        del run._file[group]  # unlinks /group only (a crafted alias is not followed)
    parent = _derived_parent(run, group)
    for name, entry in entries.items():
        _write_entry(parent, name, entry)
    run._file.flush()


def _check_names(where: str, name: Any, entry: Any) -> None:
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise ValueError(f"{where} entry name {name!r}: must be non-empty text without '/'")
    if not isinstance(entry, DerivedEntry):
        raise TypeError(f"{where}/{name}: expected a DerivedEntry, got {type(entry).__name__}")
    for key in entry.datasets:  # (attribute names are not paths: they cannot reach out)
        if not isinstance(key, str) or not key or "/" in key or key in (".", ".."):
            raise ValueError(f"{where}/{name}: dataset name {key!r} must be non-empty text without '/'")
    for key, child in entry.children.items():
        _check_names(f"{where}/{name}", key, child)


def _derived_parent(run: "RunFile", group: str) -> h5py.Group:
    """``/group``, created when absent; refused when the file's ``/group`` is a link to another
    object (a crafted file could make /sync an alias of /streams)."""
    f = run._file
    link = f.get(group, getlink=True)
    if link is None:
        return f.create_group(group)
    obj = f[group] if isinstance(link, h5py.HardLink) else None
    raw = [f["/"], *(f[other] for other in (STREAMS, EVENTS) if other in f)]
    if STREAMS in f and isinstance(f[STREAMS], h5py.Group):
        raw += [g for g in f[STREAMS].values() if isinstance(g, h5py.Group)]
    if not isinstance(obj, h5py.Group) or any(obj == other for other in raw):
        raise RunFileError(f"{run.path}: /{group} is not a group of its own (a link to another "
                           "object); nothing was written")
    return obj


class StreamReader:
    """Lazy, chunked access to one stream: nothing is loaded until asked for.

    ``t`` is monotonic non-decreasing (receipt stamps), so time ranges map to index ranges by a
    binary search that reads only a few chunks of ``t``.
    """

    def __init__(self, run: "RunFile", name: str) -> None:
        try:
            self._group = run._file[STREAMS][name]
        except KeyError:
            raise KeyError(f"no stream {name!r} in {run.path} (streams: {', '.join(run.stream_names)})") from None
        self.name = name
        self.attrs: Mapping[str, Any] = MappingProxyType({k: _plain(v) for k, v in self._group.attrs.items()})
        self._t = self._group["t"]

    @property
    def n(self) -> int:
        return int(self._t.shape[0])

    @property
    def keys(self) -> list[str]:
        return [k for k in self._group.keys() if k != "t"]

    def dataset_attrs(self, key: str) -> dict[str, Any]:
        return {k: _plain(v) for k, v in self._group[key].attrs.items()}

    def index_at(self, t_s: float) -> int:
        """The first index whose stamp is >= ``t_s`` (``n`` when none is)."""
        lo, hi = 0, self.n
        while hi - lo > 4096:   # narrow with single-element reads, then one block read
            mid = (lo + hi) // 2
            if self._t[mid] < t_s:
                lo = mid + 1
            else:
                hi = mid
        return lo + int(np.searchsorted(self._t[lo:hi], t_s, side="left"))

    def read(self, keys: list[str], start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """``t`` and the named keys over rows ``[start, stop)``."""
        stop = self.n if stop is None else stop
        out = {"t": self._t[start:stop]}
        for key in keys:
            out[key] = self._group[key][start:stop]
        return out

    def iter_chunks(self, keys: list[str], rows: int = 1 << 20,
                    start: int = 0, stop: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Rows ``[start, stop)`` in blocks of at most ``rows``."""
        stop = self.n if stop is None else stop
        for lo in range(start, stop, rows):
            yield self.read(keys, lo, min(lo + rows, stop))

