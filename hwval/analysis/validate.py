"""Verdicts for a new software meter: what ``hwval validate`` computes.

The candidate is a stream of the run (or ``software_total``) or a file (see
:mod:`hwval.analysis.external`). It is compared with the hardware reference over the main window
and judged against thresholds: ``max_bias_pct`` (|bias| as % of the reference's mean),
``min_ccc`` (Lin's CCC) and ``max_energy_error_pct`` (|energy error|). Without any threshold the
energy criterion is used at :data:`DEFAULT_MAX_ENERGY_ERROR_PCT` (MLPerf's 5 % accuracy target).
``protocol="mlperf"`` runs :mod:`hwval.analysis.mlperf` instead (tolerance: the energy threshold).

A file's time series gets its lag fitted against the reference
(:func:`hwval.analysis.external.estimate_series_lag`) before it is aligned.
CodeCarbon rows are intervals: the reference's energy over each interval is compared with the
row's ``energy_consumed``; bias and CCC use each interval's mean power, weighted by duration.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwval import __version__
from hwval.analysis import bootstrap, mlperf
from hwval.analysis.calibration import utc_now
from hwval.analysis.compare import (SOFTWARE_TOTAL, AnalysisInputError, analyze, compare_bins,
                                    default_bin_s, grid, recorded_span, resolve_reference,
                                    select_streams)
from hwval.analysis.output import plain as _num
from hwval.analysis.external import (ExternalFormatError, Intervals, Series, estimate_series_lag,
                                     read_candidate_file)
from hwval.analysis.phases import find_phases, workload_window
from hwval.runfile import DerivedEntry

DEFAULT_MAX_ENERGY_ERROR_PCT = 5.0
PROTOCOLS = ("mlperf",)


class UnusableInput(Exception):
    """The input cannot be judged (exit 2); the message says why, in one line."""


@dataclass(frozen=True)
class Thresholds:
    max_bias_pct: float | None = None
    min_ccc: float | None = None
    max_energy_error_pct: float | None = None

    def effective(self) -> tuple["Thresholds", str]:
        if self.max_bias_pct is None and self.min_ccc is None and self.max_energy_error_pct is None:
            return (Thresholds(max_energy_error_pct=DEFAULT_MAX_ENERGY_ERROR_PCT),
                    f"no threshold given: using --max-energy-error-pct {DEFAULT_MAX_ENERGY_ERROR_PCT:g}")
        return self, ""


@dataclass
class Check:
    name: str
    value: float
    limit: float
    passed: bool
    text: str


@dataclass
class Verdict:
    candidate: str
    source: str
    format: str
    reference: str
    protocol: str
    checks: list[Check]
    metrics: dict[str, Any]
    synchronised: bool
    notes: list[str] = field(default_factory=list)
    datasets: dict[str, np.ndarray] = field(default_factory=dict)
    children: dict[str, DerivedEntry] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        return [c.text for c in self.checks]

    @property
    def name(self) -> str:
        return f"validation__{self.candidate}__vs__{self.reference}"

    def entry(self) -> DerivedEntry:
        attrs = {k: v for k, v in self.metrics.items()}
        attrs.update({
            "verdict": "pass" if self.passed else "fail", "passed": self.passed,
            "reasons": json.dumps(self.reasons), "checks": json.dumps([_num(c.__dict__) for c in self.checks]),
            "candidate": self.candidate, "source": self.source, "format": self.format,
            "reference": self.reference, "protocol": self.protocol, "synchronised": self.synchronised,
            "notes": json.dumps(self.notes), "hwval_version": __version__, "created_utc": utc_now(),
        })
        return DerivedEntry(attrs=attrs, datasets=self.datasets, children=self.children)

    def as_json(self) -> dict[str, Any]:
        return _num({"verdict": "pass" if self.passed else "fail", "candidate": self.candidate,
                     "source": self.source, "format": self.format, "reference": self.reference,
                     "protocol": self.protocol, "synchronised": self.synchronised,
                     "reasons": self.reasons, "checks": [c.__dict__ for c in self.checks],
                     "metrics": self.metrics, "notes": self.notes,
                     "stored": f"/analysis/{self.name}"})


def _checks(m: dict[str, Any], th: Thresholds) -> list[Check]:
    out = []
    if th.max_energy_error_pct is not None:
        v = m.get("energy_error_pct", math.nan)
        ok = bool(np.isfinite(v) and abs(v) <= th.max_energy_error_pct)
        out.append(Check("energy_error_pct", v, th.max_energy_error_pct, ok,
                         f"energy error {v:+.2f} % {'within' if ok else 'outside'} +-{th.max_energy_error_pct:g} %"))
    if th.max_bias_pct is not None:
        v = m.get("bias_pct", math.nan)
        ok = bool(np.isfinite(v) and abs(v) <= th.max_bias_pct)
        out.append(Check("bias_pct", v, th.max_bias_pct, ok,
                         f"bias {v:+.2f} % of the reference {'within' if ok else 'outside'} +-{th.max_bias_pct:g} %"))
    if th.min_ccc is not None:
        v = m.get("ccc", math.nan)
        ok = bool(np.isfinite(v) and v >= th.min_ccc)
        why = "" if np.isfinite(v) else " (undefined: too few intervals or a constant series)"
        out.append(Check("ccc", v, th.min_ccc, ok,
                         f"CCC {v:.4f}{why} {'>=' if ok else 'below'} {th.min_ccc:g}"))
    return out


def _label(source: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source).name).strip("_") or "candidate"


def validate(run, source: str, *, fmt: str = "auto", reference: str | None = None,
             thresholds: Thresholds = Thresholds(), protocol: str | None = None,
             n_resamples: int = bootstrap.DEFAULT_RESAMPLES, seed: int | None = None,
             max_lag_s: float | None = None) -> Verdict:
    """Judge ``source`` (module docstring). ``max_lag_s`` bounds the lag search of a file's series
    (default: the synchroniser's)."""
    if protocol is not None and protocol not in PROTOCOLS:
        raise UnusableInput(f"--protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    th, default_note = thresholds.effective()
    try:
        if source in run.stream_names or source == SOFTWARE_TOTAL:
            verdict = _validate_stream(run, source, reference, th, protocol, n_resamples, seed)
        else:
            verdict = _validate_file(run, source, fmt, reference, th, protocol, n_resamples, seed, max_lag_s)
    except (AnalysisInputError, ExternalFormatError, mlperf.ProtocolInputError) as exc:
        raise UnusableInput(str(exc)) from None
    if default_note:
        verdict.notes.insert(0, default_note)
    return verdict


def _validate_stream(run, source, reference, th, protocol, n_resamples, seed) -> Verdict:
    if protocol == "mlperf":
        from hwval.sync import align

        sel = select_streams(run, reference, [source])
        members = sel.candidates[source]
        span = recorded_span(run, sel.streams)
        edges = grid(span, span[0], mlperf.BIN_S)
        aligned = align(run, sel.streams, edges_s=edges)
        cand_w = np.vstack([np.asarray(aligned.power_w[m], dtype=float) for m in members]).sum(axis=0)
        synced = all(aligned.synchronised[s] for s in sel.streams)
        return _mlperf(run, source, source, "stream", sel.reference, np.asarray(aligned.t_s),
                       np.asarray(aligned.power_w[sel.reference], dtype=float), cand_w, span, th, synced)
    result = analyze(run, reference=reference, candidates=[source], n_resamples=n_resamples, seed=seed)
    comp = result.comparisons[0]
    m = {**comp.main.metrics, **comp.main.intervals, "bin_s": result.bin_s,
         "window_start_s": result.window[0], "window_stop_s": result.window[1]}
    notes = list(result.notes)
    if m["n_bins"] == 0:
        raise UnusableInput(f"{source} and {result.reference} share no valid bin in the main window")
    return Verdict(source, source, "stream", result.reference, "", _checks(m, th), m,
                   comp.attrs["synchronised"], notes,
                   {"t": comp.main.t_s, "ref_w": comp.main.ref_w, "cand_w": comp.main.cand_w})


def _validate_file(run, source, fmt, reference, th, protocol, n_resamples, seed, max_lag_s) -> Verdict:
    from hwval.sync import align

    origin = run.attrs.get("origin_realtime_ns")
    if origin is None:
        raise UnusableInput(f"{run.path}: no origin_realtime_ns attribute: file times cannot be placed on the run")
    fmt, data = read_candidate_file(source, fmt, int(origin))
    ref, attrs = resolve_reference(run, reference)
    span = recorded_span(run, [ref])
    label = _label(source)
    if isinstance(data, Intervals):
        if protocol == "mlperf":
            raise UnusableInput(f"{source}: the MLPerf protocol needs a power time series (csv/jsonl with "
                                "power_w or energy_j), not CodeCarbon's energy intervals")
        return _validate_intervals(run, ref, label, source, fmt, data, span, th, n_resamples, seed, align)
    bin_s = mlperf.BIN_S if protocol == "mlperf" else default_bin_s(run, ref, attrs[ref])
    lo, hi = max(span[0], float(data.t_s[0])), min(span[1], float(data.t_s[-1]))
    if hi - lo < bin_s:
        raise UnusableInput(f"{source}: its times ({data.t_s[0]:.1f}..{data.t_s[-1]:.1f} s on the run's timebase) "
                            f"do not overlap the reference's recording ({span[0]:.1f}..{span[1]:.1f} s); "
                            "was it written on another machine or another day?")
    w_start, w_stop, how = workload_window(run.events, (lo, hi))
    edges = grid((lo, hi), w_start, bin_s)
    aligned = align(run, [ref], edges_s=edges)
    lag = estimate_series_lag(run, ref, data, max_lag_s)
    cand_w = _align_series(data, edges, lag.timing)
    ref_w = np.asarray(aligned.power_w[ref], dtype=float)
    t = np.asarray(aligned.t_s)
    notes = list(data.notes) + [lag.note]
    synced = lag.timing is not None  # the series' lag was fitted against the reference
    if protocol == "mlperf":
        v = _mlperf(run, label, source, fmt, ref, t, ref_w, cand_w, (lo, hi), th, synced)
        v.notes = notes + v.notes
        v.metrics.update(lag.attrs())
        return v
    mask = (edges[:-1] >= w_start - 1e-9) & (edges[1:] <= w_stop + 1e-9)
    res = compare_bins(t[mask], ref_w[mask], cand_w[mask], bin_s, n_resamples=n_resamples, seed=seed)
    m = {**res.metrics, **res.intervals, "bin_s": bin_s, "window_start_s": w_start, "window_stop_s": w_stop,
         "window_how": how, **lag.attrs()}
    if m["n_bins"] == 0:
        raise UnusableInput(f"{source}: no bin of the main window ({how}) has both the file's and {ref}'s data")
    return Verdict(label, source, fmt, ref, "", _checks(m, th), m, synced, notes,
                   {"t": res.t_s, "ref_w": res.ref_w, "cand_w": res.cand_w})


def _align_series(data: Series, edges: np.ndarray, timing) -> np.ndarray:
    """The file's series on the bins, lag-corrected with ``timing`` (None: its own stamps)."""
    from hwval.sync import align_arrays

    semantics = "counter" if data.key == "energy_j" else "instant"
    power_w, _ = align_arrays(data.t_s, data.values, semantics, timing, edges)
    return np.asarray(power_w, dtype=float)


def _validate_intervals(run, ref, label, source, fmt, data: Intervals, span, th, n_resamples, seed,
                        align) -> Verdict:
    inside = (data.start_s >= span[0]) & (data.stop_s <= span[1])
    notes = list(data.notes)
    if not inside.any():
        raise UnusableInput(
            f"{source}: none of its {len(inside)} intervals lies within the reference's recording "
            f"({span[0]:.1f}..{span[1]:.1f} s on the run's timebase; the file's run from "
            f"{data.start_s.min():.1f} to {data.stop_s.max():.1f} s): was it written during this run, on this machine?")
    if not inside.all():
        notes.append(f"{int(np.count_nonzero(~inside))} interval(s) outside the reference's recording were left out")
    start, stop, cand_j = data.start_s[inside], data.stop_s[inside], data.energy_j[inside]
    edges = np.unique(np.concatenate([start, stop]))
    aligned = align(run, [ref], edges_s=edges)
    bin_j = np.asarray(aligned.energy_j[ref], dtype=float)
    lo_i = np.searchsorted(edges, start)
    hi_i = np.searchsorted(edges, stop)
    ref_j = np.array([bin_j[a:b].sum() for a, b in zip(lo_i, hi_i)])  # NaN when a bin touches a gap
    usable = np.isfinite(ref_j)
    if not usable.any():
        raise UnusableInput(f"{source}: every interval touches a gap in {ref}")
    if not usable.all():
        notes.append(f"{int(np.count_nonzero(~usable))} interval(s) touching a gap in {ref} were left out")
    start, stop, cand_j, ref_j = start[usable], stop[usable], cand_j[usable], ref_j[usable]
    dur = stop - start
    res = compare_bins((start + stop) / 2, ref_j / dur, cand_j / dur, dur, n_resamples=n_resamples, seed=seed)
    m = {**res.metrics, **res.intervals, "n_intervals": int(len(dur)), "time_uncertainty_s": data.time_uncertainty_s,
         "window_start_s": float(start.min()), "window_stop_s": float(stop.max())}
    return Verdict(label, source, fmt, ref, "", _checks(m, th), m, bool(aligned.synchronised[ref]), notes,
                   {"start_s": start, "stop_s": stop, "ref_j": ref_j, "cand_j": cand_j})


def _mlperf(run, label, source, fmt, ref, t, ref_w, cand_w, span, th, synced) -> Verdict:
    tolerance = th.max_energy_error_pct if th.max_energy_error_pct is not None else mlperf.DEFAULT_TOLERANCE_PCT
    events = run.events
    _, w_stop, _ = workload_window(events, span)
    idle = next(((p.start_s, p.stop_s) for p in find_phases(events, span) if p.kind == "idle"), None)
    conditions = mlperf.conditions_from_events(events, idle, w_stop)
    checks, children = [], {}
    for cond in conditions:
        score = mlperf.score_condition(cond, t, ref_w, cand_w, tolerance)
        kind = "idle" if cond.idle else "workload"
        checks.append(Check(f"mlperf_{cond.name}", score.error_pct, tolerance, score.passed,
                            f"{kind} {cond.name!r}: Olympic mean {score.cand_score_w:.2f} W vs {score.ref_score_w:.2f} W "
                            f"({score.error_pct:+.2f} %, {'within' if score.passed else 'outside'} +-{tolerance:g} %)"))
        children[f"condition_{_label(cond.name)}"] = DerivedEntry(attrs=_num({
            "condition": cond.name, "idle": cond.idle, "start_s": cond.start_s, "stop_s": cond.stop_s,
            "windows_s": [list(w) for w in score.windows_s], "ref_w": score.ref_w, "cand_w": score.cand_w,
            "ref_score_w": score.ref_score_w, "cand_score_w": score.cand_score_w,
            "error_pct": score.error_pct, "passed": score.passed}))
    m = {"tolerance_pct": tolerance, "bin_s": mlperf.BIN_S, "n_conditions": len(conditions)}
    notes = ["MLPerf qualification: five 60 s windows per condition, Olympic mean of each meter's window "
             "means, within the tolerance"]
    return Verdict(label, source, fmt, ref, "mlperf", checks, m, synced, notes, {}, children)
