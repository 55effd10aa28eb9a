"""Crash journal: an append-only companion file ``RUN.h5.journal`` written ahead of the HDF5
file, so a capture killed at any instant (even SIGKILL, even inside an HDF5 write) loses nothing
but its last page (at most ~0.2 s).

Each record is one ``write()``: a 4-byte little-endian header length, a JSON header, then the
page's float64 arrays as raw bytes. The operating system keeps written bytes when the process
dies, so no fsync is needed for the kill case. A torn final record is ignored on recovery.
``hwval recover RUN.h5`` rebuilds the run file from the journal; a clean finish deletes it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from hwval.capture.documents import Descriptor, Document, Event, Page, Start, Stop
from hwval.capture.hdf5_writer import (append_events, create_events_group, create_stream_group,
                                       finalize, write_root_attrs)
from hwval.schema import JOURNAL_SUFFIX
from hwval.sources.base import Key, StreamInfo

_LEN = struct.Struct("<I")


def journal_path(run_path: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(run_path)}{JOURNAL_SUFFIX}")


class JournalWriter:
    def __init__(self, run_path: str) -> None:
        self.path = journal_path(run_path)
        self.fd: int | None = None

    def __call__(self, doc: Document) -> None:
        if isinstance(doc, Start):
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
            self._write({"type": "start", **dataclasses.asdict(doc)})
        elif self.fd is None:
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
            self._write({"type": "stop", **dataclasses.asdict(doc)})
            os.close(self.fd)
            self.fd = None

    def _write(self, header: dict, payload: bytes = b"") -> None:
        assert self.fd is not None
        head = json.dumps(header, default=str).encode()
        os.write(self.fd, _LEN.pack(len(head)) + head + payload)

    def discard(self) -> None:
        """Remove the journal after the run file was finished cleanly."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.path.unlink(missing_ok=True)


def read_journal(path: str | os.PathLike) -> Iterator[Document]:
    """Documents from a journal, stopping quietly at a torn final record."""
    data = Path(path).read_bytes()
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
            yield Page(header["stream"], arrays[0].copy(),
                       {k: arrays[i + 1].copy() for i, k in enumerate(header["keys"])})
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


def recover(run_path: str | os.PathLike) -> dict:
    """Rebuild ``run_path`` from its journal. Returns a summary. The rebuilt file keeps
    ``complete`` false unless the journal holds the clean stop, and gets ``recovered`` true."""
    jpath = journal_path(run_path)
    if not jpath.exists():
        raise FileNotFoundError(f"{jpath}: no journal to recover from")
    tmp = Path(f"{os.fspath(run_path)}.recovering")
    pages: dict[str, list[Page]] = {}
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
                pages.setdefault(doc.stream, []).append(doc)
            elif isinstance(doc, Event):
                events.append(doc)
            elif isinstance(doc, Stop):
                stop = doc
        if not started:
            raise ValueError(f"{jpath}: journal has no start record; nothing to recover")
        samples = 0
        for stream, plist in pages.items():
            g = f["streams"][stream]
            t = np.concatenate([p.t for p in plist])
            g["t"].resize((len(t),))
            g["t"][:] = t
            samples += len(t)
            for key in g:
                if key == "t":
                    continue
                col = np.concatenate([p.values.get(key, np.full(len(p.t), np.nan)) for p in plist])
                g[key].resize((len(col),))
                g[key][:] = col
        ev = create_events_group(f)
        if events:
            append_events(ev, events)
        finalize(f, stop or Stop(exit_code=-1, complete=False, reason="recovered from journal"))
        f.attrs["recovered"] = True
    os.replace(tmp, run_path)
    jpath.unlink()
    return {"streams": len(pages), "samples": samples, "events": len(events),
            "complete": bool(stop and stop.complete)}
