"""``hwval characterize``: each meter's update period, noise floor and quantisation (its latency
and window come from the synchroniser), every figure with a 95 % interval.

- **Update period**: from repeated values. A meter read faster than it updates returns the same
  value until the next update; the period is the median interval between value changes, over the
  stretches where the power moves (pulse blocks, else everything read), with the distribution-free
  order-statistic interval of a median. When every reading is new, the meter updates at least as
  often as it is read: the period is reported as the reading interval, interval ``[0, interval]``.
- **Noise floor**: standard deviation of the readings (counters: differenced power) on the idle
  plateau before the first pulse block or the workload, after a settling margin; chi-square
  interval on the effective number of independent readings (n x interval / window when the
  window is longer than the interval: averaged readings are correlated).
- **Quantisation**: the smallest step between distinct values, accepted when (nearly) every
  step between neighbouring distinct values is a multiple of it; a counter's energy step is turned into watts over one interval.
  The interval is the step itself when every value is a multiple, else NaN (not resolved).

At most :data:`MAX_ROWS` rows of each stream are read (from the start of the run, plus the
pulse blocks), so a 24 h run costs no more than a short one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from hwval.runfile.schema import EventName
from hwval.sync.observe import StreamSource
from hwval.sync.template import pulse_blocks

MAX_ROWS = 1 << 19
SETTLE_S = 1.0
_MULTIPLE_TOL = 1e-3


@dataclass
class Characteristics:
    name: str
    lag_s: float
    lag_ci_s: tuple[float, float]
    window_s: float
    window_ci_s: tuple[float, float]
    update_period_s: float
    update_period_ci_s: tuple[float, float]
    noise_w: float
    noise_ci_w: tuple[float, float]
    quantum_w: float
    quantum_ci_w: tuple[float, float]
    notes: list[str] = field(default_factory=list)

    def attrs(self) -> dict:
        return {"update_period_s": self.update_period_s, "update_period_ci_s": list(self.update_period_ci_s),
                "noise_w": self.noise_w, "noise_ci_w": list(self.noise_ci_w),
                "quantum_w": self.quantum_w, "quantum_ci_w": list(self.quantum_ci_w),
                "characterize_notes": list(self.notes)}


def median_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Median and its distribution-free interval from order statistics (binomial ranks)."""
    v = np.sort(np.asarray(values, dtype=float))
    n = len(v)
    if n == 0:
        return math.nan, (math.nan, math.nan)
    lo = int(stats.binom.ppf((1 - level) / 2, n, 0.5))
    hi = int(stats.binom.ppf(1 - (1 - level) / 2, n, 0.5))
    return float(np.median(v)), (float(v[max(lo - 1, 0)]), float(v[min(hi, n - 1)]))


def update_period(t: np.ndarray, v: np.ndarray, interval_s: float) -> tuple[float, tuple[float, float], str]:
    ok = np.isfinite(v)
    t, v = t[ok], v[ok]
    if len(v) < 3:
        return math.nan, (math.nan, math.nan), "too few readings for the update period"
    changed = np.flatnonzero(np.diff(v) != 0) + 1
    if len(changed) >= len(v) - 1 - max(1, len(v) // 100):
        return interval_s, (0.0, interval_s), "every reading changed: it updates at least as often as it is read"
    d = np.diff(t[changed])
    if len(d) < 3:
        return math.nan, (math.nan, math.nan), "the value almost never changed: update period unknown"
    med, ci = median_ci(d)
    return med, ci, ""


def noise_floor(values: np.ndarray, interval_s: float, window_s: float) -> tuple[float, tuple[float, float]]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 5:
        return math.nan, (math.nan, math.nan)
    sd = float(np.std(v, ddof=1))
    n_eff = max(len(v) * min(1.0, interval_s / window_s) if window_s > 0 else len(v), 3.0)
    df = n_eff - 1
    lo = sd * math.sqrt(df / stats.chi2.ppf(0.975, df))
    hi = sd * math.sqrt(df / stats.chi2.ppf(0.025, df))
    return sd, (lo, hi)


def quantum(values: np.ndarray) -> tuple[float, bool]:
    """(smallest step between distinct values, whether every value is a multiple of it)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    u = np.unique(v)
    if len(u) < 2:
        return math.nan, False
    scale = max(float(np.max(np.abs(u))), 1e-300)
    d = np.diff(u)
    d = d[d > 1e-9 * scale]
    if not len(d):
        return math.nan, False
    q0 = float(d.min())
    q = float(np.mean(d[d < 1.5 * q0]))      # average the one-step differences: less rounding error
    # steps between neighbouring distinct values are few quanta: a check that float rounding of
    # large values (a counter's joules) cannot spoil
    frac = np.abs(d / q - np.round(d / q))
    return q, bool(np.mean(frac < _MULTIPLE_TOL * np.maximum(1.0, d / q)) >= 0.99)


def _idle_stretch(events, blocks) -> tuple[float, float] | None:
    first_pulse = blocks[0].start_s if blocks else math.inf
    starts = [ev.t for ev in events if ev.name == EventName.WORKLOAD_START and not ev.stream]
    end = min(first_pulse, starts[0] if starts else math.inf)
    return None if not math.isfinite(end) else (-math.inf, end)


def characterize_stream(src: StreamSource, sync_attrs: dict, events, blocks) -> Characteristics:
    notes = []
    r = src.reader
    n = min(r.n, MAX_ROWS)
    data = r.read([src.key], 0, n)
    t, v = data["t"], data[src.key]
    window = float(sync_attrs.get("window_s", math.nan))
    if not math.isfinite(window):
        window = src.declared_window_s or 0.0
    # update period over the stretches where power moves
    active_t, active_v = t, v
    if blocks:
        parts = [src.rows(b.start_s, b.end_s + 2 * b.chip_s) for b in blocks]
        active_t = np.concatenate([p[0] for p in parts])
        active_v = np.concatenate([p[1] for p in parts])
    up, up_ci, note = update_period(active_t, active_v, src.interval_s)
    if note:
        notes.append(note)
    # noise on the idle plateau
    idle = _idle_stretch(events, blocks)
    lag = float(sync_attrs.get("lag_s", 0.0)) if math.isfinite(float(sync_attrs.get("lag_s", math.nan))) else 0.0
    if src.method == "counter":
        dt = np.diff(t)
        with np.errstate(divide="ignore", invalid="ignore"):
            power = np.where(dt > 0, np.diff(v) / dt, np.nan)
        tp = t[1:]
    else:
        power, tp = v, t
    noise, noise_ci = math.nan, (math.nan, math.nan)
    if idle is not None and len(tp):
        start = float(tp[0]) + SETTLE_S + window + max(lag, 0.0)
        mask = (tp >= start) & (tp <= idle[1])
        if np.count_nonzero(mask) >= 5:
            noise, noise_ci = noise_floor(power[mask], src.interval_s, window)
        else:
            notes.append("no idle plateau long enough before the pulses/workload: noise floor unknown")
    else:
        notes.append("no idle plateau (no pulse or workload events): noise floor unknown")
    # quantisation
    # a counter's unit shows in its increments (its values are cumulative)
    q, exact = quantum(np.diff(v) if src.method == "counter" else v)
    if src.method == "counter" and math.isfinite(q):
        notes.append(f"counter step {q:.6g} J, shown as power over one {src.interval_s:.4g} s interval")
        q = q / src.interval_s
    if not exact and math.isfinite(q):
        notes.append("values are not multiples of one step: quantisation not resolved (smallest step shown)")
    q_ci = (q, q) if exact else (math.nan, math.nan)
    lag_ci = tuple(sync_attrs.get("lag_ci_s", (math.nan, math.nan)))
    win_ci = tuple(sync_attrs.get("window_ci_s", (math.nan, math.nan)))
    return Characteristics(src.name, float(sync_attrs.get("lag_s", math.nan)), lag_ci, window, win_ci,
                           up, up_ci, noise, noise_ci, q, q_ci, notes)


def characterize(run, sync_entries: dict, streams=None) -> dict[str, Characteristics]:
    """Characterise every stream (or ``streams``); ``sync_entries`` are ``/sync``'s attrs per
    stream (as :func:`hwval.runfile.RunFile.read_derived` gives them)."""
    events = run.events
    blocks = pulse_blocks(events)
    names = list(run.stream_names if streams is None else streams)
    out = {}
    for name in names:
        src = StreamSource.open(run, name, events)
        attrs = sync_entries.get(name)
        out[name] = characterize_stream(src, attrs.attrs if attrs is not None else {}, events, blocks)
    return out
