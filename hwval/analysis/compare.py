"""Comparisons of software meters with the hardware reference: what ``hwval analyze`` computes.

The reference and every candidate are aligned onto one grid of bins by :func:`hwval.sync.align`
(lag-corrected with ``/sync`` when the run has it, raw receipt stamps otherwise); the metrics of
:mod:`hwval.analysis.metrics` and their moving-block intervals are computed over the main window
(workload_start..workload_end) and over every phase of :mod:`hwval.analysis.phases`.

``software_total`` is the sum of every GPU (``nvml_gpu*``) and of the RAPL package and DRAM
domains; a RAPL domain whose identity says ``part_of`` another (core, uncore) or the platform
domain (psys) is never added, since its energy is already inside another one.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

import numpy as np

from hwval import __version__
from hwval.analysis import bootstrap
from hwval.analysis.calibration import CalibrationRecord, MeterDescription, pick, utc_now
from hwval.analysis.metrics import METRICS, agreement
from hwval.analysis.phases import Phase, find_phases, workload_window
from hwval.runfile import DerivedEntry

SOFTWARE_TOTAL = "software_total"
#: RAPL scopes that add up with the GPUs without counting anything twice.
TOTAL_RAPL_SCOPES = ("cpu_package", "dram")
POWER_KEYS = ("power_w", "energy_j")
#: Marker intervals analysed per comparison at most (a mark per training step would make
#: thousands of phases of a few bins each).
MAX_MARK_PHASES = 500
UNMETERED_INCLUDES = (
    "everything the wall meter sees that the software meters do not: the power supply's "
    "conversion loss (unless --psu-efficiency is given), fans, disks, network cards, the "
    "motherboard and chipset, memory outside the RAPL DRAM domain, the parts of each GPU board "
    "NVML leaves out, and the software meters' own errors")
NOT_SYNCHRONISED = ("not synchronised: raw receipt timestamps were used (no /sync in the run); "
                    "run `hwval sync` first for lag-corrected comparisons")


class AnalysisInputError(Exception):
    """The run or the options cannot be analysed; one line saying what and what to do."""


@dataclass
class Selection:
    reference: str
    candidates: dict[str, list[str]]  # name -> streams summed (a plain stream: itself)
    attrs: dict[str, dict[str, Any]]  # stream name -> group attrs
    notes: list[str] = field(default_factory=list)

    @property
    def streams(self) -> list[str]:
        names = [self.reference]
        for members in self.candidates.values():
            names += [m for m in members if m not in names]
        return names


def _stream_attrs(run) -> dict[str, dict[str, Any]]:
    out = {}
    for name in run.stream_names:
        reader = run.stream_reader(name)
        attrs = dict(reader.attrs)
        attrs["_keys"] = reader.keys
        attrs["_n"] = reader.n
        out[name] = attrs
    return out


def _has_power(attrs: dict[str, Any]) -> bool:
    return attrs.get("_n", 0) > 0 and any(k in attrs.get("_keys", ()) for k in POWER_KEYS)


def _identity(attrs: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(attrs.get("identity") or "{}")
    except (TypeError, ValueError):
        return {}


def software_total_members(attrs: dict[str, dict[str, Any]]) -> list[str]:
    """Streams that make up ``software_total`` (module docstring), in name order."""
    members = []
    for name in sorted(attrs):
        a = attrs[name]
        if a.get("kind") != "software" or not _has_power(a):
            continue
        if a.get("driver") == "nvml" and name.startswith("nvml_gpu"):
            members.append(name)
        elif a.get("driver") == "rapl" and a.get("scope") in TOTAL_RAPL_SCOPES \
                and not _identity(a).get("part_of"):
            members.append(name)
    return members


def resolve_reference(run, reference: str | None,
                      attrs: dict[str, dict[str, Any]] | None = None) -> tuple[str, dict[str, dict[str, Any]]]:
    """The reference stream's name (the given one, or the run's only hardware stream) and every
    stream's attrs; :class:`AnalysisInputError` naming the streams otherwise."""
    attrs = _stream_attrs(run) if attrs is None else attrs
    if not attrs:
        raise AnalysisInputError(f"{run.path}: the run has no streams")
    names = ", ".join(attrs)
    if reference is None:
        hardware = [n for n, a in attrs.items() if a.get("kind") == "hardware" and _has_power(a)]
        if not hardware:
            raise AnalysisInputError(f"{run.path}: no hardware stream with power to use as reference; "
                                     f"pass --reference NAME (streams: {names})")
        if len(hardware) > 1:
            raise AnalysisInputError(f"{run.path}: several hardware streams ({', '.join(hardware)}); "
                                     "pass --reference NAME to say which is the reference")
        reference = hardware[0]
    elif reference not in attrs:
        raise AnalysisInputError(f"--reference {reference!r}: no such stream in {run.path} (streams: {names})")
    if not _has_power(attrs[reference]):
        raise AnalysisInputError(f"--reference {reference!r}: the stream has no power_w or energy_j readings")
    return reference, attrs


def select_streams(run, reference: str | None = None, candidates: list[str] | tuple[str, ...] = ()) -> Selection:
    reference, attrs = resolve_reference(run, reference)
    names = ", ".join(attrs)
    members = software_total_members(attrs)
    chosen: dict[str, list[str]] = {}
    notes = []
    if candidates:
        for c in candidates:
            if c == SOFTWARE_TOTAL:
                if not members:
                    raise AnalysisInputError(f"--candidate {SOFTWARE_TOTAL}: the run has no NVML or RAPL "
                                             "package/DRAM stream to add up")
                chosen[c] = members
            elif c not in attrs:
                raise AnalysisInputError(f"--candidate {c!r}: no such stream in {run.path} "
                                         f"(streams: {names}, or {SOFTWARE_TOTAL})")
            elif c == reference:
                raise AnalysisInputError(f"--candidate {c!r} is the reference itself")
            elif not _has_power(attrs[c]):
                raise AnalysisInputError(f"--candidate {c!r}: the stream has no power_w or energy_j readings")
            else:
                chosen[c] = [c]
    else:
        for n, a in attrs.items():
            if n != reference and a.get("kind") == "software" and _has_power(a):
                chosen[n] = [n]
        if members:
            chosen[SOFTWARE_TOTAL] = members
        if not chosen:
            raise AnalysisInputError(f"{run.path}: no software stream to compare with {reference!r}; "
                                     f"pass --candidate NAME (streams: {names})")
    skipped = [n for n, a in attrs.items() if a.get("driver") == "rapl" and n not in members
               and a.get("kind") == "software"]
    if SOFTWARE_TOTAL in chosen and skipped:
        notes.append(f"{SOFTWARE_TOTAL} = {' + '.join(members)}; not added (part of another domain, or "
                     f"the whole platform): {', '.join(skipped)}")
    return Selection(reference, chosen, attrs, notes)


def default_bin_s(run, reference: str, attrs: dict[str, Any]) -> float:
    """1 s, or the reference's reporting interval when that is longer (nominal period, or the
    median interval of its first readings for streaming meters)."""
    period = attrs.get("period_s")
    if period is None or not np.isfinite(period):
        reader = run.stream_reader(reference)
        t = reader.read([], 0, min(reader.n, 4096))["t"]
        period = float(np.median(np.diff(t))) if len(t) > 2 else 1.0
    return float(max(1.0, period))


def recorded_span(run, names: list[str]) -> tuple[float, float]:
    """The time every one of ``names`` was recording: the latest first and earliest last stamp."""
    firsts, lasts = [], []
    for name in names:
        reader = run.stream_reader(name)
        firsts.append(float(reader.read([], 0, 1)["t"][0]))
        lasts.append(float(reader.read([], reader.n - 1, reader.n)["t"][0]))
    lo, hi = max(firsts), min(lasts)
    if hi <= lo:
        raise AnalysisInputError(f"{run.path}: the streams {', '.join(names)} never record at the same time")
    return lo, hi


def grid(span_s: tuple[float, float], anchor_s: float, bin_s: float) -> np.ndarray:
    """Bin edges ``anchor + k * bin_s`` covering ``span_s`` with whole bins only."""
    k0 = math.ceil((span_s[0] - anchor_s) / bin_s - 1e-9)
    k1 = math.floor((span_s[1] - anchor_s) / bin_s + 1e-9)
    if k1 - k0 < 1:
        raise AnalysisInputError(f"the streams overlap for {span_s[1] - span_s[0]:.3g} s: shorter than one "
                                 f"{bin_s:g} s bin; pass a smaller --bin-s")
    return anchor_s + np.arange(k0, k1 + 1) * bin_s


def _timing_json(timing: Any) -> Any:
    if timing is None:
        return None
    if is_dataclass(timing):
        return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in asdict(timing).items()}
    return str(timing)


@dataclass
class Result:
    """One comparison over one window (the main one or a phase)."""

    metrics: dict[str, float]
    intervals: dict[str, list[float]]
    info: bootstrap.BootstrapInfo | None
    t_s: np.ndarray
    ref_w: np.ndarray
    cand_w: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    def attrs(self) -> dict[str, Any]:
        out = dict(self.metrics)
        out.update(self.intervals)
        if self.info is not None:
            out.update(self.info.attrs())
        out.update(self.extra)
        return out


def compare_bins(t_s, ref_w, cand_w, bin_s: float, *, n_resamples: int, seed: int | None,
                 psu_efficiency: float | None = None, unmetered: bool = False) -> Result:
    m = agreement(ref_w, cand_w, bin_s)
    if m["n_bins"]:
        intervals, info = bootstrap.agreement_intervals(ref_w, cand_w, bin_s, n_resamples=n_resamples, seed=seed)
    else:
        intervals, info = {f"{k}_ci": [np.nan, np.nan] for k in METRICS}, None
    res = Result(m, intervals, info, np.asarray(t_s), np.asarray(ref_w), np.asarray(cand_w))
    valid = np.isfinite(ref_w) & np.isfinite(cand_w)
    res.extra["coverage"] = float(np.mean(valid)) if len(valid) else 0.0
    if unmetered:
        res.extra.update(unmetered_power(ref_w, cand_w, psu_efficiency,
                                         info.block_bins if info else 1, n_resamples, seed))
    return res


def unmetered_power(wall_w, software_w, psu_efficiency: float | None, block_bins: int,
                    n_resamples: int, seed: int | None) -> dict[str, Any]:
    """Wall minus software: mean W and share of the wall, with intervals.

    With a PSU efficiency eta the wall power is first taken to the DC side (eta * wall), and the
    conversion loss (1 - eta) * wall is reported apart.
    """
    wall = np.asarray(wall_w, dtype=float)
    sw = np.asarray(software_w, dtype=float)
    ok = np.isfinite(wall) & np.isfinite(sw)
    eta = 1.0 if psu_efficiency is None else float(psu_efficiency)
    gap = np.where(ok, eta * wall - sw, np.nan)
    wall_ok = np.where(ok, wall, np.nan)
    n = int(np.count_nonzero(ok))
    mean_gap = float(np.mean(gap[ok])) if n else np.nan
    mean_wall = float(np.mean(wall[ok])) if n else np.nan
    return {
        "unmetered_w": mean_gap,
        "unmetered_w_ci": bootstrap.ratio_interval(gap, np.ones_like(gap), block_bins=block_bins,
                                                   n_resamples=n_resamples, seed=seed),
        "unmetered_share_pct": 100.0 * mean_gap / mean_wall if n and mean_wall else np.nan,
        "unmetered_share_pct_ci": [100.0 * v for v in bootstrap.ratio_interval(
            gap, wall_ok, block_bins=block_bins, n_resamples=n_resamples, seed=seed)],
        "psu_efficiency": np.nan if psu_efficiency is None else eta,
        "psu_loss_w": (1.0 - eta) * mean_wall if psu_efficiency is not None and n else np.nan,
        "unmetered_includes": UNMETERED_INCLUDES if psu_efficiency is None else
        UNMETERED_INCLUDES.replace(" (unless --psu-efficiency is given)", "").replace(
            "the power supply's conversion loss, ", "") + f"; the PSU loss at efficiency {eta:g} is reported apart",
    }


@dataclass
class Comparison:
    candidate: str
    reference: str
    members: list[str]
    main: Result
    phases: dict[str, tuple[Phase, Result]]
    attrs: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.candidate}__vs__{self.reference}"

    def entry(self) -> DerivedEntry:
        children = {}
        for name, (phase, res) in self.phases.items():
            children[name] = DerivedEntry(attrs={**res.attrs(), **phase.attrs()},
                                          datasets={"t": res.t_s, "ref_w": res.ref_w, "cand_w": res.cand_w})
        return DerivedEntry(attrs={**self.main.attrs(), **self.attrs},
                            datasets={"t": self.main.t_s, "ref_w": self.main.ref_w, "cand_w": self.main.cand_w},
                            children=children)


@dataclass
class Analysis:
    run_path: str
    reference: str
    bin_s: float
    window: tuple[float, float]
    window_how: str
    synchronised: dict[str, bool]
    comparisons: list[Comparison]
    calibrations: dict[str, CalibrationRecord]
    notes: list[str]

    @property
    def all_synchronised(self) -> bool:
        return all(self.synchronised.values())

    def entries(self) -> dict[str, DerivedEntry]:
        out = {c.name: c.entry() for c in self.comparisons}
        for stream, rec in self.calibrations.items():
            out[f"calibration__{stream}"] = DerivedEntry(attrs=rec.derived_attrs())
        return out


def analyze(run, *, reference: str | None = None, candidates=(), bin_s: float | None = None,
            psu_efficiency: float | None = None, records: list[CalibrationRecord] | None = None,
            n_resamples: int = bootstrap.DEFAULT_RESAMPLES, seed: int | None = None) -> Analysis:
    """Compare every candidate with the reference (see the module docstring)."""
    from hwval.sync import align  # the synchroniser owns alignment

    if psu_efficiency is not None and not 0 < psu_efficiency <= 1:
        raise AnalysisInputError(f"--psu-efficiency {psu_efficiency}: expected a fraction in (0, 1], e.g. 0.92")
    sel = select_streams(run, reference, candidates)
    ref = sel.reference
    if bin_s is None:
        bin_s = default_bin_s(run, ref, sel.attrs[ref])
    elif not bin_s > 0:
        raise AnalysisInputError(f"--bin-s {bin_s}: must be > 0")
    events = run.events
    span = recorded_span(run, sel.streams)
    w_start, w_stop, how = workload_window(events, span)
    edges = grid(span, w_start, bin_s)
    aligned = align(run, sel.streams, edges_s=edges)
    t = np.asarray(aligned.t_s)
    lo_e, hi_e = np.asarray(aligned.edges_s[:-1]), np.asarray(aligned.edges_s[1:])
    synchronised = {s: bool(aligned.synchronised[s]) for s in sel.streams}

    host = str(run.attrs.get("hostname", ""))
    records = records or []
    applied: dict[str, CalibrationRecord] = {}
    for s in sel.streams:
        rec = pick(records, MeterDescription.from_stream(s, sel.attrs[s], host))
        if rec is not None:
            applied[s] = rec
    ref_w = np.asarray(aligned.power_w[ref], dtype=float)
    notes = list(sel.notes)
    if ref in applied:
        ref_w = applied[ref].apply(ref_w)
        notes.append(f"reference {ref} corrected by its calibration: {applied[ref].summary()}")

    phases = find_phases(events, span)
    marks = [p for p in phases if p.kind == "mark"]
    if len(marks) > MAX_MARK_PHASES:
        # per-step marks would make thousands of tiny phases: keep the first ones, say so
        dropped = {id(p) for p in marks[MAX_MARK_PHASES:]}
        phases = [p for p in phases if id(p) not in dropped]
        phase_notes = [f"{len(marks)} marker intervals: only the first {MAX_MARK_PHASES} get their own results"]
    else:
        phase_notes = []
    main_mask = (lo_e >= w_start - 1e-9) & (hi_e <= w_stop + 1e-9)
    if not main_mask.any():
        raise AnalysisInputError(f"{run.path}: the main window ({how}, {w_stop - w_start:.3g} s) holds no whole "
                                 f"{bin_s:g} s bin; pass a smaller --bin-s")
    run_id = str(run.attrs.get("run_id", ""))
    comparisons = []
    jobs: list[tuple[str, list[str], np.ndarray, CalibrationRecord | None]] = []
    for cand, members in sel.candidates.items():
        stack = np.vstack([np.asarray(aligned.power_w[m], dtype=float) for m in members])
        cand_w = stack.sum(axis=0)  # NaN where any member is missing: never a partial total
        jobs.append((cand, members, cand_w, None))
        if len(members) == 1 and members[0] in applied and members[0] != ref:
            rec = applied[members[0]]
            jobs.append((f"{cand}_calibrated", members, rec.apply(cand_w), rec))
    for cand, members, cand_w, rec in jobs:
        is_total = cand == SOFTWARE_TOTAL
        main = compare_bins(t[main_mask], ref_w[main_mask], cand_w[main_mask], bin_s,
                            n_resamples=n_resamples, seed=seed, psu_efficiency=psu_efficiency,
                            unmetered=is_total)
        results: dict[str, tuple[Phase, Result]] = {}
        for ph in phases:
            if ph.kind == "workload":
                results[ph.name] = (ph, main)
                continue
            mask = (lo_e >= ph.start_s - 1e-9) & (hi_e <= ph.stop_s + 1e-9)
            res = compare_bins(t[mask], ref_w[mask], cand_w[mask], bin_s, n_resamples=n_resamples,
                               seed=seed, psu_efficiency=psu_efficiency, unmetered=is_total)
            results[ph.name] = (ph, res)
        streams_here = [ref, *members]
        synced = all(synchronised[s] for s in streams_here)
        attrs = {
            "candidate": cand, "reference": ref, "members": members,
            "window_s": bin_s, "bin_s": bin_s, "window_start_s": w_start, "window_stop_s": w_stop,
            "window_how": how, "synchronised": synced,
            "sync_note": "" if synced else NOT_SYNCHRONISED,
            "timing": {s: _timing_json(aligned.timing.get(s)) for s in streams_here},
            "calibration_applied": "" if rec is None else rec.path,
            "reference_calibration": applied[ref].path if ref in applied else "",
            "run_id": run_id, "hwval_version": __version__, "created_utc": utc_now(),
            "phases": [p.name for p in phases],
        }
        comparisons.append(Comparison(cand, ref, members, main, results, attrs))
    notes += phase_notes
    if not all(synchronised.values()):
        notes.append(NOT_SYNCHRONISED)
    return Analysis(str(run.path), ref, bin_s, (w_start, w_stop), how, synchronised, comparisons, applied, notes)


def write(run, analysis: Analysis) -> list[str]:
    """Store the comparisons (and the calibrations applied) under ``/analysis``; other entries
    (validation verdicts, other references' comparisons) are kept."""
    entries = analysis.entries()
    run.replace_derived("analysis", entries)
    return list(entries)
