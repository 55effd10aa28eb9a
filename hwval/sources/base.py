"""The one source protocol every driver implements (NVML, RAPL, serial meters, VISA analyzers).

A *source* is one configured driver instance. It may publish several *streams* (RAPL publishes
one per domain, NVML one per GPU, a meter usually one). The recorder never looks inside a source:

1. ``open()`` connects and returns the :class:`StreamInfo` of every stream it will publish; the
   keys, units and semantics declared there are the only keys its readings may carry.
2. A **polled** source (``mode = "polled"``) has ``read()`` called by the recorder on an
   absolute-deadline schedule of ``period_s``; the recorder stamps the reading when ``read()``
   returns (receipt time). ``read()`` returns ``{stream_name: {key: value}}`` for the streams that
   have something new, or an empty dict when nothing changed (e.g. an analyzer between updates).
3. A **streaming** source (``mode = "streaming"``) gets ``run(ctx)`` on its own thread and calls
   ``ctx.emit(stream, values)`` whenever a reading arrives (stamped at that call unless the source
   passes a more precise ``t_ns`` of its own receipt), or ``ctx.emit_block(stream, t_ns, arrays)``
   for many readings at once. ``run`` returns when ``ctx.stop`` is set.
4. ``close()`` releases the transport. It may be called and followed by ``open()`` again when the
   recorder reconnects.

Failures: raise :class:`SourceUnavailable` from ``open()`` for a configuration or environment
problem the operator must fix (missing port, permission denied): the capture refuses to start and
prints the message. Raise :class:`TransientError` from ``read()`` (or let it escape ``run``) for a
failure that may pass: the recorder records ``gap_start``, retries with backoff, and records
``gap_end``. Raise :class:`Disconnected` when the transport is gone: the recorder closes, reopens
with backoff and records ``reconnect``. Anything else escaping a source is treated as transient and
recorded as an ``error`` event with its text; it never stops the other sources.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

Semantics = Literal["instant", "window_mean", "counter"]

#: Units the schema knows, keyed by the dataset names used across drivers (one name per concept).
STANDARD_UNITS = {
    "power_w": "W",
    "energy_j": "J",
    "voltage_v": "V",
    "current_a": "A",
    "power_factor": "1",
    "frequency_hz": "Hz",
    "apparent_power_va": "VA",
    "reactive_power_var": "var",
    "power_uncertainty_w": "W",
    "temperature_c": "degC",
}


class SourceError(Exception):
    """Base of every error a source raises on purpose."""


class SourceUnavailable(SourceError):
    """The source cannot start: the message says what is wrong and what the operator can do."""


class TransientError(SourceError):
    """A read failed but the source may recover; the recorder records a gap and retries."""


class Disconnected(SourceError):
    """The transport is gone (cable pulled, socket closed); the recorder reopens with backoff."""


@dataclass(frozen=True)
class Key:
    """One quantity a stream reports.

    ``name`` is the dataset name (``power_w``, ``energy_j``...), ``unit`` its SI unit.
    ``semantics`` says what a power value means physically: ``instant`` (a sample of the power at
    about the reading time), ``window_mean`` (the mean over the ``window_s`` seconds before the
    reading, e.g. NVML's 1 s average) or ``counter`` (a cumulative quantity such as energy).
    ``window_s`` is ``None`` when unknown.
    """

    name: str
    unit: str
    semantics: Semantics | None = None
    window_s: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        expected = STANDARD_UNITS.get(self.name)
        if expected is not None and expected != self.unit:
            raise ValueError(f"key {self.name!r} must have unit {expected!r}, not {self.unit!r}")


@dataclass(frozen=True)
class StreamInfo:
    """Descriptor of one stream: what it is, where it comes from and what each key means."""

    name: str
    kind: Literal["hardware", "software"]
    driver: str
    resource: str
    scope: str
    period_s: float | None
    keys: tuple[Key, ...]
    identity: Mapping[str, Any] = field(default_factory=dict)
    emulated: bool = False
    #: Free-form notes worth keeping with the data (e.g. "energy counter not supported").
    notes: tuple[str, ...] = ()

    def key_names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.keys)


class SourceContext(Protocol):
    """What a source may call while it runs (given to ``run`` and as ``source.ctx`` after open)."""

    stop: threading.Event

    def emit(self, stream: str, values: Mapping[str, float], t_ns: int | None = None) -> None:
        """Publish one reading; ``t_ns`` defaults to ``time.monotonic_ns()`` at the call."""

    def emit_block(self, stream: str, t_ns: Sequence[int] | np.ndarray,
                   values: Mapping[str, Sequence[float] | np.ndarray]) -> None:
        """Publish many readings at once, as arrays: ``t_ns`` (one time per reading, int ns on
        CLOCK_MONOTONIC) and, per key, an array of the same length (NaN where a reading lacks the
        key). Stored exactly as the same readings emitted one by one, at a fraction of the cost:
        for array instruments (an analyzer's 1000-sample acquisition)."""

    def event(self, name: str, stream: str = "", t_ns: int | None = None, **detail: Any) -> None:
        """Record an event (``error``, ``gap_start``, ``reconnect``...) with JSON-able detail."""

    def count_error(self, stream: str, kind: str, message: str = "") -> None:
        """Count a recoverable fault (bad checksum, garbage bytes, malformed reply...).

        Counts per ``(stream, kind)`` end up in the stream's ``error_counts`` attribute; the first
        occurrence of a kind, and then at most one per second, is also recorded as an ``error``
        event with the running count, so a noisy line cannot flood the event table.
        """


@runtime_checkable
class Source(Protocol):
    """Common part of polled and streaming sources."""

    #: ``"polled"`` or ``"streaming"``.
    mode: str
    #: Nominal period for polled sources (seconds between deadlines); informative for streaming.
    #: May stay ``None`` until ``open()`` returns when the default depends on the instrument.
    period_s: float | None

    def open(self, ctx: SourceContext) -> list[StreamInfo]:
        ...

    def close(self) -> None:
        ...


class PolledSource(Source, Protocol):
    def read(self) -> Mapping[str, Mapping[str, float]]:
        ...


class StreamingSource(Source, Protocol):
    def run(self, ctx: SourceContext) -> None:
        ...


@dataclass(frozen=True)
class SourceSpec:
    """Everything a driver's ``create(spec)`` gets: parsed from ``-m`` or a ``[[meters]]`` table.

    ``name`` is the stream name (or the prefix for multi-stream sources); ``period_s`` is ``None``
    when the operator left it to the driver's default; ``options`` holds the driver's own settings
    (already typed: int, float, bool or str). A driver declares its options in
    :mod:`hwval.sources.options`, whose validator rejects unknown or bad ones with one line.
    """

    driver: str
    resource: str
    name: str
    period_s: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Where the options were written (``lab.toml: meters[0].options``, ``-m 'tasmota:...'``),
    #: for error messages; empty for a spec built in code.
    origin: str = field(default="", compare=False)


#: Each driver module exposes ``create(spec: SourceSpec) -> Source`` (which builds its source as
#: ``XSource(spec, OPTIONS.parse(spec))``) and ``OPTIONS``, a
#: :class:`hwval.sources.options.DriverOptions`.
SourceFactory = Callable[[SourceSpec], Source]

