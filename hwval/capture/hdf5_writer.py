"""HDF5 writer subscriber: turns the capture's documents into a run file through
:mod:`hwval.runfile.layout`.

Datasets are chunked and extendable; the file is flushed at least every ``flush_interval_s`` so
the on-disk file is consistent and holds everything but the last moments. The crash journal (a
separate subscriber) covers the case where the process dies in the middle of an HDF5 write.

A write failure (a full disk) is honest and contained: the first one stops the writer (later
pages are left to the journal), is raised once for the capture to report, and the file is then
finished as incomplete with the failure as ``stop_reason`` and always closed. HDF5 must flush
its caches to close a file; on a full disk it cannot, and an unclosable file crashes the
interpreter at exit. So the writer keeps a small preallocated reserve file beside the run and
deletes it when a write fails, which gives the close the room it needs.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time

import h5py

from hwval.runfile import layout
from hwval.runfile.claim import reserve_path
from hwval.runfile.documents import Descriptor, Document, Event, Page, Start, Stop


#: Chunk cache per dataset: two chunks. Appends only touch the last chunk, and HDF5's 1 MiB
#: default per dataset made the capture's memory grow with every reading until it filled.
CHUNK_CACHE_BYTES = 2 * layout.CHUNK_ROWS * 8


def one_line(exc: BaseException) -> str:
    """An exception as one short line: HDF5's messages span lines and carry buffer addresses,
    which would make each repeat of one failure look new."""
    text = " ".join(str(exc).split())
    reason = re.search(r"error message = '([^']*)'", text)
    if reason:
        text = f"{text.split('(')[0].strip()}: {reason.group(1)}"
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return f"{type(exc).__name__}: {text[:200]}"

log = logging.getLogger(__name__)


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
        #: The first write failure, one line; once set, nothing more is written but the finish.
        self.failure: str | None = None
        self._reserve = reserve_path(path)

    def __call__(self, doc: Document) -> None:
        if self.failure is not None:
            if isinstance(doc, Stop):
                self._finish_failed(doc)
            return
        try:
            if isinstance(doc, Page):
                self._pending[doc.stream].append(doc)
            elif isinstance(doc, Event):
                self._pending_events.append(doc)
            elif isinstance(doc, Descriptor):
                self._descriptor(doc)
            elif isinstance(doc, Start):
                self._start(doc)
            elif isinstance(doc, Stop):
                self._stop(doc)
        except Exception as exc:  # a write failure: contain it, finish honestly (see module doc)
            self._failed(exc, doc)
            raise

    def tick(self) -> None:
        if self.file is None or self.failure is not None:
            return
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            try:
                self._write_pending()
                self.file.flush()
            except Exception as exc:  # same policy as __call__
                self._failed(exc, None)
                raise
            self._last_flush = time.monotonic()

    def _write_pending(self) -> None:
        assert self.file is not None
        for stream, pages in self._pending.items():
            if not pages:
                continue
            t_ds, key_ds = self._datasets[stream]
            n0 = t_ds.shape[0]
            try:
                layout.append_columns(t_ds, [p.t for p in pages])
                for key, ds in key_ds.items():
                    layout.append_columns(ds, [layout.page_column(p, key) for p in pages])
            except OSError:
                # All or nothing per stream: a failure between two columns (a full disk) would leave
                # t longer than its values, a file no reader accepts; the journal keeps these pages.
                for ds in (t_ds, *key_ds.values()):
                    if ds.shape[0] > n0:
                        ds.resize((n0,))
                raise
            pages.clear()
        if self._pending_events:
            layout.append_events_in_order(self.file["events"], self._pending_events)
            self._pending_events = []

    # ------------------------------------------------------------------------------------
    def _start(self, doc: Start) -> None:
        f = self.file = h5py.File(self.path, "w", rdcc_nbytes=CHUNK_CACHE_BYTES)
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

    def _stop(self, doc: Stop) -> None:
        if self.file is None:
            return
        self._write_pending()
        layout.finalize(self.file, doc)
        self._close()

    # -- failure ---------------------------------------------------------------------------
    def _failed(self, exc: BaseException, doc: Document | None) -> None:
        where = f" ({type(doc).__name__.lower()})" if doc is not None else ""
        self.failure = f"writing {self.path} failed{where}: {one_line(exc)}"
        self._pending.clear()
        self._pending_events = []
        self._reserve.unlink(missing_ok=True)  # room for the finish below and the close
        if self.file is not None:
            try:
                self.file.attrs["stop_reason"] = self.failure
                self.file.flush()
            except Exception as exc:  # best effort: the finish at Stop writes the reason again
                log.debug("stop_reason not written yet: %s", one_line(exc))

    def _finish_failed(self, doc: Stop) -> None:
        if self.file is None:
            return
        try:
            layout.finalize(self.file, dataclasses.replace(doc, complete=False,
                                                           reason=self.failure or doc.reason))
        finally:
            self._close()

    def _close(self) -> None:
        f, self.file = self.file, None
        try:
            if f is not None:
                f.close()
        finally:
            self._reserve.unlink(missing_ok=True)

