"""Readings of one stream over a stretch of the run, as the fit needs them (read by index range,
never the whole stream).

Counters are differenced between continuous readings (the same continuity rule as alignment:
no NaN, no interval longer than ``GAP_FACTOR`` reporting intervals, no gap event in between);
power readings are kept when finite and not stamped inside a gap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hwval.sync.align import choose_key, stream_gaps
from hwval.sync.forward import Observations, Template
from hwval.sync.resample import align_arrays, gap_arrays, links, nominal_interval_s
from hwval.sync.timing import Timing

_HEAD_ROWS = 1 << 16
#: A counter is differenced over at least this share of its reporting interval.
MIN_SPAN_INTERVALS = 0.5


def spaced_pairs(t: np.ndarray, min_span_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(a, b)`` of consecutive kept stamps, each kept stamp the first one at least
    ``min_span_s`` after the previous kept one (all of them when the stamps are that far apart)."""
    n = len(t)
    if n < 2:
        return np.empty(0, dtype=int), np.empty(0, dtype=int)
    if not np.isfinite(min_span_s) or min_span_s <= 0 or np.all(np.diff(t) >= min_span_s):
        idx = np.arange(n)
    else:
        kept = [0]
        last = t[0]
        for i in range(1, n):
            if t[i] - last >= min_span_s:
                kept.append(i)
                last = t[i]
        idx = np.asarray(kept)
    return idx[:-1], idx[1:]


@dataclass
class StreamSource:
    """What the fit needs to know about one stream of a run."""

    name: str
    reader: object
    key: str
    method: str                 # counter | window_mean | instant
    interval_s: float
    declared_window_s: float | None
    gaps: list[tuple[float, float]]
    kind: str

    @classmethod
    def open(cls, run, name: str, events) -> "StreamSource":
        reader = run.stream_reader(name)
        key, method = choose_key(reader)
        head = reader.read([], 0, min(reader.n, _HEAD_ROWS))["t"]
        interval = nominal_interval_s(head, reader.attrs.get("period_s"))
        declared = None
        if key == "power_w":
            w = reader.dataset_attrs("power_w").get("window_s")
            if w is not None and np.isfinite(float(w)):
                declared = float(w)
        return cls(name, reader, key, method, interval, declared, stream_gaps(events, name),
                   str(reader.attrs.get("kind", "")))

    @property
    def first_last_s(self) -> tuple[float, float]:
        r = self.reader
        if r.n == 0:
            return math.nan, math.nan
        return float(r.read([], 0, 1)["t"][0]), float(r.read([], r.n - 1, r.n)["t"][0])

    def rows(self, lo_s: float, hi_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Stamps and values stamped in ``[lo_s, hi_s]`` (one more row before, for counters)."""
        r = self.reader
        a = max(r.index_at(lo_s) - 1, 0)
        b = min(r.index_at(hi_s), r.n)
        if b <= a:
            return np.empty(0), np.empty(0)
        d = r.read([self.key], a, b)
        return d["t"], d[self.key]

    def observations(self, lo_s: float, hi_s: float, min_span_s: float = 0.0) -> Observations:
        """Readings stamped in ``[lo_s, hi_s]``; a counter differenced over at least
        ``min_span_s`` (and half its reporting interval)."""
        t, v = self.rows(lo_s, hi_s)
        gap_lo, gap_hi = gap_arrays(self.gaps)
        if self.method == "counter":
            if len(t) < 2:
                return Observations(np.empty(0), np.empty(0), np.empty(0))
            link = links(t, v, self.interval_s, gap_lo, gap_hi)[:-1]
            # Difference over at least half a reporting interval: a late read followed at once
            # by the next one spans microseconds, in which a counter that updates every ~1 ms
            # (RAPL) moved by zero or one whole update, a "power" of 0 or many times the truth
            # that would outweigh every honest reading in the fit.
            a, b = spaced_pairs(t, max(MIN_SPAN_INTERVALS * self.interval_s, min_span_s))
            broken = np.concatenate([[0], np.cumsum(~link)])
            dt = t[b] - t[a]
            keep = (broken[b] == broken[a]) & (dt > 0) & (t[b] >= lo_s)
            y = (v[b] - v[a]) / np.where(dt > 0, dt, 1.0)
            return Observations(t[b][keep], y[keep], t[a][keep])
        keep = np.isfinite(v) & np.isfinite(t) & (t >= lo_s)
        if len(gap_lo):
            k = np.searchsorted(gap_hi, t, side="right")
            inside = (k < len(gap_lo)) & (gap_lo[np.minimum(k, len(gap_lo) - 1)] <= t)
            keep &= ~inside
        return Observations(t[keep], v[keep])

    def reference_template(self, lo_s: float, hi_s: float) -> tuple[Template, np.ndarray]:
        """This stream's own power as a template (fallback without pulses): its cumulative energy
        on a grid of its reporting interval, read on its raw stamps (window centres for
        window-mean power). Returns the template and the sorted list of times (true axis) where
        it has no data (NaN bins), which readings of other streams must not overlap."""
        step = max(self.interval_s if np.isfinite(self.interval_s) else 1e-3, 1e-3)
        edges = np.arange(lo_s, hi_s + step, step)
        t, v = self.rows(lo_s - 10 * step, hi_s + 10 * step)
        window = 0.0 if self.declared_window_s is None else self.declared_window_s
        _, energy = align_arrays(t, v, self.method, Timing(window_s=window), edges, self.gaps,
                                 period_s=self.interval_s)
        bad = ~np.isfinite(energy)
        c = np.concatenate([[0.0], np.cumsum(np.where(bad, 0.0, energy))])
        return Template(edges, c), 0.5 * (edges[:-1] + edges[1:])[bad]
