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
from typing import Any, Iterator

import h5py
import numpy as np

from hwval.capture.journal import journal_in_use, journal_path
from hwval.schema import SCHEMA_NAME, SCHEMA_VERSION


class RunFileError(Exception):
    """The file cannot be used as a hwval run; the message says why and what to do."""


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

    @property
    def identity(self) -> dict[str, Any]:
        return json.loads(self.attrs.get("identity", "{}") or "{}")

    @property
    def error_counts(self) -> dict[str, int]:
        return json.loads(self.attrs.get("error_counts", "{}") or "{}")


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


class RunFile:
    def __init__(self, path: str | os.PathLike, f: h5py.File) -> None:
        self.path = Path(path)
        self.file = f
        self.attrs = {k: _plain(v) for k, v in f.attrs.items()}

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> "RunFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    # -- root ------------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return bool(self.attrs.get("complete", False))

    @property
    def origin_monotonic_ns(self) -> int:
        return int(self.attrs["origin_monotonic_ns"])

    @property
    def command(self) -> list[str]:
        return json.loads(self.attrs.get("command", "[]"))

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.attrs.get("config", "{}") or "{}")

    @property
    def journal(self) -> Path | None:
        """The crash journal beside the file, when one exists."""
        j = journal_path(self.path)
        return j if j.exists() else None

    # -- streams ---------------------------------------------------------------------------
    @property
    def stream_names(self) -> list[str]:
        return list(self.file["streams"].keys()) if "streams" in self.file else []

    def stream(self, name: str) -> StreamData:
        try:
            g = self.file["streams"][name]
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

    # -- events ----------------------------------------------------------------------------
    @property
    def events(self) -> list[Event]:
        """All events in time order."""
        if "events" not in self.file:
            return []
        ev = self.file["events"]
        t = ev["t"][:]
        names = ev["name"].asstr()[:]
        streams = ev["stream"].asstr()[:]
        details = ev["detail"].asstr()[:]
        order = np.argsort(t, kind="stable")
        return [Event(float(t[i]), str(names[i]), str(streams[i]), json.loads(details[i] or "{}"))
                for i in order]


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
    schema = _plain(f.attrs.get("schema"))
    if schema != SCHEMA_NAME:
        f.close()
        raise RunFileError(f"{path}: HDF5 file but not a hwval run (root attribute schema={schema!r}, "
                           f"expected {SCHEMA_NAME!r})")
    version = _plain(f.attrs.get("schema_version"))
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        f.close()
        raise RunFileError(f"{path}: hwval run without a valid schema_version attribute ({version!r}); "
                           "the file was damaged or written by another tool")
    if version > SCHEMA_VERSION:
        f.close()
        raise RunFileError(f"{path}: written with run-file schema version {version}, newer than this "
                           f"hwval reads ({SCHEMA_VERSION}); upgrade hwval (pip install -U hwval)")
    return RunFile(path, f)


def recover_hint_for(path: str | os.PathLike) -> str:
    """``"; a crash journal exists: run ..."`` when a killed capture left a journal, else ``""``."""
    if journal_path(path).exists():
        return f"; a crash journal exists: run `hwval recover {path}` to rebuild it"
    return ""


def _short(exc: OSError) -> str:
    return str(exc).split("(")[0].strip() or type(exc).__name__
