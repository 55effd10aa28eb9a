"""The run-file schema (version 1): every group, attribute and event name, and the one validator
the reader runs on every file it opens.

The layout is the README's *Run file* section. :func:`validate` checks structure and
attributes only (shapes, types, JSON text), never data values, so it costs the same at 1e3 and
1e8 readings; per-row JSON (event ``detail``) is checked by :func:`event_detail` when it is read.
Every failure is one :class:`RunFileError` line naming the HDF5 object and what is wrong.
"""

from __future__ import annotations

import json
import math
from typing import Any

import h5py
import numpy as np

SCHEMA_NAME = "hwval-run"
SCHEMA_VERSION = 1
JOURNAL_SUFFIX = ".journal"

# -- groups --------------------------------------------------------------------------------
STREAMS = "streams"
EVENTS = "events"
SYNC = "sync"
ANALYSIS = "analysis"
#: Groups that later stages add through ``RunFile.replace_derived``.
DERIVED_GROUPS = (SYNC, ANALYSIS)
#: The event columns, each a 1-D dataset of the same length.
EVENT_FIELDS = ("t", "name", "stream", "detail")


class RootAttr:
    """Attributes of ``/``."""

    SCHEMA = "schema"
    SCHEMA_VERSION = "schema_version"
    HWVAL_VERSION = "hwval_version"
    RUN_ID = "run_id"
    CREATED_UTC = "created_utc"
    HOSTNAME = "hostname"
    COMMAND = "command"                   # JSON list of str
    EXIT_CODE = "exit_code"               # -1 until the capture finishes
    COMPLETE = "complete"                 # written last
    ORIGIN_MONOTONIC_NS = "origin_monotonic_ns"
    ORIGIN_REALTIME_NS = "origin_realtime_ns"
    CONFIG = "config"                     # JSON object text
    STOP_REASON = "stop_reason"           # optional: why the capture ended early
    RECOVERED = "recovered"               # optional: rebuilt by `hwval recover`
    #: optional: marks the workload sent that the capture could not take (non-blocking channel).
    MARKS_LOST = "marks_lost"
    #: optional: marks that arrived but were refused: a t_ns outside the capture (before it, or in
    #: the future), or malformed with a readable seq (delivered + refused + lost == sent).
    MARKS_REFUSED = "marks_refused"
    #: JSON object {kind: count} of run-level errors (stream "" in /events), written at finish
    #: and by `hwval recover`: the same form as each stream's error_counts.
    ERROR_COUNTS = "error_counts"


class StreamAttr:
    """Attributes of ``/streams/<name>``."""

    KIND = "kind"
    DRIVER = "driver"
    RESOURCE = "resource"
    IDENTITY = "identity"                 # JSON object text
    SCOPE = "scope"
    PERIOD_S = "period_s"                 # NaN when the source has no nominal period
    EMULATED = "emulated"
    NOTES = "notes"                       # JSON list of str
    DROPPED_READINGS = "dropped_readings"  # written when the capture finishes
    MISSED_DEADLINES = "missed_deadlines"
    ERROR_COUNTS = "error_counts"         # JSON object {kind: count}


#: The time column of every stream.
T = "t"
UNIT = "unit"


class EventName:
    """Values of ``/events/name`` written by hwval itself."""

    WORKLOAD_START = "workload_start"
    WORKLOAD_END = "workload_end"
    MARK = "mark"
    PULSE_START = "pulse_start"
    PULSE_CHIP = "pulse_chip"
    PULSE_END = "pulse_end"
    GAP_START = "gap_start"
    GAP_END = "gap_end"
    RECONNECT = "reconnect"
    ERROR = "error"
    #: a signal the capture received and forwarded to the workload (detail: signal, action)
    SIGNAL = "signal"


#: Every event name of the schema (others may appear in files of later versions: read, not refused).
EVENT_NAMES = tuple(v for k, v in vars(EventName).items() if k.isupper())


class RunFileError(Exception):
    """The file cannot be used as a hwval run; the message says why and what to do."""


def printable(text: Any) -> str:
    """``text`` with every control character escaped (``\\x1b`` for ESC...), so names, hostnames
    and commands read from a file can never drive the terminal they are printed on."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def plain(value: Any) -> Any:
    """An attribute value as a Python value (bytes decoded, numpy scalars unwrapped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


# -- typed attribute access (used by the validator and the reader) ---------------------------

def _where(obj: h5py.HLObject, attr: str | None = None) -> str:
    name = printable(obj.name)
    return f"{name} attribute {attr!r}" if attr else name


def _get(obj: h5py.HLObject, attr: str, default: Any = ...) -> Any:
    try:
        if attr not in obj.attrs:
            if default is ...:
                raise RunFileError(f"{_where(obj, attr)} is missing")
            return default
        return plain(obj.attrs[attr])
    except (OSError, TypeError, ValueError) as exc:  # an attribute HDF5 cannot decode
        raise RunFileError(f"{_where(obj, attr)} cannot be read ({type(exc).__name__})") from None


def _describe(value: Any) -> str:
    text = repr(value)
    return printable(text if len(text) <= 40 else text[:37] + "...")


def str_attr(obj: h5py.HLObject, attr: str, default: Any = ...) -> str:
    value = _get(obj, attr, default)
    if not isinstance(value, str):
        raise RunFileError(f"{_where(obj, attr)} is {_describe(value)}, expected text")
    return value


def int_attr(obj: h5py.HLObject, attr: str, default: Any = ...) -> int:
    value = _get(obj, attr, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RunFileError(f"{_where(obj, attr)} is {_describe(value)}, expected an integer")
    return value


def bool_attr(obj: h5py.HLObject, attr: str, default: Any = ...) -> bool:
    value = _get(obj, attr, default)
    # h5py stores Python bools as numpy bools, which come back as bool; 0/1 ints are accepted too.
    if not isinstance(value, (bool, int)) or value not in (0, 1):
        raise RunFileError(f"{_where(obj, attr)} is {_describe(value)}, expected true or false")
    return bool(value)


def float_attr(obj: h5py.HLObject, attr: str, default: Any = ...) -> float:
    """A real number; NaN is allowed (the schema's "unknown")."""
    value = _get(obj, attr, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RunFileError(f"{_where(obj, attr)} is {_describe(value)}, expected a number")
    return float(value)


def json_attr(obj: h5py.HLObject, attr: str, kind: type, default: Any = ...) -> Any:
    """An attribute holding JSON text of type ``kind`` (list or dict); "" reads as empty."""
    text = str_attr(obj, attr, default)
    if text == "":
        return kind()
    try:
        value = json.loads(text)
    except ValueError:
        raise RunFileError(f"{_where(obj, attr)} is not JSON ({_describe(text)})") from None
    if not isinstance(value, kind):
        raise RunFileError(f"{_where(obj, attr)} is JSON {type(value).__name__}, "
                           f"expected a {'list' if kind is list else 'object'}")
    return value


def error_counts(obj: h5py.HLObject) -> dict[str, int]:
    """``error_counts`` of a stream group or of the root (the run-level errors): same form."""
    attr = RootAttr.ERROR_COUNTS if obj.name == "/" else StreamAttr.ERROR_COUNTS
    counts = json_attr(obj, attr, dict, "{}")
    for key, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise RunFileError(f"{_where(obj, attr)} gives {_describe(key)} "
                               f"the count {_describe(n)}, expected a non-negative integer")
    return counts


def command(f: h5py.File) -> list[str]:
    cmd = json_attr(f, RootAttr.COMMAND, list, "[]")
    if not all(isinstance(a, str) for a in cmd):
        raise RunFileError(f"{_where(f, RootAttr.COMMAND)} is a list with non-text items")
    return cmd


def event_detail(text: str, row: int) -> dict[str, Any]:
    """One ``/events/detail`` row as a dict ("" is an empty detail)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise RunFileError(f"/events/detail[{row}] is not JSON ({_describe(text)})") from None
    if not isinstance(value, dict):
        raise RunFileError(f"/events/detail[{row}] is JSON {type(value).__name__}, expected an object")
    return value


# -- the validator ---------------------------------------------------------------------------

def validate(f: h5py.File) -> None:
    """Raise :class:`RunFileError` naming the first object of ``f`` that breaks the schema."""
    schema = _get(f, RootAttr.SCHEMA, None)
    if schema != SCHEMA_NAME:
        raise RunFileError(f"HDF5 file but not a hwval run (root attribute schema={_describe(schema)}, "
                           f"expected {SCHEMA_NAME!r})")
    version = _get(f, RootAttr.SCHEMA_VERSION, None)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RunFileError(f"hwval run without a valid schema_version attribute ({_describe(version)}); "
                           "the file was damaged or written by another tool")
    if version > SCHEMA_VERSION:
        raise RunFileError(f"written with run-file schema version {version}, newer than this "
                           f"hwval reads ({SCHEMA_VERSION}); upgrade hwval (pip install -U hwval)")
    for attr in (RootAttr.RUN_ID, RootAttr.CREATED_UTC, RootAttr.HOSTNAME, RootAttr.HWVAL_VERSION):
        str_attr(f, attr)
    command(f)
    json_attr(f, RootAttr.CONFIG, dict)
    int_attr(f, RootAttr.EXIT_CODE)
    bool_attr(f, RootAttr.COMPLETE)
    int_attr(f, RootAttr.ORIGIN_MONOTONIC_NS)
    int_attr(f, RootAttr.ORIGIN_REALTIME_NS)
    str_attr(f, RootAttr.STOP_REASON, "")
    bool_attr(f, RootAttr.RECOVERED, False)
    for attr in (RootAttr.MARKS_LOST, RootAttr.MARKS_REFUSED):
        if int_attr(f, attr, 0) < 0:
            raise RunFileError(f"{_where(f, attr)} is negative")
    error_counts(f)
    streams = _member(f, STREAMS, h5py.Group, required=True)
    for name in streams:
        _validate_stream(_member(streams, name, h5py.Group, required=True))
    events = _member(f, EVENTS, h5py.Group, required=False)
    if events is not None:
        _validate_events(events)
    for group in DERIVED_GROUPS:
        _member(f, group, h5py.Group, required=False)


def _member(parent: h5py.Group, name: str, kind: type, required: bool) -> Any:
    try:
        obj = parent.get(name)
    except (OSError, KeyError, ValueError) as exc:  # a damaged object header
        raise RunFileError(f"{printable(parent.name.rstrip('/'))}/{printable(name)} cannot be read "
                           f"({type(exc).__name__})") from None
    where = f"{printable(parent.name.rstrip('/'))}/{printable(name)}"
    if obj is None:
        if required:
            raise RunFileError(f"{where} is missing")
        return None
    if not isinstance(obj, kind):
        expected = "a group" if kind is h5py.Group else "a dataset"
        raise RunFileError(f"{where} is {'a group' if isinstance(obj, h5py.Group) else 'a dataset'}, "
                           f"expected {expected}")
    return obj


def _column(ds: h5py.Dataset, numeric: bool) -> int:
    """Check that ``ds`` is 1-D (numeric or text) and return its length."""
    where = printable(ds.name)
    if ds.ndim != 1:
        raise RunFileError(f"{where} has shape {ds.shape}, expected one dimension")
    if numeric and ds.dtype.kind not in "fiu":
        raise RunFileError(f"{where} holds {ds.dtype}, expected numbers")
    if not numeric and h5py.check_string_dtype(ds.dtype) is None:
        raise RunFileError(f"{where} holds {ds.dtype}, expected text")
    return int(ds.shape[0])


def _validate_stream(g: h5py.Group) -> None:
    for attr in (StreamAttr.KIND, StreamAttr.DRIVER, StreamAttr.RESOURCE, StreamAttr.SCOPE):
        str_attr(g, attr)
    json_attr(g, StreamAttr.IDENTITY, dict)
    json_attr(g, StreamAttr.NOTES, list, "[]")
    period = float_attr(g, StreamAttr.PERIOD_S)
    if not (math.isnan(period) or 0 < period < math.inf):
        raise RunFileError(f"{_where(g, StreamAttr.PERIOD_S)} is {period!r}, expected a positive "
                           "finite number (NaN when unknown)")
    bool_attr(g, StreamAttr.EMULATED)
    for attr in (StreamAttr.DROPPED_READINGS, StreamAttr.MISSED_DEADLINES):
        if int_attr(g, attr, 0) < 0:
            raise RunFileError(f"{_where(g, attr)} is negative")
    error_counts(g)
    n = _column(_member(g, T, h5py.Dataset, required=True), numeric=True)
    for key in g:
        ds = _member(g, key, h5py.Dataset, required=True)
        if _column(ds, numeric=True) != n:
            raise RunFileError(f"{printable(ds.name)} has {ds.shape[0]} rows, but {printable(g.name)}/t "
                               f"has {n}")
        str_attr(ds, UNIT, "")


def _validate_events(ev: h5py.Group) -> None:
    lengths = {}
    for name in EVENT_FIELDS:
        lengths[name] = _column(_member(ev, name, h5py.Dataset, required=True), numeric=name == "t")
    if len(set(lengths.values())) > 1:
        raise RunFileError(f"/events columns differ in length ({', '.join(f'{k}={v}' for k, v in lengths.items())})")

# -- short names the capture side uses -------------------------------------------------------
EVENT_SIGNAL = EventName.SIGNAL
ATTR_MARKS_LOST = RootAttr.MARKS_LOST
ATTR_MARKS_REFUSED = RootAttr.MARKS_REFUSED
