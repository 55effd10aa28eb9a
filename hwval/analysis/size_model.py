"""A model-size energy estimator, fitted across runs, that acts as a software meter.

The law: the energy of a run's ``train`` interval (``train_start`` .. ``train_end``, hardware
reference) is

    E = a + b * W,    W = x * (3 * n_train + n_eval)

where x is the model's size (``macs``: multiply-accumulates of one sample's forward pass, or
``params``: trainable parameters, both from the ``train_start`` mark), n_train the training
samples and n_eval the evaluation samples the run processed (summed over its ``epoch`` and
``eval`` marks). A training sample costs a forward and a backward pass, and the backward pass
costs about twice the forward one, hence 3 forward-pass equivalents; an evaluation sample is one.
``a`` and ``b`` are a least-squares fit over the runs (``a`` only with at least 3 runs, else the
line goes through the origin).

As a meter (:func:`meter_series`), the estimator reports a cumulative energy over a run's
workload: inside each epoch and evaluation, b * x * (its weighted samples) spread evenly over
it, plus ``a`` spread evenly over the training; outside the training (start-up, idle periods),
the fitted runs' mean idle power. Written as a JSONL series (``timestamp``, ``energy_j``, a
reading every 0.1 s), it is judged by ``hwval validate RUN.h5 --candidate FILE`` like any other meter.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hwval import __version__
from hwval.analysis.calibration import utc_now
from hwval.analysis.compare import AnalysisInputError
from hwval.analysis.epochs import Interval, epoch_energy, workload_intervals
from hwval.runfile.schema import EventName

FEATURES = ("macs", "params")
FORMAT = "hwval-size-model"
VERSION = 1
TRAIN_SAMPLE_WEIGHT = 3.0
EVAL_SAMPLE_WEIGHT = 1.0
MIN_RUNS_FOR_INTERCEPT = 3
#: Interval of the meter series' readings (s).
METER_PERIOD_S = 0.1


@dataclass
class RunSize:
    """What the law needs from one run, and its hardware training energy."""

    path: str
    run_id: str
    arch: str
    params: float
    macs: float
    train_samples: int
    eval_samples: int
    energy_j: float           # hardware, train interval
    idle_w: float             # hardware, idle_before (NaN without one)
    reference: str

    def size(self, feature: str) -> float:
        return self.macs if feature == "macs" else self.params

    def work(self, feature: str) -> float:
        return self.size(feature) * (TRAIN_SAMPLE_WEIGHT * self.train_samples + EVAL_SAMPLE_WEIGHT * self.eval_samples)


def _samples(intervals: list[Interval], kind: str) -> int:
    return int(sum(int(iv.detail.get("samples") or 0) for iv in intervals if iv.kind == kind))


def _train_start(events) -> dict[str, Any]:
    found = [e.detail for e in events if e.name == EventName.MARK and e.detail.get("mark") == "train_start"]
    if not found:
        raise AnalysisInputError("no train_start mark: the size model needs runs of `hwval workload train`")
    return found[-1]


def run_size(run, *, reference: str | None = None) -> RunSize:
    res = epoch_energy(run, reference=reference, candidates=[])
    start = _train_start(run.events)
    train = res.find("train")
    if train is None:
        raise AnalysisInputError(f"{run.path}: no train_start..train_end interval (did the run finish?)")
    return RunSize(str(run.path), res.run_id, str(start.get("arch", "?")), float(start.get("params", math.nan)),
                   float(start.get("macs", math.nan)), _samples(res.intervals, "epoch"),
                   _samples(res.intervals, "eval"), float(res.energy_j[res.reference][train]),
                   res.idle_w(res.reference), res.reference)


@dataclass
class SizeModel:
    feature: str
    intercept_j: float
    j_per_unit: float           # J per (feature unit x forward-pass-equivalent sample)
    idle_w: float
    r2: float
    runs: list[dict[str, Any]] = field(default_factory=list)
    reference: str = ""
    created_utc: str = ""
    notes: list[str] = field(default_factory=list)

    def predict_j(self, work: float) -> float:
        return self.intercept_j + self.j_per_unit * work

    def to_toml(self) -> str:
        import tomli_w

        doc = {"format": FORMAT, "version": VERSION, "feature": self.feature,
               "law": "E_train_j = intercept_j + j_per_unit * size * (3 * train_samples + eval_samples)",
               "intercept_j": self.intercept_j, "j_per_unit": self.j_per_unit,
               "idle_w": self.idle_w, "r2": self.r2,  # nan (valid TOML) when unknown
               "train_sample_weight": TRAIN_SAMPLE_WEIGHT, "eval_sample_weight": EVAL_SAMPLE_WEIGHT,
               "reference": self.reference, "created_utc": self.created_utc, "hwval_version": __version__,
               "notes": self.notes, "runs": self.runs}
        return tomli_w.dumps(doc)

    @classmethod
    def load(cls, path: str | Path) -> "SizeModel":
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise AnalysisInputError(f"{path}: cannot read the size model ({exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise AnalysisInputError(f"{path}: not TOML ({exc})") from None
        if doc.get("format") != FORMAT:
            raise AnalysisInputError(f"{path}: not a size model written by `hwval predict --fit-size`")
        try:
            feature = doc["feature"]
            if feature not in FEATURES:
                raise KeyError("feature")
            return cls(feature, float(doc["intercept_j"]), float(doc["j_per_unit"]), float(doc["idle_w"]),
                       float(doc.get("r2", math.nan)), list(doc.get("runs", [])), str(doc.get("reference", "")),
                       str(doc.get("created_utc", "")), list(doc.get("notes", [])))
        except (KeyError, TypeError, ValueError) as exc:
            raise AnalysisInputError(f"{path}: size model lacks a valid {exc} entry") from None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.intercept_j) and math.isfinite(self.j_per_unit)):
            raise AnalysisInputError(f"size model: intercept_j and j_per_unit must be finite numbers "
                                     f"(got {self.intercept_j}, {self.j_per_unit})")


def fit(runs: Sequence[RunSize], feature: str = "macs") -> SizeModel:
    """Least-squares fit of the law (module docstring) over ``runs``.

    Notes
    -----
    With W_i the work of run i and E_i its energy: for n >= 3 runs, b = cov(W, E) / var(W) and
    a = mean(E) - b mean(W); for fewer, a = 0 and b = sum(W E) / sum(W^2). r2 = 1 - SS_res / SS_tot
    (NaN for one run).
    """
    if feature not in FEATURES:
        raise AnalysisInputError(f"--feature {feature!r}: expected one of {', '.join(FEATURES)}")
    if not runs:
        raise AnalysisInputError("no runs to fit the size model on")
    w = np.array([r.work(feature) for r in runs])
    e = np.array([r.energy_j for r in runs])
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(e))):
        bad = [r.path for r, wi, ei in zip(runs, w, e) if not (np.isfinite(wi) and np.isfinite(ei))]
        raise AnalysisInputError(f"no size or no hardware energy for {', '.join(bad)} (a gap in the training?)")
    if not np.any(w > 0):
        raise AnalysisInputError(f"every run has zero {feature} x samples: nothing to fit the size model on "
                                 "(did the runs process any samples?)")
    notes = []
    if len(runs) >= MIN_RUNS_FOR_INTERCEPT and np.ptp(w) > 0:
        b = float(np.sum((w - w.mean()) * (e - e.mean())) / np.sum((w - w.mean()) ** 2))
        a = float(e.mean() - b * w.mean())
    else:
        b = float(np.sum(w * e) / np.sum(w * w))
        a = 0.0
        notes.append(f"{len(runs)} run(s) of {'one size' if len(runs) >= MIN_RUNS_FOR_INTERCEPT else 'fewer than 3'}: "
                     "fitted through the origin (no intercept)")
    pred = a + b * w
    ss_tot = float(np.sum((e - e.mean()) ** 2))
    r2 = 1.0 - float(np.sum((e - pred) ** 2)) / ss_tot if len(runs) > 1 and ss_tot > 0 else math.nan
    idles = [r.idle_w for r in runs if math.isfinite(r.idle_w)]
    idle = float(np.mean(idles)) if idles else math.nan
    if not idles:
        notes.append("no fitted run has an idle_before period: the meter reports 0 W outside training")
    table = [{"path": r.path, "run_id": r.run_id, "arch": r.arch, "size": r.size(feature), "work": r.work(feature),
              "train_samples": r.train_samples, "eval_samples": r.eval_samples, "energy_j": r.energy_j,
              "predicted_j": float(p),
              "residual_pct": 100.0 * (float(p) - r.energy_j) / r.energy_j if r.energy_j else math.nan}
             for r, p in zip(runs, pred)]
    refs = sorted({r.reference for r in runs})
    return SizeModel(feature, a, b, idle, r2, table, ", ".join(refs), utc_now(), notes)


def meter_series(run, model: SizeModel) -> tuple[np.ndarray, np.ndarray]:
    """``(t_s, energy_j)``: the estimator's cumulative energy over the run's workload (run
    timebase), every :data:`METER_PERIOD_S` and at every interval boundary, linear in between
    (module docstring)."""
    start = _train_start(run.events)
    x = float(start.get("macs" if model.feature == "macs" else "params", math.nan))
    if not math.isfinite(x):
        raise AnalysisInputError(f"{run.path}: the train_start mark has no {model.feature}")
    intervals, _ = workload_intervals(run.events)
    by_kind = {iv.kind: iv for iv in intervals if iv.kind in ("workload", "train")}
    if "train" not in by_kind:
        raise AnalysisInputError(f"{run.path}: no train_start..train_end interval (did the run finish?)")
    train = by_kind["train"]
    whole = by_kind.get("workload", train)
    lo, hi = min(whole.start_s, train.start_s), max(whole.stop_s, train.stop_s)
    work_parts = [iv for iv in intervals if iv.kind in ("epoch", "eval") and iv.duration_s > 0]
    edges = np.unique([lo, hi, train.start_s, train.stop_s,
                       *[b for iv in work_parts for b in (iv.start_s, iv.stop_s)]])
    idle_w = model.idle_w if math.isfinite(model.idle_w) else 0.0
    seg_j = np.zeros(len(edges) - 1)
    for k, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        mid = 0.5 * (a + b)
        if not train.start_s <= mid <= train.stop_s:
            seg_j[k] = idle_w * (b - a)
            continue
        seg_j[k] = model.intercept_j * (b - a) / train.duration_s
        for iv in work_parts:
            if iv.start_s <= mid <= iv.stop_s:
                weight = TRAIN_SAMPLE_WEIGHT if iv.kind == "epoch" else EVAL_SAMPLE_WEIGHT
                seg_j[k] += model.j_per_unit * x * weight * float(iv.detail.get("samples") or 0) \
                    * (b - a) / iv.duration_s
    cum = np.concatenate([[0.0], np.cumsum(seg_j)])
    # Report like a meter: every METER_PERIOD_S (and at each boundary), so no two readings are
    # far enough apart to count as a gap when the series is aligned.
    t = np.union1d(edges, np.arange(edges[0], edges[-1], METER_PERIOD_S))
    return t, np.interp(t, edges, cum)


def write_meter_jsonl(run, model: SizeModel, path: str | Path) -> int:
    """Write :func:`meter_series` (a reading every 0.1 s) as JSONL (``timestamp`` Unix s, ``energy_j`` cumulative), the
    series format ``hwval validate --candidate`` reads; returns the number of rows."""
    origin = run.attrs.get("origin_realtime_ns")
    if origin is None:
        raise AnalysisInputError(f"{run.path}: no origin_realtime_ns: the series cannot be given wall-clock times")
    t, e = meter_series(run, model)
    with open(path, "w", encoding="utf-8") as fh:
        for ti, ei in zip(t, e):
            fh.write(json.dumps({"timestamp": round(int(origin) / 1e9 + float(ti), 6), "energy_j": float(ei)}) + "\n")
    return len(t)


def format_fit(model: SizeModel) -> str:
    unit = "MAC" if model.feature == "macs" else "parameter"
    lines = [f"size model: E_train = {model.intercept_j:.2f} J + {model.j_per_unit:.4g} J per {unit}-sample "
             f"x size x (3 x train samples + eval samples)   r2 = {model.r2:.4f}",
             f"idle power outside training: {model.idle_w:.2f} W (mean idle_before of the fitted runs)", ""]
    head = f"{'run':<28} {'arch':<10} {'size':>12} {'energy J':>10} {'fitted J':>10} {'resid %':>8}"
    lines += [head, "-" * len(head)]
    for r in model.runs:
        lines.append(f"{Path(r['path']).stem:<28} {r['arch']:<10} {r['size']:>12,.0f} {r['energy_j']:>10.1f} "
                     f"{r['predicted_j']:>10.1f} {r['residual_pct']:>+8.2f}")
    lines += [f"note: {n}" for n in model.notes]
    return "\n".join(lines)


def fit_json(model: SizeModel) -> dict[str, Any]:
    from hwval.analysis.output import plain

    return plain(asdict(model))
