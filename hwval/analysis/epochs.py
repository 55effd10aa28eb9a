"""Energy per epoch (and per evaluation, per idle period, per training) from a run's marks, for
the hardware reference and every software meter.

Intervals come from the marks of :mod:`hwval.workloads.train` (the ``detail`` of the mark that
closes an interval is kept: loss, accuracy, samples):

=================  ================================================================================
``workload``       ``workload_start`` .. ``workload_end``
``setup``          ``workload_start`` .. the workload's first mark (interpreter, torch, data, model)
``idle_before``    mark ``idle_before`` .. the next mark (skipped when its ``seconds`` is 0)
``train``          ``train_start`` .. ``train_end`` (every epoch and evaluation)
``epoch_<k>``      ``epoch_start`` .. ``epoch`` with ``epoch = k``
``eval_<k>``       ``eval_start`` .. ``eval`` with ``epoch = k``
``idle_after``     mark ``idle_after`` .. ``seconds`` later (or the next mark / ``workload_end``)
``infer``          ``infer_start`` .. ``infer_end``; ``infer_pass_<k>``: ``infer_pass_start`` .. ``infer_pass``
=================  ================================================================================

Every stream is aligned by :func:`hwval.sync.align` on edges placed exactly at the interval
boundaries (lag-corrected with ``/sync`` when the run has it), so an interval's energy is the
difference of the stream's cumulative energy at its two ends: energy is conserved and nothing is
rounded to whole bins. An interval that touches a gap of a stream is NaN for that stream.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwval import __version__
from hwval.analysis.calibration import utc_now
from hwval.analysis.compare import (SOFTWARE_TOTAL, AnalysisInputError, resolve_reference,
                                    software_total_members)
from hwval.runfile import DerivedEntry
from hwval.runfile.schema import EventName

#: (opening mark, closing mark, kind) pairs; the closer must carry the opener's index key.
PAIRS = (("train_start", "train_end", "train", None), ("epoch_start", "epoch", "epoch", "epoch"),
         ("eval_start", "eval", "eval", "epoch"), ("infer_start", "infer_end", "infer", None),
         ("infer_pass_start", "infer_pass", "infer_pass", "pass"))
ENTRY_PREFIX = "epochs__"


@dataclass(frozen=True)
class Interval:
    """A stretch of the run's timebase (s) that gets its own energy."""

    name: str
    kind: str
    start_s: float
    stop_s: float
    index: int = 0
    detail: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def duration_s(self) -> float:
        return self.stop_s - self.start_s


def _marks(events) -> list[Any]:
    return [e for e in events if e.name == EventName.MARK and e.stream == "" and isinstance(e.detail.get("mark"), str)]


def _run_event(events, name: str, last: bool = False) -> float | None:
    times = [e.t for e in events if e.name == name and e.stream == ""]
    if not times:
        return None
    return times[-1] if last else times[0]


def workload_intervals(events) -> tuple[list[Interval], list[str]]:
    """The intervals of the module docstring found in ``events``, in start order, and notes on
    marks that could not be paired (an interrupted run)."""
    marks = _marks(events)
    notes: list[str] = []
    out: list[Interval] = []
    w_start, w_end = _run_event(events, EventName.WORKLOAD_START), _run_event(events, EventName.WORKLOAD_END, last=True)
    if w_start is not None and w_end is not None and w_end > w_start:
        out.append(Interval("workload", "workload", w_start, w_end))
    if w_start is not None and marks and marks[0].t > w_start:
        out.append(Interval("setup", "setup", w_start, marks[0].t))
    used: set[int] = set()
    for opener, closer, kind, key in PAIRS:
        for i, m in enumerate(marks):
            if m.detail["mark"] != opener:
                continue
            index = m.detail.get(key) if key else None
            match = next((j for j in range(i + 1, len(marks)) if j not in used
                          and marks[j].detail["mark"] == closer
                          and (key is None or marks[j].detail.get(key) == index)), None)
            if match is None:
                notes.append(f"mark {opener}{'' if index is None else f' {key}={index}'} at {m.t:.2f} s has no "
                             f"{closer}: the interval is left out (interrupted run?)")
                continue
            used.add(match)
            detail = {k: v for k, v in marks[match].detail.items() if k != "mark"}
            k = int(index) if isinstance(index, int) and not isinstance(index, bool) else 0
            out.append(Interval(f"{kind}_{k}" if k else kind, kind, m.t, marks[match].t, k, detail))
    for i, m in enumerate(marks):
        name = m.detail["mark"]
        if name not in ("idle_before", "idle_after"):
            continue
        seconds = float(m.detail.get("seconds") or 0.0)
        if seconds <= 0:
            continue
        later = [x.t for x in marks[i + 1:] if x.t > m.t]
        if name == "idle_before":
            stop = later[0] if later else m.t + seconds
        else:
            stop = min([m.t + seconds, *later[:1], *([w_end] if w_end is not None else [])])
        if stop > m.t:
            out.append(Interval(name, name, m.t, stop, 0, {"seconds": seconds}))
    out.sort(key=lambda iv: (iv.start_s, -iv.stop_s, iv.name))
    return out, notes


@dataclass
class EpochEnergy:
    """Energy per interval (J) of every stream, and each candidate's error against the reference."""

    run_path: str
    run_id: str
    reference: str
    intervals: list[Interval]
    energy_j: dict[str, np.ndarray]          # stream (or software_total) -> J per interval
    kinds: dict[str, str]                    # stream -> "hardware" | "software" | "total"
    synchronised: dict[str, bool]
    members: list[str]
    notes: list[str]

    @property
    def streams(self) -> list[str]:
        return list(self.energy_j)

    @property
    def candidates(self) -> list[str]:
        return [s for s in self.energy_j if s != self.reference]

    def error_pct(self, stream: str) -> np.ndarray:
        """(E_stream - E_reference) / E_reference x 100 per interval."""
        ref = self.energy_j[self.reference]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(ref != 0, 100.0 * (self.energy_j[stream] - ref) / ref, np.nan)

    def mean_w(self, stream: str) -> np.ndarray:
        dur = np.array([iv.duration_s for iv in self.intervals])
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(dur > 0, self.energy_j[stream] / dur, np.nan)

    def idle_w(self, stream: str) -> float:
        """Mean power over ``idle_before`` (NaN without one): the baseline of "above idle" energy."""
        for i, iv in enumerate(self.intervals):
            if iv.kind == "idle_before" and iv.duration_s > 0:
                return float(self.energy_j[stream][i] / iv.duration_s)
        return math.nan

    def find(self, name: str) -> int | None:
        return next((i for i, iv in enumerate(self.intervals) if iv.name == name), None)

    def energy_of(self, name: str, stream: str | None = None) -> float:
        i = self.find(name)
        return math.nan if i is None else float(self.energy_j[stream or self.reference][i])

    @property
    def entry_name(self) -> str:
        return f"{ENTRY_PREFIX}{self.reference}"

    def entry(self) -> DerivedEntry:
        children = {}
        for s, e in self.energy_j.items():
            datasets = {"energy_j": e, "mean_w": self.mean_w(s)}
            if s != self.reference:
                datasets["error_pct"] = self.error_pct(s)
            children[s] = DerivedEntry(attrs={"kind": self.kinds[s], "synchronised": self.synchronised[s],
                                              "idle_w": self.idle_w(s)}, datasets=datasets)
        attrs = {"reference": self.reference, "streams": self.streams, "members": self.members,
                 "intervals": [iv.name for iv in self.intervals], "kinds": [iv.kind for iv in self.intervals],
                 "details": json.dumps([iv.detail for iv in self.intervals]),
                 "synchronised": all(self.synchronised.values()), "notes": json.dumps(self.notes),
                 "run_id": self.run_id, "hwval_version": __version__, "created_utc": utc_now(),
                 "how": "energy over each interval from hwval.sync.align with edges at the interval "
                        "boundaries (energy-conserving; NaN where a gap touches it)"}
        datasets = {"start_s": np.array([iv.start_s for iv in self.intervals]),
                    "stop_s": np.array([iv.stop_s for iv in self.intervals]),
                    "index": np.array([iv.index for iv in self.intervals], dtype=np.int64)}
        return DerivedEntry(attrs=attrs, datasets=datasets, children=children)


def energy_over(run, streams: list[str], bounds: list[tuple[float, float]], timings=None
                ) -> tuple[dict[str, np.ndarray], Any]:
    """Energy (J) of each stream over each ``(start_s, stop_s)``: one alignment whose edges are
    every boundary, then each interval is the sum of the bins it spans (NaN if one is NaN)."""
    from hwval.sync import align  # the synchroniser owns alignment

    edges = np.unique(np.array([x for b in bounds for x in b], dtype=float))
    if len(edges) < 2:
        raise AnalysisInputError(f"{run.path}: no interval with a duration to measure")
    aligned = align(run, streams, edges_s=edges, timings=timings)
    lo = np.searchsorted(edges, [b[0] for b in bounds])
    hi = np.searchsorted(edges, [b[1] for b in bounds])
    out = {}
    for s in streams:
        per_bin = np.asarray(aligned.energy_j[s], dtype=float)
        cum = np.concatenate([[0.0], np.cumsum(np.nan_to_num(per_bin))])
        bad = np.concatenate([[0], np.cumsum(~np.isfinite(per_bin))])
        e = cum[hi] - cum[lo]
        out[s] = np.where(bad[hi] - bad[lo] > 0, np.nan, e)
    return out, aligned


#: Clipping an interval by more than this is worth a note (less is the capture's last reading
#: arriving a period before workload_end).
CLIP_NOTE_S = 1.0


def _covered_before_s(run, stream: str, timing) -> float:
    """How long before its last stamp a stream's data ends, at most: a reading stamped t covers
    the power up to t - lag, averaged over the window before that (lag and window from /sync, or
    the declared window of the power dataset)."""
    if timing is not None:
        return max(0.0, float(timing.lag_s)) + max(0.0, float(timing.window_s))
    reader = run.stream_reader(stream)
    if "power_w" not in reader.keys:
        return 0.0
    window = reader.dataset_attrs("power_w").get("window_s")
    try:
        return max(0.0, float(window)) if window is not None and math.isfinite(float(window)) else 0.0
    except (TypeError, ValueError):
        return 0.0


def _clip(run, streams, intervals: list[Interval], timings, notes: list[str]) -> list[Interval]:
    """Intervals within the time every stream covers: from the latest first reading to the
    earliest last one, less the largest lag + window (a late meter's last reading covers earlier
    power).
    The capture stops right after ``workload_end``, so the workload's last fraction of a second
    is often beyond a meter's last reading; an interval that would be NaN for that is shortened
    instead (and noted when by more than :data:`CLIP_NOTE_S`)."""
    from hwval.analysis.compare import recorded_span
    from hwval.sync.align import timings_from_sync

    lo, hi = recorded_span(run, streams)
    known = timings_from_sync(run) if timings is None else timings
    hi -= max(_covered_before_s(run, s, known.get(s)) for s in streams)
    out = []
    for iv in intervals:
        a, b = max(iv.start_s, lo), min(iv.stop_s, hi)
        if b <= a:
            notes.append(f"{iv.name}: outside the time every stream recorded: left out")
            continue
        if (a - iv.start_s) + (iv.stop_s - b) > CLIP_NOTE_S:
            notes.append(f"{iv.name}: shortened to {a:.2f}..{b:.2f} s, the time every stream recorded")
        out.append(Interval(iv.name, iv.kind, a, b, iv.index, iv.detail) if (a, b) != (iv.start_s, iv.stop_s)
                   else iv)
    return out


def epoch_energy(run, *, reference: str | None = None, candidates=(), timings=None) -> EpochEnergy:
    """Energy per interval (module docstring) of the reference, every other stream with power
    (hardware first, then software) and ``software_total``, or only ``candidates`` when given."""
    ref, attrs = resolve_reference(run, reference)
    has_power = [n for n, a in attrs.items() if a.get("_n", 0) > 0 and
                 any(k in a.get("_keys", ()) for k in ("power_w", "energy_j"))]
    members = software_total_members(attrs)
    if candidates:
        wanted = []
        for c in candidates:
            if c == SOFTWARE_TOTAL:
                if not members:
                    raise AnalysisInputError(f"--candidate {SOFTWARE_TOTAL}: the run has no NVML or RAPL "
                                             "package/DRAM stream to add up")
            elif c not in has_power:
                raise AnalysisInputError(f"--candidate {c!r}: no stream with power in {run.path} "
                                         f"(streams: {', '.join(has_power)}, or {SOFTWARE_TOTAL})")
            if c == ref:
                raise AnalysisInputError(f"--candidate {c!r} is the reference itself")
            wanted.append(c)
    else:
        wanted = [n for n in has_power if n != ref and attrs[n].get("kind") == "hardware"]
        wanted += [n for n in has_power if n != ref and attrs[n].get("kind") != "hardware"]
        if members:
            wanted.append(SOFTWARE_TOTAL)
    events = run.events
    intervals, notes = workload_intervals(events)
    plain = [ref] + [c for c in wanted if c != SOFTWARE_TOTAL]
    needed = plain + [m for m in (members if SOFTWARE_TOTAL in wanted else []) if m not in plain]
    intervals = _clip(run, needed, intervals, timings, notes)
    if not any(iv.kind in ("train", "infer", "epoch", "infer_pass") for iv in intervals):
        raise AnalysisInputError(f"{run.path}: no train_start..train_end or epoch marks (is it a run of "
                                 "`hwval workload train`?); per-epoch energy needs the workload's marks")
    energies, aligned = energy_over(run, needed, [(iv.start_s, iv.stop_s) for iv in intervals], timings)
    out = {s: energies[s] for s in plain}
    kinds = {s: str(attrs[s].get("kind", "")) for s in plain}
    synced = {s: bool(aligned.synchronised[s]) for s in plain}
    if SOFTWARE_TOTAL in wanted:
        out[SOFTWARE_TOTAL] = np.sum([energies[m] for m in members], axis=0)  # NaN if any member is
        kinds[SOFTWARE_TOTAL] = "total"
        synced[SOFTWARE_TOTAL] = all(aligned.synchronised[m] for m in members)
    _explain_nan(run, events, intervals, out, members, notes)
    if not all(synced.values()):
        notes.append("not synchronised: raw receipt timestamps were used for "
                     f"{', '.join(s for s, ok in synced.items() if not ok)} (run `hwval sync` first)")
    return EpochEnergy(str(run.path), str(run.attrs.get("run_id", "")), ref, intervals, out, kinds, synced,
                       members if SOFTWARE_TOTAL in wanted else [], notes)


def _explain_nan(run, events, intervals: list[Interval], energy: dict[str, np.ndarray], members, notes) -> None:
    """One note per stream with NaN intervals, naming them and the gaps that touch them."""
    from hwval.sync.align import stream_gaps

    for s, e in energy.items():
        bad = [iv for iv, v in zip(intervals, e) if not np.isfinite(v)]
        if not bad:
            continue
        sources = members if s == SOFTWARE_TOTAL else [s]
        gaps = [(g, m) for m in sources for g in stream_gaps(events, m)
                if any(g[0] < iv.stop_s and g[1] > iv.start_s for iv in bad)]
        why = ("gap " + ", ".join(f"{m} {a:.2f}..{b:.2f} s" for (a, b), m in gaps[:3])
               + (f" and {len(gaps) - 3} more" if len(gaps) > 3 else "")) if gaps else \
            "readings missing or too far apart"
        names = ", ".join(iv.name for iv in bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
        notes.append(f"{s}: no energy for {names}: {why} (a gap is never bridged)")


def write(run, result: EpochEnergy) -> str:
    """Store under ``/analysis/epochs__<reference>`` (other entries are kept)."""
    run.replace_derived("analysis", {result.entry_name: result.entry()})
    return result.entry_name


def _f(x: float, fmt: str) -> str:
    return "-" if x is None or not np.isfinite(x) else format(x, fmt)


def format_epochs(result: EpochEnergy) -> str:
    """A table: one row per interval, the reference's energy and each candidate's with its error."""
    cands = result.candidates
    head = f"{'interval':<14} {'start s':>8} {'dur s':>7} {'acc':>6} {result.reference + ' J':>12}"
    for c in cands:
        head += f" {c + ' J':>16} {'err %':>7}"
    lines = [f"energy per interval: reference {result.reference}; error = (meter - reference) / reference", "",
             head, "-" * len(head)]
    for i, iv in enumerate(result.intervals):
        acc = iv.detail.get("accuracy", iv.detail.get("eval_accuracy"))
        line = (f"{iv.name:<14} {iv.start_s:>8.2f} {iv.duration_s:>7.2f} "
                f"{_f(acc if isinstance(acc, (int, float)) else math.nan, '.3f'):>6} "
                f"{_f(result.energy_j[result.reference][i], '.1f'):>12}")
        for c in cands:
            line += f" {_f(result.energy_j[c][i], '.1f'):>16} {_f(result.error_pct(c)[i], '+.1f'):>7}"
        lines.append(line)
    idle = [f"{s} {_f(result.idle_w(s), '.1f')} W" for s in result.streams]
    if any(np.isfinite(result.idle_w(s)) for s in result.streams):
        lines += ["", "idle power (idle_before): " + ", ".join(idle)]
    if result.members:
        lines.append(f"{SOFTWARE_TOTAL} = {' + '.join(result.members)}")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


def to_json(result: EpochEnergy) -> dict[str, Any]:
    from hwval.analysis.output import plain

    rows = []
    for i, iv in enumerate(result.intervals):
        row = {"name": iv.name, "kind": iv.kind, "index": iv.index, "start_s": iv.start_s, "stop_s": iv.stop_s,
               "duration_s": iv.duration_s, "detail": iv.detail,
               "energy_j": {s: result.energy_j[s][i] for s in result.streams},
               "error_pct": {c: result.error_pct(c)[i] for c in result.candidates}}
        rows.append(row)
    return plain({"run": result.run_path, "run_id": result.run_id, "reference": result.reference,
                  "streams": result.streams, "kinds": result.kinds, "members": result.members,
                  "synchronised": result.synchronised, "idle_w": {s: result.idle_w(s) for s in result.streams},
                  "intervals": rows, "notes": result.notes})
