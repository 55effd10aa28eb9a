"""``hwval sync`` as a library call: every stream's lag, window and drift from a run.

Reference ``pulses`` (the default): each stream is fitted against the commanded pulse template
(:mod:`hwval.sync.template`); the lag is absolute. Without pulse events, or with a stream named
as the reference, each stream is fitted against that stream's own power over stretches of the
run (the workload's power changes): the lag is relative to it and the result says so.

Only the stretches around pulse blocks (or the fallback stretches) are read, by index range, so
syncing a 24 h run costs what its pulse blocks cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hwval.runfile.schema import EventName
from hwval.sync.drift import clock_model
from hwval.sync.estimate import Block, Fit, fit
from hwval.sync.forward import Template
from hwval.sync.observe import StreamSource
from hwval.sync.template import PulseBlock, TemplateError, pulse_blocks

PULSES = "pulses"
#: A counter is differenced over at least this share of a chip: energy telescopes, so the edges
#: pin the lag as well as with every reading, while the load's own bursts at scheduler time
#: scale (a niced pulse worker on a busy host runs in slices of a few ms), which the template
#: does not have, average out instead of swamping the fit of a 100 Hz RAPL counter.
COUNTER_SPAN_CHIPS = 0.125
#: Default lag search range (s): receipt-stamped meters are late, rarely by more than seconds.
DEFAULT_MAX_LAG_S = 3.0
#: Fallback stretches (no pulses): this long at the start and at the end of the common recording.
FALLBACK_BLOCK_S = 300.0
FALLBACK_MIN_S = 10.0


class SyncInputError(ValueError):
    """The run cannot be synchronised as asked; the message says why and what to do."""


@dataclass
class StreamTiming:
    """One stream's result, as stored under ``/sync/<stream>``."""

    name: str
    reference: str
    method: str                  # pulse_fit | stream_fit | reference | no_response | no_data
    semantics: str
    key: str
    interval_s: float
    lag_s: float = math.nan
    lag_ci_s: tuple[float, float] = (math.nan, math.nan)
    window_s: float = math.nan
    window_ci_s: tuple[float, float] = (math.nan, math.nan)
    window_fitted: bool = False
    declared_window_s: float = math.nan
    drift_ppm: float = 0.0
    drift_ci_ppm: tuple[float, float] = (math.nan, math.nan)
    drift_origin_s: float = 0.0
    quality: float = 0.0
    r2: float = math.nan
    amp_z: float = math.nan
    n_blocks: int = 0
    n_readings: int = 0
    n_clusters: int = 0
    block_times_s: list[float] = field(default_factory=list)
    block_lags_s: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def synced(self) -> bool:
        return math.isfinite(self.lag_s)


@dataclass
class SyncResult:
    reference: str
    absolute: bool
    streams: dict[str, StreamTiming]
    notes: list[str]
    n_blocks: int


def _boundaries(events) -> list[float]:
    return sorted(ev.t for ev in events if ev.name in (EventName.WORKLOAD_START, EventName.WORKLOAD_END) and not ev.stream)


def _block_windows(blocks: list[PulseBlock], events, max_lag_s: float, max_window_s: float):
    """Stamp window [lo, hi] to read around each block, cut at the workload's events and the
    neighbouring blocks (their power is not the template's)."""
    marks = _boundaries(events)
    out = []
    for i, b in enumerate(blocks):
        lo = b.start_s - max(2.0, 2 * b.chip_s)
        hi = b.end_s + max_lag_s + max_window_s + b.chip_s
        prev_end = blocks[i - 1].end_s + max_lag_s + max_window_s if i else -math.inf
        next_start = blocks[i + 1].start_s if i + 1 < len(blocks) else math.inf
        before = [t for t in marks if t <= b.start_s]
        after = [t for t in marks if t >= b.end_s]
        lo = max(lo, prev_end, before[-1] if before else -math.inf)
        hi = min(hi, next_start, after[0] if after else math.inf)
        out.append((lo, hi))
    return out


def _clusters_from_edges(edges: np.ndarray) -> np.ndarray:
    return 0.5 * (edges[:-1] + edges[1:]) if len(edges) > 1 else np.empty(0)


def _window_range(src: StreamSource, chip_s: float, span_s: float):
    if src.method == "counter":
        return None
    hi = max(2 * chip_s, 2 * src.interval_s, 1.5 * (src.declared_window_s or 0.0))
    return (0.0, float(min(hi, max(span_s / 2, src.interval_s))))


def _result(src: StreamTiming, f: Fit) -> StreamTiming:
    src.r2, src.amp_z, src.quality = f.r2, f.amp_z, f.quality
    src.n_blocks, src.n_readings, src.n_clusters = len(f.lags_s), f.n_readings, f.n_clusters
    if not f.reacted:
        src.method = "no_response"
        src.note = (f"did not react to the template (amplitude z = {f.amp_z:.1f}, r2 = {f.r2:.2f}): "
                    "no lag estimated")
        return src
    clock = clock_model(f.lags_s, f.lag_cov, f.centres_s)
    tq = f.t_quantile
    src.lag_s = clock.lag_s
    src.lag_ci_s = (clock.lag_s - tq * clock.lag_se_s, clock.lag_s + tq * clock.lag_se_s)
    src.drift_origin_s = clock.origin_s
    if clock.n_blocks > 1:
        src.drift_ppm = clock.drift_ppm
        src.drift_ci_ppm = (clock.drift_ppm - tq * clock.drift_se_ppm, clock.drift_ppm + tq * clock.drift_se_ppm)
    src.block_times_s = [float(v) for v in f.centres_s]
    src.block_lags_s = [float(v) for v in f.lags_s]
    if f.window_fitted:
        src.window_s = f.window_s
        src.window_ci_s = (max(f.window_s - tq * f.window_se_s, 0.0), f.window_s + tq * f.window_se_s)
        src.window_fitted = True
    elif src.semantics == "counter":
        src.window_s, src.window_ci_s = 0.0, (0.0, 0.0)
    else:                                   # not separable from the lag: the declared window
        src.window_s, src.window_ci_s = f.window_s, (math.nan, math.nan)
    if f.notes:
        src.note = "; ".join(f.notes)
    return src


def _entry(src: StreamSource, reference: str, method: str) -> StreamTiming:
    return StreamTiming(name=src.name, reference=reference, method=method, semantics=src.method, key=src.key,
                        interval_s=src.interval_s,
                        declared_window_s=math.nan if src.declared_window_s is None else src.declared_window_s)


def _sync_pulses(run, names, blocks, events, max_lag_s) -> SyncResult:
    sources = {n: StreamSource.open(run, n, events) for n in names}
    last = max((s.first_last_s[1] for s in sources.values() if s.reader.n), default=-math.inf)
    if last < blocks[0].end_s:
        raise SyncInputError(f"{run.path}: the recording ends at {last:.3f} s, inside the first pulse block "
                             f"({blocks[0].start_s:.3f}..{blocks[0].end_s:.3f} s): the run is shorter than one "
                             "pulse block; record at least one whole block")
    chip = max(b.chip_s for b in blocks)
    max_window = max((_window_range(s, chip, blocks[0].end_s - blocks[0].start_s) or (0, 0))[1]
                     for s in sources.values())
    windows = _block_windows(blocks, events, max_lag_s, max_window)
    lag_range = (-max(0.5, chip), max_lag_s)
    out = {}
    for name, src in sources.items():
        entry = _entry(src, PULSES, "pulse_fit")
        fit_blocks = []
        for b, (lo, hi) in zip(blocks, windows):
            x, c = b.knots
            obs = src.observations(lo, hi, min_span_s=COUNTER_SPAN_CHIPS * b.chip_s)
            if obs.n >= 4:
                # the block's time is its edges' centroid: a lag that drifts within the block is
                # fitted as its value there (every edge pins it about equally)
                fit_blocks.append(Block(Template(x, c), obs, _clusters_from_edges(b.edges_s),
                                        float(np.mean(b.edges_s))))
        if not fit_blocks:
            entry.method, entry.note = "no_data", "no readings over any pulse block"
            out[name] = entry
            continue
        wr = _window_range(src, chip, blocks[0].end_s - blocks[0].start_s)
        f = fit(fit_blocks, interval_s=src.interval_s, lag_range=lag_range, window_range=wr,
                window_guess=src.declared_window_s)
        out[name] = _result(entry, f)
        if len(fit_blocks) < len(blocks):
            out[name].note = (out[name].note + "; " if out[name].note else "") + \
                f"{len(blocks) - len(fit_blocks)} of {len(blocks)} pulse blocks had no readings"
    return SyncResult(PULSES, True, out, [], len(blocks))


def default_reference(run, names) -> str:
    """The fallback reference: the stream that resolves power changes best (shortest reporting
    interval plus declared window; hardware first among equals). A sharp template keeps every
    other stream's fit well posed: a blurred one (a 1 Hz plug) would pin sharp streams only to
    within its own cells."""
    ranked = []
    for n in names:
        s = StreamSource.open(run, n, [])
        sharp = (s.interval_s if math.isfinite(s.interval_s) else math.inf) + (s.declared_window_s or 0.0)
        ranked.append((round(sharp, 9), s.kind != "hardware", n))
    return min(ranked)[2]


def _sync_against(run, names, reference, events, max_lag_s, why: str) -> SyncResult:
    sources = {n: StreamSource.open(run, n, events) for n in names}
    ref = sources[reference]
    r0, r1 = ref.first_last_s
    out = {}
    notes = [why]
    ref_entry = _entry(ref, reference, "reference")
    ref_entry.lag_s, ref_entry.lag_ci_s = 0.0, (0.0, 0.0)
    ref_entry.window_s = 0.0 if ref.declared_window_s is None else ref.declared_window_s
    ref_entry.window_ci_s = (ref_entry.window_s, ref_entry.window_s)
    ref_entry.drift_ci_ppm = (0.0, 0.0)
    ref_entry.quality, ref_entry.note = 1.0, "the reference: other lags are relative to this stream"
    out[reference] = ref_entry
    lag_range = (-max_lag_s, max_lag_s)
    for name, src in sources.items():
        if name == reference:
            continue
        entry = _entry(src, reference, "stream_fit")
        s0, s1 = src.first_last_s
        lo, hi = max(r0, s0), min(r1, s1)
        wr = _window_range(src, 1.0, max(hi - lo, 0.0))
        w_hi = wr[1] if wr else 0.0
        lo_obs, hi_obs = lo + max_lag_s + w_hi, hi - max_lag_s
        if not (hi_obs - lo_obs) >= FALLBACK_MIN_S:
            need = FALLBACK_MIN_S + 2 * max_lag_s + w_hi
            if not r1 - r0 >= need:
                raise SyncInputError(f"{run.path}: {reference} records for {max(r1 - r0, 0):.1f} s: too short to fit "
                                     f"lags without pulses (need at least {need:.0f} s); record longer or capture "
                                     "with sync pulses")
            entry.method = "no_data"
            entry.note = f"overlaps {reference} for only {max(hi - lo, 0):.1f} s (need {need:.0f} s)"
            out[name] = entry
            continue
        if hi_obs - lo_obs > 3 * FALLBACK_BLOCK_S:
            stretches = [(lo_obs, lo_obs + FALLBACK_BLOCK_S), (hi_obs - FALLBACK_BLOCK_S, hi_obs)]
        else:
            stretches = [(lo_obs, hi_obs)]
        blocks = []
        for a, b in stretches:
            tpl, bad = ref.reference_template(a - max_lag_s - w_hi - 1.0, b + max_lag_s + 1.0)
            obs = src.observations(a, b)
            if len(bad) and obs.n:
                # drop readings whose window could touch a time the reference has no data for
                i0 = np.searchsorted(bad, obs.t - max_lag_s - w_hi)
                i1 = np.searchsorted(bad, obs.t + max_lag_s, side="right")
                obs = obs.subset(i1 == i0)
            span = max(10 * (src.interval_s + (src.declared_window_s or 0.0)), 5.0)
            bounds = np.arange(a - max_lag_s, b + span, span)
            if obs.n >= 4:
                blocks.append(Block(tpl, obs, bounds, 0.5 * (a + b), template_resolution_s=ref.interval_s))
        if not blocks:
            entry.method, entry.note = "no_data", f"no readings overlapping {reference}"
            out[name] = entry
            continue
        f = fit(blocks, interval_s=src.interval_s, lag_range=lag_range, window_range=wr,
                window_guess=src.declared_window_s)
        out[name] = _result(entry, f)
        if out[name].method == "no_response":
            out[name].note = out[name].note.replace("the template", f"{reference}'s power changes")
    return SyncResult(reference, False, out, notes, 0)


def synchronise(run, reference: str = PULSES, streams=None, max_lag_s: float = DEFAULT_MAX_LAG_S) -> SyncResult:
    """Estimate every stream's timing (see the module docstring).

    Raises :class:`SyncInputError` for an unknown stream, a run shorter than one pulse block, or
    a run too short for the fallback.
    """
    names = list(run.stream_names if streams is None else streams)
    if not names:
        raise SyncInputError(f"{run.path}: the run has no streams")
    for n in names:
        if n not in run.stream_names:
            raise SyncInputError(f"no stream {n!r} in {run.path} (streams: {', '.join(run.stream_names)})")
    if not max_lag_s > 0:
        raise SyncInputError(f"--max-lag-s {max_lag_s}: must be > 0")
    events = run.events
    if reference != PULSES:
        if reference not in run.stream_names:
            raise SyncInputError(f"--reference {reference!r}: no such stream in {run.path} "
                                 f"(use 'pulses' or one of: {', '.join(run.stream_names)})")
        if reference not in names:
            names = [reference, *names]
        return _sync_against(run, names, reference, events, max_lag_s,
                             f"lags are relative to {reference} (fitted to its power changes), not absolute")
    try:
        blocks = pulse_blocks(events)
    except TemplateError as exc:
        raise SyncInputError(f"{run.path}: {exc}") from None
    if blocks:
        return _sync_pulses(run, names, blocks, events, max_lag_s)
    if len(names) < 2:
        raise SyncInputError(f"{run.path}: no sync pulses and only one stream: nothing to synchronise against "
                             "(capture with --sync-pulses)")
    ref = default_reference(run, names)
    return _sync_against(run, names, ref, events, max_lag_s,
                         f"no sync pulses in the run: lags are relative to {ref} (fitted to the workload's own "
                         "power changes), not absolute; capture with --sync-pulses for absolute lags")
