"""HDF5 writer subscriber: run-file schema version 1 (see the README's *Run file*).

Datasets are chunked and extendable; the file is flushed at least every ``flush_interval_s`` so
the on-disk file is consistent and holds everything but the last moments. The crash journal (a
separate subscriber) covers the case where the process dies in the middle of an HDF5 write.
"""

from __future__ import annotations

import json
import time
from typing import Any

import h5py
import numpy as np

from hwval.capture.documents import Descriptor, Document, Event, Page, Start, Stop
from hwval.schema import EVENT_FIELDS, SCHEMA_NAME, SCHEMA_VERSION

CHUNK_ROWS = 4096
STR = h5py.string_dtype("utf-8")


class HDF5Writer:
    """Pages are buffered and written to HDF5 in one append per dataset every
    ``flush_interval_s``, then the file is flushed: each h5py append costs hundreds of
    microseconds, so batching keeps the capture's CPU cost per reading low. The journal, written
    per page, covers what is still buffered here if the process dies."""

    def __init__(self, path: str, flush_interval_s: float = 0.5) -> None:
        self.path = path
        self.flush_interval_s = flush_interval_s
        self.file: h5py.File | None = None
        self._last_flush = 0.0
        self._datasets: dict[str, tuple[h5py.Dataset, dict[str, h5py.Dataset]]] = {}
        self._pending: dict[str, list[Page]] = {}
        self._pending_events: list[Event] = []

    def __call__(self, doc: Document) -> None:
        if isinstance(doc, Page):
            self._page(doc)
        elif isinstance(doc, Event):
            self._event(doc)
        elif isinstance(doc, Descriptor):
            self._descriptor(doc)
        elif isinstance(doc, Start):
            self._start(doc)
        elif isinstance(doc, Stop):
            self._stop(doc)

    def tick(self) -> None:
        if self.file is not None and time.monotonic() - self._last_flush >= self.flush_interval_s:
            self._write_pending()
            self.file.flush()
            self._last_flush = time.monotonic()

    def _write_pending(self) -> None:
        for stream, pages in self._pending.items():
            if not pages:
                continue
            t_ds, key_ds = self._datasets[stream]
            append_columns(t_ds, [p.t for p in pages])
            for key, ds in key_ds.items():
                append_columns(ds, [page_column(p, key) for p in pages])
            pages.clear()
        if self._pending_events:
            append_events(self.file["events"], self._pending_events)
            self._pending_events = []

    # ------------------------------------------------------------------------------------
    def _start(self, doc: Start) -> None:
        f = self.file = h5py.File(self.path, "w")
        write_root_attrs(f, doc)
        f.create_group("streams")
        create_events_group(f)
        f.flush()
        self._last_flush = time.monotonic()

    def _descriptor(self, doc: Descriptor) -> None:
        assert self.file is not None
        g = create_stream_group(self.file["streams"], doc.info)
        self._datasets[doc.info.name] = (g["t"], {k: g[k] for k in doc.info.key_names()})
        self._pending[doc.info.name] = []

    def _page(self, doc: Page) -> None:
        self._pending[doc.stream].append(doc)

    def _event(self, doc: Event) -> None:
        self._pending_events.append(doc)

    def _stop(self, doc: Stop) -> None:
        if self.file is None:
            return
        self._write_pending()
        finalize(self.file, doc)
        self.file.close()
        self.file = None


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


def finalize(f: h5py.File, doc: Stop) -> None:
    """Stream statistics, events in time order, exit code and ``complete``; ``complete`` is
    written last so a file that says complete has everything else."""
    for name, stats in doc.stream_stats.items():
        if name in f["streams"]:
            g = f["streams"][name]
            g.attrs["dropped_readings"] = int(stats.get("dropped", 0))
            g.attrs["missed_deadlines"] = int(stats.get("missed_deadlines", 0))
            g.attrs["error_counts"] = json.dumps(stats.get("error_counts", {}), sort_keys=True)
    ev = f["events"]
    if ev["t"].shape[0] > 1:
        # Marks are stamped by the workload and may reach us after later events: sort by time
        # (stable, so equal stamps keep their arrival order).
        order = np.argsort(ev["t"][:], kind="stable")
        for name in EVENT_FIELDS:
            data = ev[name][:]
            ev[name][:] = data[order]
    f.attrs["exit_code"] = int(doc.exit_code)
    if doc.reason:
        f.attrs["stop_reason"] = doc.reason
    f.flush()
    f.attrs["complete"] = bool(doc.complete)
    f.flush()


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
