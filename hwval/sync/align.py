"""Alignment of a run's streams onto one grid of bins: :func:`align`, the one function analysis,
calibration, validation and the report call.

Each stream is lag-corrected with its :class:`~hwval.sync.timing.Timing` (from ``/sync`` when the
run has it, raw receipt stamps otherwise) and resampled by :mod:`hwval.sync.resample`
(energy-conserving; NaN where a bin touches a gap). Streams are read block by block through
``run.stream_reader``, so a 24 h run at kHz rates never sits in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hwval.runfile.schema import EventName
from hwval.sync.resample import BinAccumulator, align_arrays, nominal_interval_s
from hwval.sync.timing import Timing

__all__ = ["Aligned", "Timing", "align", "align_arrays", "choose_key", "stream_gaps", "timings_from_sync"]

#: Rows per read: 1 Mi rows of two float64 columns is 16 MiB.
BLOCK_ROWS = 1 << 20
#: A counter whose smallest step is coarser than this share of a reading's mean increment (a
#: PZEM-004T's 1 Wh register read every second) resolves power worse than the power key does.
COARSE_COUNTER_SHARE = 0.25
_SAMPLE_ROWS = 1 << 16


@dataclass
class Aligned:
    """Streams on one grid: ``edges_s`` (n + 1,) and per stream ``power_w``/``energy_j`` (n,)."""

    edges_s: np.ndarray
    power_w: dict[str, np.ndarray] = field(default_factory=dict)
    energy_j: dict[str, np.ndarray] = field(default_factory=dict)
    synchronised: dict[str, bool] = field(default_factory=dict)
    timing: dict[str, Timing] = field(default_factory=dict)
    method: dict[str, str] = field(default_factory=dict)
    key: dict[str, str] = field(default_factory=dict)

    @property
    def t_s(self) -> np.ndarray:
        """Bin centres (s, run timebase)."""
        return 0.5 * (self.edges_s[:-1] + self.edges_s[1:])


def _finite(value, default: float = 0.0) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default


def choose_key(reader) -> tuple[str, str]:
    """(dataset, method) to align a stream with: ``energy_j`` (a counter) when present and
    fine-grained, else ``power_w`` with its ``semantics`` attribute.

    A counter is used only when its smallest step is below :data:`COARSE_COUNTER_SHARE` of the
    energy it gains in one second (checked on the first rows): integer-Wh registers are far too
    coarse for second bins, and the meter's power key then says more. (A fine counter read often,
    RAPL at 1 kHz, steps by about its mean increment each reading: comparing the step with that
    increment would call every such counter coarse.)
    """
    keys = reader.keys
    has_power = "power_w" in keys
    if "energy_j" in keys:
        if not has_power:
            return "energy_j", "counter"
        head = reader.read(["energy_j"], 0, min(reader.n, _SAMPLE_ROWS))
        ok = np.isfinite(head["energy_j"])
        e, t = head["energy_j"][ok], head["t"][ok]
        d = np.diff(e)
        steps = d[d > 0]
        span_s = float(t[-1] - t[0]) if len(t) > 1 else 0.0
        per_second_j = float(np.sum(steps)) / span_s if span_s > 0 else 0.0
        if len(steps) and steps.min() <= COARSE_COUNTER_SHARE * per_second_j:
            return "energy_j", "counter"
    if not has_power:
        raise KeyError(f"stream {reader.name!r} has neither power_w nor energy_j (keys: {', '.join(keys)})")
    semantics = str(reader.dataset_attrs("power_w").get("semantics", "instant") or "instant")
    return "power_w", "window_mean" if semantics == "window_mean" else "instant"


def stream_gaps(events, stream: str) -> list[tuple[float, float]]:
    """``gap_start``..``gap_end`` intervals of ``stream`` (receipt timebase); a gap that never
    ended runs to infinity."""
    gaps, open_at = [], None
    for ev in events:
        if ev.stream != stream:
            continue
        if ev.name == EventName.GAP_START and open_at is None:
            open_at = ev.t
        elif ev.name == EventName.GAP_END and open_at is not None:
            gaps.append((open_at, ev.t))
            open_at = None
    if open_at is not None:
        gaps.append((open_at, math.inf))
    return gaps


def timings_from_sync(run) -> dict[str, Timing]:
    """Usable timings stored under ``/sync`` (entries with a NaN lag are left out)."""
    out = {}
    for name, entry in run.read_derived("sync").items():
        a = entry.attrs
        if "lag_s" not in a:
            continue
        timing = Timing(lag_s=_finite(a.get("lag_s"), math.nan), window_s=_finite(a.get("window_s")),
                        drift_ppm=_finite(a.get("drift_ppm")), drift_origin_s=_finite(a.get("drift_origin_s")))
        if timing.usable:
            out[name] = timing
    return out


def _raw_timing(reader, key: str) -> Timing:
    if key == "energy_j":
        return Timing()
    return Timing(window_s=_finite(reader.dataset_attrs(key).get("window_s")))


def _span(run, streams) -> tuple[float, float]:
    lo, hi = math.inf, -math.inf
    for name in streams:
        r = run.stream_reader(name)
        if r.n:
            lo = min(lo, float(r.read([], 0, 1)["t"][0]))
            hi = max(hi, float(r.read([], r.n - 1, r.n)["t"][0]))
    if not math.isfinite(lo):
        raise ValueError("none of the streams has any reading: nothing to align")
    return lo, hi


def _edges(run, streams, bin_s, start_s, stop_s, edges_s) -> np.ndarray:
    if edges_s is not None:
        edges = np.asarray(edges_s, dtype=float)
        if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) < 0) or not np.all(np.isfinite(edges)):
            raise ValueError("edges_s must be a finite, non-decreasing 1-D array of at least 2 edges")
        return edges
    if bin_s is None or not bin_s > 0:
        raise ValueError("give bin_s > 0 or edges_s")
    if start_s is None or stop_s is None:
        lo, hi = _span(run, streams)
        start_s = lo if start_s is None else start_s
        stop_s = hi if stop_s is None else stop_s
    n = int(math.floor((stop_s - start_s) / bin_s + 1e-9))
    if n < 1:
        raise ValueError(f"{start_s:.3f}..{stop_s:.3f} s holds no whole {bin_s:g} s bin")
    return start_s + bin_s * np.arange(n + 1)


def align_stream(run, name: str, edges: np.ndarray, timing: Timing, events=None,
                 block_rows: int = BLOCK_ROWS) -> tuple[np.ndarray, np.ndarray, str, str]:
    """(power_w, energy_j, method, key) of one stream on ``edges``, read block by block."""
    reader = run.stream_reader(name)
    key, method = choose_key(reader)
    events = run.events if events is None else events
    gaps = stream_gaps(events, name)
    if reader.n < 2:
        nan = np.full(len(edges) - 1, np.nan)
        return nan, nan.copy(), method, key
    head = reader.read([], 0, min(reader.n, _SAMPLE_ROWS))["t"]
    interval = nominal_interval_s(head, reader.attrs.get("period_s"))
    acc = BinAccumulator(edges, method, timing, interval, gaps)
    # only the rows whose intervals can reach the edges (generous margin: lag, window, gaps)
    margin = 4.0 * (interval if math.isfinite(interval) else 1.0) + abs(timing.window_s) + 1.0
    lo_t = float(timing.stamp_s(edges[0])) - margin
    hi_t = float(timing.stamp_s(edges[-1])) + abs(timing.window_s) + margin
    start = max(reader.index_at(lo_t) - 1, 0)
    stop = min(reader.index_at(hi_t) + 1, reader.n)
    for lo in range(start, stop, block_rows):
        hi = min(lo + block_rows, stop)
        a, b = max(lo - 1, 0), min(hi + 1, reader.n)
        data = reader.read([key], a, b)
        acc.feed(data["t"], data[key], lo - a, hi - a)
    power, energy = acc.result()
    return power, energy, method, key


def align(run, streams, bin_s: float | None = None, start_s: float | None = None, stop_s: float | None = None,
          edges_s=None, timings: dict[str, Timing] | None = None) -> Aligned:
    """Align ``streams`` of an open run onto common bins, lag-corrected and energy-conserving.

    Parameters
    ----------
    run : hwval.runfile.RunFile
    streams : list of str
        Stream names.
    bin_s, start_s, stop_s : float, optional
        Uniform bins of ``bin_s`` from ``start_s`` to ``stop_s`` (default: the streams' recorded
        span, first to last stamp); the last partial bin is dropped.
    edges_s : array, optional
        Explicit, possibly non-uniform bin edges (instead of ``bin_s``).
    timings : dict of str to Timing, optional
        Timing per stream. None reads ``/sync``: streams with a usable entry there are
        lag-corrected (``synchronised``); the others use raw receipt stamps (lag 0, the window
        from the ``power_w`` dataset's ``window_s`` attribute or 0). A dict given here counts as
        synchronised for the streams it names; the others use raw stamps.

    Returns
    -------
    Aligned
        ``power_w[name]`` (W, mean per bin) and ``energy_j[name]`` (J per bin), NaN where a bin
        touches a gap or lies outside the stream's data; ``synchronised``, ``timing``, ``method``
        (``counter``, ``window_mean`` or ``instant``) and ``key`` (the dataset used) per stream.
    """
    streams = list(streams)
    for name in streams:
        if name not in run.stream_names:
            raise KeyError(f"no stream {name!r} in {run.path} (streams: {', '.join(run.stream_names)})")
    edges = _edges(run, streams, bin_s, start_s, stop_s, edges_s)
    known = timings_from_sync(run) if timings is None else dict(timings)
    events = run.events
    out = Aligned(edges_s=edges)
    for name in streams:
        reader = run.stream_reader(name)
        key, _ = choose_key(reader)
        timing = known.get(name)
        synced = timing is not None and timing.usable
        if not synced:
            timing = _raw_timing(reader, key)
        power, energy, method, key = align_stream(run, name, edges, timing, events)
        out.power_w[name], out.energy_j[name] = power, energy
        out.synchronised[name], out.timing[name] = synced, timing
        out.method[name], out.key[name] = method, key
    return out
