"""Crash journal: an append-only companion file ``RUN.h5.journal`` written ahead of the HDF5
file, so a capture killed at any instant (even SIGKILL, even inside an HDF5 write) loses nothing
but its last page (at most ~0.2 s).

Each record is one ``write()``: a 4-byte little-endian header length, a JSON header, then the
page's float64 arrays as raw bytes. The operating system keeps written bytes when the process
dies, so no fsync is needed for the kill case. A torn final record is ignored on recovery.
``hwval recover RUN.h5`` rebuilds the run file from the journal; a clean finish deletes it.

The capture holds an exclusive ``flock`` on the journal from its first record until the run
file is finished. The kernel drops the lock when the process dies, even by SIGKILL, so a locked
journal means "a capture is writing this run now" (``hwval info`` says so instead of suggesting
a recovery, and ``hwval recover`` refuses: rebuilding under a live capture would replace its
file), and an unlocked one left beside a run file means the capture was killed.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import mmap
import os
import struct
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from hwval.runfile.documents import Descriptor, Document, Event, Page, Start, Stop
from hwval.runfile.layout import (append_columns, append_events, create_events_group,
                                       create_stream_group, finalize, page_column,
                                       write_root_attrs)
from hwval.runfile.schema import JOURNAL_SUFFIX
from hwval.sources.base import Key, StreamInfo

_LEN = struct.Struct("<I")


def journal_path(run_path: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(run_path)}{JOURNAL_SUFFIX}")


class JournalInUse(Exception):
    """A live capture holds the journal: the run is being written now."""


def journal_in_use(run_path: str | os.PathLike) -> bool:
    """True while a capture process is writing ``run_path`` (it holds the journal's lock)."""
    try:
        fd = os.open(journal_path(run_path), os.O_RDONLY)
    except OSError:  # no journal (or no such folder, or not ours to read): no capture we can see
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the shared lock taken just above
    return False


class JournalWriter:
    def __init__(self, run_path: str, fd: int | None = None) -> None:
        """``fd``: the journal already created and locked by :func:`hwval.runfile.claim.claim_output`
        (the capture's way); without it the journal is opened at ``Start``."""
        self.path = journal_path(run_path)
        self._claimed_fd = fd
        self.fd: int | None = None
        #: Size of the journal up to its last whole record: a failed write is cut back to it,
        #: so a full disk leaves a journal that still reads back, only shorter.
        self._size = 0
        self._broken = False

    def __call__(self, doc: Document) -> None:
        if isinstance(doc, Start) and self._claimed_fd is not None:
            self.fd, self._claimed_fd = self._claimed_fd, None
            self._size = os.fstat(self.fd).st_size
            self._write({"type": "start", **dataclasses.asdict(doc)})
        elif isinstance(doc, Start):
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                # Held until close(): see the module docstring. Locked before truncating, and
                # LOCK_NB: a second capture of the same path (which the output checks refuse)
                # must fail, not wait or wipe the live capture's journal.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.ftruncate(fd, 0)
            except OSError:
                os.close(fd)
                raise
            self.fd = fd
            self._size = 0
            self._write({"type": "start", **dataclasses.asdict(doc)})
        elif self.fd is None or self._broken:
            return
        elif isinstance(doc, Page):
            keys = list(doc.values)
            payload = [np.ascontiguousarray(doc.t, dtype="<f8").tobytes()]
            payload += [np.ascontiguousarray(doc.values[k], dtype="<f8").tobytes() for k in keys]
            self._write({"type": "page", "stream": doc.stream, "n": len(doc.t), "keys": keys},
                        b"".join(payload))
        elif isinstance(doc, Event):
            self._write({"type": "event", **dataclasses.asdict(doc)})
        elif isinstance(doc, Descriptor):
            self._write({"type": "descriptor", "info": dataclasses.asdict(doc.info)})
        elif isinstance(doc, Stop):
            # The fd (and its lock) stays open until the run file is finished: close()/discard().
            self._write({"type": "stop", **dataclasses.asdict(doc)})

    def _write(self, header: dict, payload: bytes = b"") -> None:
        assert self.fd is not None
        head = json.dumps(header, default=str).encode()
        record = memoryview(_LEN.pack(len(head)) + head + payload)
        try:
            done = 0
            while done < len(record):  # a regular file may take a write in parts (disk full)
                done += os.write(self.fd, record[done:])
        except OSError:
            # Keep the journal readable: drop the torn record and stop journaling (the error is
            # reported by the recorder as a subscriber error and the capture exits non-zero).
            self._broken = True
            try:
                os.ftruncate(self.fd, self._size)
            except OSError:
                pass  # the reader ignores a torn final record anyway
            raise
        self._size += len(record)

    def close(self) -> None:
        """Release the journal (and its lock), keeping it on disk for ``hwval recover``."""
        for fd in (self.fd, self._claimed_fd):
            if fd is not None:
                os.close(fd)
        self.fd = self._claimed_fd = None

    def discard(self) -> None:
        """Remove the journal after the run file was finished cleanly."""
        self.path.unlink(missing_ok=True)  # unlinked before the lock goes: never seen unlocked
        self.close()


def read_journal(path: str | os.PathLike) -> Iterator[Document]:
    """Documents from a journal, stopping quietly at a torn final record.

    The file is memory-mapped, not read whole: a long capture's journal can be larger than the
    memory one would want a recovery to take."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield from _records(data)


def _records(data: mmap.mmap) -> Iterator[Document]:
    pos = 0
    while pos + _LEN.size <= len(data):
        (n,) = _LEN.unpack_from(data, pos)
        start = pos + _LEN.size
        if start + n > len(data):
            return
        try:
            header = json.loads(data[start:start + n])
        except ValueError:
            return
        pos = start + n
        kind = header.pop("type", None)
        if kind == "page":
            size = 8 * header["n"] * (1 + len(header["keys"]))
            if pos + size > len(data):
                return
            arrays = np.frombuffer(data, dtype="<f8", count=size // 8, offset=pos)
            arrays = arrays.reshape(1 + len(header["keys"]), header["n"])
            pos += size
            page = Page(header["stream"], arrays[0].copy(),
                        {k: arrays[i + 1].copy() for i, k in enumerate(header["keys"])})
            del arrays  # a view into the mapping: it must not outlive it
            yield page
        elif kind == "event":
            yield Event(**header)
        elif kind == "descriptor":
            info = header["info"]
            info["keys"] = tuple(Key(**k) for k in info["keys"])
            info["notes"] = tuple(info.get("notes", ()))
            yield Descriptor(StreamInfo(**info))
        elif kind == "start":
            yield Start(**header)
        elif kind == "stop":
            yield Stop(**header)


#: Samples per stream gathered before one append to the rebuilt file (bounds recovery memory).
RECOVER_BATCH = 1 << 20


def recover(run_path: str | os.PathLike) -> dict:
    """Rebuild ``run_path`` from its journal. Returns a summary. The rebuilt file keeps
    ``complete`` false unless the journal holds the clean stop, and gets ``recovered`` true.

    Raises :class:`JournalInUse` while a capture is still writing the run."""
    jpath = journal_path(run_path)
    if not jpath.exists():
        raise FileNotFoundError(f"{jpath}: no journal to recover from")
    if journal_in_use(run_path):
        raise JournalInUse(f"{run_path}: a capture is still writing this run (its journal {jpath} is "
                           "locked); wait for it to finish, or stop it, before recovering")
    tmp = Path(f"{os.fspath(run_path)}.recovering")
    pending: dict[str, list[Page]] = {}
    samples: dict[str, int] = {}
    events: list[Event] = []
    stop: Stop | None = None
    with h5py.File(tmp, "w") as f:
        started = False
        for doc in read_journal(jpath):
            if isinstance(doc, Start):
                write_root_attrs(f, doc)
                f.create_group("streams")
                started = True
            elif not started:
                break
            elif isinstance(doc, Descriptor):
                create_stream_group(f["streams"], doc.info)
            elif isinstance(doc, Page):
                pages = pending.setdefault(doc.stream, [])
                pages.append(doc)
                samples[doc.stream] = samples.get(doc.stream, 0) + len(doc.t)
                if sum(len(p.t) for p in pages) >= RECOVER_BATCH:
                    _append_pages(f["streams"][doc.stream], pages)
            elif isinstance(doc, Event):
                events.append(doc)
            elif isinstance(doc, Stop):
                stop = doc
        if not started:
            raise ValueError(f"{jpath}: journal has no start record; nothing to recover")
        for stream, pages in pending.items():
            _append_pages(f["streams"][stream], pages)
        ev = create_events_group(f)
        if events:
            append_events(ev, events)
        finalize(f, stop or Stop(exit_code=-1, complete=False, reason="recovered from journal"))
        f.attrs["recovered"] = True
    os.replace(tmp, run_path)
    jpath.unlink()
    return {"streams": len(samples), "samples": sum(samples.values()), "events": len(events),
            "complete": bool(stop and stop.complete)}


def _append_pages(group: h5py.Group, pages: list[Page]) -> None:
    """Append ``pages`` (then emptied) to a stream group's datasets; NaN where a page lacks a key."""
    if not pages:
        return
    append_columns(group["t"], [p.t for p in pages])
    for key in group:
        if key != "t":
            append_columns(group[key], [page_column(p, key) for p in pages])
    pages.clear()
