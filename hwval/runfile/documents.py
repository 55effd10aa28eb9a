"""The document stream every subscriber consumes, in this order:

``Start`` once, one ``Descriptor`` per stream (before any of its pages), then ``Page`` and
``Event`` documents interleaved, and ``Stop`` once. Acquisition never touches files: storage,
the crash journal and the live terminal view are subscribers, each a callable ``sub(doc)``
with an optional ``tick()`` called about every 0.2 s (to flush or redraw when no data comes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwval.sources.base import StreamInfo


@dataclass(frozen=True)
class Start:
    run_id: str
    created_utc: str
    hostname: str
    command: list[str]
    origin_monotonic_ns: int
    origin_realtime_ns: int
    config_json: str
    hwval_version: str


@dataclass(frozen=True)
class Descriptor:
    info: StreamInfo


@dataclass(frozen=True)
class Page:
    """Columnar readings of one stream: ``t`` in seconds since the run origin (receipt time),
    ``values[key]`` the same length (NaN where a reading lacked the key)."""

    stream: str
    t: np.ndarray
    values: dict[str, np.ndarray]


@dataclass(frozen=True)
class Event:
    t: float
    name: str
    stream: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stop:
    exit_code: int
    complete: bool
    #: Per stream: {"dropped": n, "error_counts": {...}, "missed_deadlines": n}.
    stream_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    reason: str = ""
    #: Marks the workload made that the capture never got / refused (None: not counted).
    marks_lost: int | None = None
    marks_refused: int | None = None
    #: Run-level errors (those counted for stream "": unreadable or refused marks...) by kind,
    #: the root's counterpart of each stream's error_counts.
    error_counts: dict[str, int] = field(default_factory=dict)


Document = Start | Descriptor | Page | Event | Stop
