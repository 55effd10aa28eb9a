"""Crash journal: an append-only companion file ``RUN.h5.journal`` written ahead of the HDF5
file, so a capture killed at any instant (even SIGKILL, even inside an HDF5 write) loses nothing
but its last page (at most ~0.2 s).

Each record is one ``write()``: a 4-byte little-endian header length, a JSON header, then the
page's float64 arrays as raw bytes. The operating system keeps written bytes when the process
dies, so no fsync is needed for the kill case. ``hwval recover RUN.h5`` (``runfile/recover.py``)
rebuilds the run file from the journal; a clean finish deletes it.

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
import os
import struct
from pathlib import Path

import numpy as np

from hwval.runfile.documents import Descriptor, Document, Event, Page, Start, Stop
from hwval.runfile.schema import JOURNAL_SUFFIX

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
