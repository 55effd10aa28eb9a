"""Run-file layout (schema version 1, see the README's *Run file*): creating, appending to and
finalising the HDF5 groups. Used by the capture's writer subscriber and by journal recovery.

Datasets are chunked and extendable (``CHUNK_ROWS``), so a run can grow without a known length.
"""

from __future__ import annotations

import json
from typing import Any

import h5py
import numpy as np

from hwval.runfile.documents import Event, Page, Start, Stop
from hwval.runfile.schema import EVENT_FIELDS, SCHEMA_NAME, SCHEMA_VERSION, RootAttr

CHUNK_ROWS = 4096
STR = h5py.string_dtype("utf-8")


def write_root_attrs(f: h5py.File, doc: Start) -> None:
    f.attrs["schema"] = SCHEMA_NAME
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["hwval_version"] = doc.hwval_version
    f.attrs["run_id"] = doc.run_id
    f.attrs["created_utc"] = doc.created_utc
    f.attrs["hostname"] = doc.hostname
    f.attrs["command"] = json.dumps(doc.command)
    f.attrs["exit_code"] = -1  # -1 until the capture finishes
    f.attrs["complete"] = False
    f.attrs["origin_monotonic_ns"] = np.int64(doc.origin_monotonic_ns)
    f.attrs["origin_realtime_ns"] = np.int64(doc.origin_realtime_ns)
    f.attrs["config"] = doc.config_json


def create_events_group(f: h5py.File) -> h5py.Group:
    ev = f.create_group("events")
    for name in EVENT_FIELDS:
        dtype = np.float64 if name == "t" else STR
        ev.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1024,))
    return ev


def create_stream_group(streams: h5py.Group, info: Any) -> h5py.Group:
    g = streams.create_group(info.name)
    g.attrs["kind"] = info.kind
    g.attrs["driver"] = info.driver
    g.attrs["resource"] = info.resource
    g.attrs["identity"] = json.dumps(dict(info.identity), default=str, sort_keys=True)
    g.attrs["scope"] = info.scope
    g.attrs["period_s"] = float(info.period_s) if info.period_s is not None else np.nan
    g.attrs["emulated"] = bool(info.emulated)
    g.attrs["notes"] = json.dumps(list(info.notes))
    t = g.create_dataset("t", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(CHUNK_ROWS,))
    t.attrs["unit"] = "s"
    for key in info.keys:
        ds = g.create_dataset(key.name, shape=(0,), maxshape=(None,), dtype=np.float64,
                              chunks=(CHUNK_ROWS,), fillvalue=np.nan)
        ds.attrs["unit"] = key.unit
        if key.semantics is not None:
            ds.attrs["semantics"] = key.semantics
        if key.window_s is not None:
            ds.attrs["window_s"] = float(key.window_s)
        if key.description:
            ds.attrs["description"] = key.description
    return g


def append_events(group: h5py.Group, events: list[Event]) -> None:
    n0 = group["t"].shape[0]
    n1 = n0 + len(events)
    for name in EVENT_FIELDS:
        group[name].resize((n1,))
    group["t"][n0:n1] = [e.t for e in events]
    group["name"][n0:n1] = [e.name for e in events]
    group["stream"][n0:n1] = [e.stream for e in events]
    group["detail"][n0:n1] = [json.dumps(e.detail, default=str, sort_keys=True) for e in events]


def append_events_in_order(group: h5py.Group, events: list[Event]) -> None:
    """Append ``events`` keeping ``/events`` in time order, touching only what arrived late.

    Marks are stamped by the workload and may reach the capture after later events (they wait
    in the workload's backlog while the capture is behind). Events newer than the last one
    written are appended; a late one is merged into the tail it belongs in, so finishing a run
    never re-sorts every event (that took 29 s at 1e6 events). Equal stamps keep arrival order.
    """
    if not events:
        return
    events = sorted(events, key=lambda e: e.t)  # stable
    n = group["t"].shape[0]
    if n == 0 or events[0].t >= float(group["t"][n - 1]):
        append_events(group, events)
        return
    k = _first_after(group["t"], events[0].t)
    tail = {name: (group[name][k:n] if name == "t" else group[name].asstr()[k:n]) for name in EVENT_FIELDS}
    new = {"t": np.array([e.t for e in events], dtype=np.float64),
           "name": np.array([e.name for e in events], dtype=object),
           "stream": np.array([e.stream for e in events], dtype=object),
           "detail": np.array([json.dumps(e.detail, default=str, sort_keys=True) for e in events], dtype=object)}
    # the written tail first: on equal stamps it arrived first
    order = np.argsort(np.concatenate([tail["t"], new["t"]]), kind="stable")
    n1 = n + len(events)
    for name in EVENT_FIELDS:
        group[name].resize((n1,))
        merged = np.concatenate([np.asarray(tail[name], dtype=new[name].dtype), new[name]])
        group[name][k:n1] = merged[order]


def _first_after(t: h5py.Dataset, t0: float, block: int = 4096) -> int:
    """Index of the first row of the sorted column ``t`` later than ``t0``, read from the end by
    blocks (late events belong near the end)."""
    hi = t.shape[0]
    while hi > 0:
        lo = max(0, hi - block)
        chunk = t[lo:hi]
        if chunk[0] <= t0 or lo == 0:
            return lo + int(np.searchsorted(chunk, t0, side="right"))
        hi = lo
        block *= 2
    return 0


def finalize(f: h5py.File, doc: Stop) -> None:
    """Stream statistics, exit code and ``complete``; ``complete`` is written last so a file
    that says complete has everything else. Events are already in time order
    (:func:`append_events_in_order`)."""
    for name, stats in doc.stream_stats.items():
        if name in f["streams"]:
            g = f["streams"][name]
            g.attrs["dropped_readings"] = int(stats.get("dropped", 0))
            g.attrs["missed_deadlines"] = int(stats.get("missed_deadlines", 0))
            g.attrs["error_counts"] = json.dumps(stats.get("error_counts", {}), sort_keys=True)
    f.attrs["exit_code"] = int(doc.exit_code)
    f.attrs[RootAttr.ERROR_COUNTS] = json.dumps(doc.error_counts, sort_keys=True)
    if doc.reason:
        f.attrs["stop_reason"] = doc.reason
    write_mark_counts(f, doc)
    f.flush()
    f.attrs["complete"] = bool(doc.complete)
    f.flush()


def write_mark_counts(f: h5py.File, doc: Stop) -> None:
    for attr, n in ((RootAttr.MARKS_LOST, doc.marks_lost), (RootAttr.MARKS_REFUSED, doc.marks_refused)):
        if n is not None:
            f.attrs[attr] = int(n)


def append_columns(ds: h5py.Dataset, columns: list[np.ndarray]) -> None:
    """Append the concatenation of ``columns`` to ``ds`` in one resize and one write (each h5py
    write has a large fixed cost)."""
    values = np.concatenate(columns) if len(columns) > 1 else columns[0]
    n0 = ds.shape[0]
    ds.resize((n0 + len(values),))
    ds[n0:] = values


def page_column(page: Page, key: str) -> np.ndarray:
    """``page``'s values of ``key``, NaN where the page does not carry it."""
    col = page.values.get(key)
    return col if col is not None else np.full(len(page.t), np.nan)
