"""HDF5 writer subscriber: turns the capture's documents into a run file through
:mod:`hwval.runfile.layout`.

Datasets are chunked and extendable; the file is flushed at least every ``flush_interval_s`` so
the on-disk file is consistent and holds everything but the last moments. The crash journal (a
separate subscriber) covers the case where the process dies in the middle of an HDF5 write.
"""

from __future__ import annotations

import time

import h5py

from hwval.runfile import layout
from hwval.runfile.documents import Descriptor, Document, Event, Page, Start, Stop


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
            layout.append_columns(t_ds, [p.t for p in pages])
            for key, ds in key_ds.items():
                layout.append_columns(ds, [layout.page_column(p, key) for p in pages])
            pages.clear()
        if self._pending_events:
            layout.append_events(self.file["events"], self._pending_events)
            self._pending_events = []

    # ------------------------------------------------------------------------------------
    def _start(self, doc: Start) -> None:
        f = self.file = h5py.File(self.path, "w")
        layout.write_root_attrs(f, doc)
        f.create_group("streams")
        layout.create_events_group(f)
        f.flush()
        self._last_flush = time.monotonic()

    def _descriptor(self, doc: Descriptor) -> None:
        assert self.file is not None
        g = layout.create_stream_group(self.file["streams"], doc.info)
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
        layout.finalize(self.file, doc)
        self.file.close()
        self.file = None


