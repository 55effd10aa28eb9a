"""Energy-conserving resampling of one stream onto bins: the pure array core of alignment.

Every stream, whatever it reports, becomes a cumulative true-energy function ``E(x)`` of
lag-corrected time ``x``, built from *pieces* ``[x0, x1]`` on which the power is linear
(``p0`` at ``x0`` to ``p1`` at ``x1``). A bin's energy is ``E(hi) - E(lo)``, so the bins of a
span always add up to the stream's energy over it. How readings become pieces:

``counter`` (cumulative ``energy_j``)
    Reading ``i`` is the energy up to ``x_i = t_i - lag(t_i)``; between two readings the energy
    is interpolated linearly (one piece per pair of readings, constant power).
``window_mean`` (power averaged over ``window_s`` before ``x_i``)
    The reading is the best estimate of the power at the window's centre ``c_i = x_i - w/2``;
    the piecewise-constant reconstruction holds it over the cell between the midpoints to the
    neighbouring centres (with ``w`` equal to the reporting period these cells are exactly the
    meter's windows, which tile the time line).
``instant`` (a sample of the power at ``c_i``; ``w/2`` earlier when a window was estimated)
    Trapezoids between consecutive samples.

A bin that is not wholly covered by touching pieces is NaN: the time before the first reading,
after the last, and every *break*: two readings further apart than ``GAP_FACTOR`` times the
stream's interval (a counter's: and than ``COUNTER_GAP_S``), a NaN reading, or an interval overlapping a ``gap_start``..``gap_end``
event. Nothing is ever interpolated across a break.

The core works on blocks of rows so a 24 h stream is never loaded whole: :class:`BinAccumulator`
takes consecutive blocks (each with one row of context on both sides) and keeps, per bin edge,
the cumulative energy and the index of the run of touching pieces it falls in.
"""

from __future__ import annotations

import numpy as np

from hwval.sync.timing import Timing

#: Consecutive readings further apart than this many reporting intervals are a gap.
GAP_FACTOR = 3.0
#: A counter's readings are a gap only when further apart than this too (see BinAccumulator._links).
COUNTER_GAP_S = 1.0
METHODS = ("counter", "window_mean", "instant")
_TOUCH_S = 1e-9   # pieces closer than this touch (float noise of identical computations is 0)


def nominal_interval_s(t_s: np.ndarray, period_s: float | None) -> float:
    """The stream's reporting interval: the larger of its nominal period and the median interval
    between stamps (a polled analyzer may report only every few polls). NaN for < 2 stamps."""
    dt = np.diff(np.asarray(t_s, dtype=float))
    dt = dt[dt > 0]
    median = float(np.median(dt)) if len(dt) else float("nan")
    nominal = float(period_s) if period_s is not None and np.isfinite(period_s) and period_s > 0 else float("nan")
    if np.isnan(median):
        return nominal
    return median if np.isnan(nominal) else max(nominal, median)


def gap_arrays(gaps) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(starts, stops)`` of gap intervals, overlapping ones merged."""
    if gaps is None or len(gaps) == 0:
        return np.empty(0), np.empty(0)
    merged: list[list[float]] = []
    for a, b in sorted((float(a), float(b)) for a, b in gaps):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    g = np.asarray(merged, dtype=float)
    return g[:, 0], g[:, 1]


def links(t: np.ndarray, v: np.ndarray, interval_s: float, gap_lo: np.ndarray, gap_hi: np.ndarray) -> np.ndarray:
    """``link[i]``: readings ``i`` and ``i + 1`` are continuous (both finite, at most
    ``GAP_FACTOR`` intervals apart, no gap event between them); the last entry is False.
    ``gap_lo``/``gap_hi`` are sorted, disjoint gap intervals (see :func:`gap_arrays`)."""
    ok = np.isfinite(v) & np.isfinite(t)
    link = ok[:-1] & ok[1:]
    if np.isfinite(interval_s):
        link &= np.diff(t) <= GAP_FACTOR * interval_s
    if len(gap_lo):
        # the first gap ending after t_i; the pair breaks if it starts before t_{i+1}
        k = np.searchsorted(gap_hi, t[:-1], side="right")
        inside = k < len(gap_lo)
        hit = np.zeros(len(link), dtype=bool)
        hit[inside] = gap_lo[k[inside]] < t[1:][inside]
        link &= ~hit
    return np.concatenate([link, [False]])


class BinAccumulator:
    """Cumulative energy of one stream at the bin edges, fed block by block.

    Parameters
    ----------
    edges_s : array (m + 1,)
        Bin edges, non-decreasing, run timebase (s).
    method : {"counter", "window_mean", "instant"}
    timing : Timing
        Lag, window and drift; readings map to true time ``x = t - lag(t)``.
    interval_s : float
        The stream's reporting interval (see :func:`nominal_interval_s`); sets the gap threshold
        and the half-cell a window-mean reading gets next to a break.
    gaps : list of (start_s, stop_s)
        Gap events of the stream (receipt timebase); ``inf`` for a gap that never ended.
    """

    def __init__(self, edges_s: np.ndarray, method: str, timing: Timing, interval_s: float, gaps=None) -> None:
        if method not in METHODS:
            raise ValueError(f"method {method!r}: expected one of {', '.join(METHODS)}")
        self.edges = np.asarray(edges_s, dtype=float)
        self.method = method
        self.timing = timing
        self.interval_s = float(interval_s)
        self.half_s = 0.5 * self.interval_s if np.isfinite(self.interval_s) else 0.0
        self.gap_lo, self.gap_hi = gap_arrays(gaps)
        self.shift_s = 0.0 if method == "counter" else 0.5 * float(timing.window_s)
        n = len(self.edges)
        self.cum_j = np.full(n, np.nan)
        self.run_id = np.full(n, -1, dtype=np.int64)
        self._energy_j = 0.0       # cumulative energy at the end of the last piece fed
        self._runs = 0             # index of the current run of touching pieces
        self._last_x1 = -np.inf    # end of the last piece fed

    # -- one block -----------------------------------------------------------------------------
    def feed(self, t_s: np.ndarray, values: np.ndarray, first: int, last: int) -> None:
        """Rows ``first..last-1`` of ``t_s``/``values`` are this block's own; the rows before
        ``first`` and from ``last`` on are context (at most one each side, or none at the
        stream's ends). Blocks must come in order and tile the rows."""
        t = np.asarray(t_s, dtype=float)
        v = np.asarray(values, dtype=float)
        if len(t) == 0 or last <= first:
            return
        x = self.timing.end_s(t) - self.shift_s
        link = self._links(t, v)                      # link[i]: rows i and i+1 are continuous
        if self.method == "window_mean":
            x0, x1, p0, p1 = self._cells(x, v, link, first, last)
        else:
            i = np.arange(first, min(last, len(t) - 1))
            i = i[link[i]]
            x0, x1 = x[i], x[i + 1]
            if self.method == "counter":
                width = x1 - x0
                de = v[i + 1] - v[i]
                with np.errstate(divide="ignore", invalid="ignore"):
                    p0 = np.where(width > 0, de / width, 0.0)
                p1 = p0
                self._add(x0, x1, p0, p1, energy=de)
                return
            p0, p1 = v[i], v[i + 1]
        self._add(x0, x1, p0, p1)

    def _links(self, t: np.ndarray, v: np.ndarray) -> np.ndarray:
        if self.method == "counter":
            # A counter read late loses no energy (the next reading holds it); only its spread
            # over the pause is interpolated. So a late read (a loaded host delays a 10 ms RAPL
            # read by 0.1-0.2 s) is no break up to COUNTER_GAP_S; gap events still are.
            return links(t, v, max(self.interval_s, COUNTER_GAP_S / GAP_FACTOR), self.gap_lo, self.gap_hi)
        return links(t, v, self.interval_s, self.gap_lo, self.gap_hi)

    def _cells(self, c, v, link, first, last):
        """Window-mean cells of the valid rows first..last-1 (``c`` are window centres)."""
        i = np.arange(first, last)
        i = i[np.isfinite(v[i]) & np.isfinite(c[i])]
        h = self.half_s
        lo = c[i] - h
        hi = c[i] + h
        has_prev = i > 0
        has_next = i < len(c) - 1
        prev_mid = np.full(len(i), -np.inf)
        next_mid = np.full(len(i), np.inf)
        prev_mid[has_prev] = 0.5 * (c[i[has_prev] - 1] + c[i[has_prev]])
        next_mid[has_next] = 0.5 * (c[i[has_next]] + c[i[has_next] + 1])
        linked_prev = np.zeros(len(i), dtype=bool)
        linked_prev[has_prev] = link[i[has_prev] - 1]
        linked_next = link[i]
        x0 = np.where(linked_prev, prev_mid, np.maximum(lo, prev_mid))
        x1 = np.where(linked_next, next_mid, np.minimum(hi, next_mid))
        return x0, x1, v[i], v[i]

    def _add(self, x0, x1, p0, p1, energy=None) -> None:
        if len(x0) == 0:
            return
        if energy is None:
            energy = 0.5 * (p0 + p1) * (x1 - x0)
        e0 = self._energy_j + np.concatenate([[0.0], np.cumsum(energy[:-1])])
        starts_run = np.empty(len(x0), dtype=bool)
        starts_run[0] = x0[0] > self._last_x1 + _TOUCH_S
        starts_run[1:] = x0[1:] > x1[:-1] + _TOUCH_S
        runs = self._runs + np.cumsum(starts_run)
        # the edges this block's pieces span
        a = np.searchsorted(self.edges, x0[0], side="left")
        b = np.searchsorted(self.edges, x1[-1], side="right")
        if b > a:
            e = self.edges[a:b]
            k = np.searchsorted(x0, e, side="right") - 1
            k = np.clip(k, 0, len(x0) - 1)
            covered = (e >= x0[k] - _TOUCH_S) & (e <= x1[k] + _TOUCH_S)
            d = np.clip(e - x0[k], 0.0, None)
            width = x1[k] - x0[k]
            with np.errstate(divide="ignore", invalid="ignore"):
                slope = np.where(width > 0, (p1[k] - p0[k]) / width, 0.0)
            d = np.minimum(d, width)
            cum = e0[k] + p0[k] * d + 0.5 * slope * d * d
            idx = np.arange(a, b)[covered]
            self.cum_j[idx] = cum[covered]
            self.run_id[idx] = runs[k][covered]
        self._energy_j = float(e0[-1] + energy[-1])
        self._runs = int(runs[-1])
        self._last_x1 = float(x1[-1])

    # -- result ----------------------------------------------------------------------------------
    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(power_w, energy_j) per bin; NaN where a bin is not wholly inside one run of pieces."""
        ok = (self.run_id[:-1] >= 0) & (self.run_id[:-1] == self.run_id[1:])
        energy = np.where(ok, self.cum_j[1:] - self.cum_j[:-1], np.nan)
        width = np.diff(self.edges)
        with np.errstate(divide="ignore", invalid="ignore"):
            power = np.where(width > 0, energy / width, np.nan)
        return power, energy


def align_arrays(t_s, values, semantics: str, timing: Timing | None, edges_s, gaps=None,
                 period_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Resample one series onto bins, conserving energy (the core of :func:`hwval.sync.align`).

    Parameters
    ----------
    t_s : array (n,)
        Receipt stamps (s), non-decreasing.
    values : array (n,)
        Cumulative energy (J) for ``semantics="counter"``, else power (W).
    semantics : {"counter", "window_mean", "instant"}
    timing : Timing or None
        Lag, window and drift; None for raw stamps (lag 0, window 0).
    edges_s : array (m + 1,)
        Bin edges (s), non-decreasing; bins may differ in width.
    gaps : list of (start_s, stop_s), optional
        Intervals (receipt timebase) with no valid data, e.g. from gap events.
    period_s : float, optional
        Nominal reporting period; the median stamp interval is used when larger or absent.

    Returns
    -------
    power_w, energy_j : arrays (m,)
        Mean power and energy per bin; NaN where a bin touches a gap or lies outside the data.

    Notes
    -----
    ``sum(energy_j)`` over any run of valid bins equals ``E(edges[j]) - E(edges[i])`` of the
    reconstruction exactly; see the module docstring for how each semantics is reconstructed.
    """
    t = np.asarray(t_s, dtype=float)
    v = np.asarray(values, dtype=float)
    if t.shape != v.shape or t.ndim != 1:
        raise ValueError(f"t_s and values must be 1-D of one length (got {t.shape} and {v.shape})")
    edges = np.asarray(edges_s, dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) < 0):
        raise ValueError("edges_s must be a non-decreasing 1-D array of at least 2 edges")
    acc = BinAccumulator(edges, semantics, timing or Timing(), nominal_interval_s(t, period_s), gaps)
    acc.feed(t, v, 0, len(t))
    return acc.result()
