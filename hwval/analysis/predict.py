"""Whole-run energy from a short profile, checked against the hardware truth: ``hwval predict``.

The run's work is its ``train`` interval (``train_start`` .. ``train_end``; ``infer`` for an
inference run), duration D. Two estimators, each applied to every stream on its own readings:

- **power x duration** (``profile_s``): the mean power over the first N seconds of the work
  times D. The duration is taken as known (a job whose length its schedule fixes, or one timed
  in a dry run without a meter), so the error says whether the first N seconds' power stands for
  the whole run's.
- **energy per epoch x epochs** (``profile_epochs``): the energy of the first K epochs, each
  with its evaluation (``train_start`` .. epoch K + 1's ``epoch_start``), divided by K, times
  the number of epochs the run has. It needs no duration.

Each stream's estimate is compared with the hardware reference's energy over the whole work
(the truth) and with the stream's own whole-work energy (its extrapolation error alone, apart
from the meter's own error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwval.analysis.compare import SOFTWARE_TOTAL, AnalysisInputError
from hwval.analysis.epochs import Interval, energy_over, epoch_energy

METHODS = {"power_x_duration": "mean power of the profile x the work's duration",
           "energy_per_epoch_x_epochs": "energy of the profile's epochs / K x the run's epochs"}


@dataclass
class StreamPrediction:
    stream: str
    profile_j: float
    predicted_j: float
    own_full_j: float
    truth_j: float

    @property
    def error_pct(self) -> float:
        """(predicted - hardware truth) / hardware truth x 100."""
        return 100.0 * (self.predicted_j - self.truth_j) / self.truth_j if self.truth_j else math.nan

    @property
    def extrapolation_error_pct(self) -> float:
        """(predicted - the stream's own whole-work energy) / that x 100."""
        return 100.0 * (self.predicted_j - self.own_full_j) / self.own_full_j if self.own_full_j else math.nan


@dataclass
class Prediction:
    run_path: str
    reference: str
    method: str
    work: Interval
    profile_start_s: float
    profile_stop_s: float
    profile_epochs: int | None
    epochs: int
    streams: list[StreamPrediction]
    notes: list[str] = field(default_factory=list)

    @property
    def profile_s(self) -> float:
        return self.profile_stop_s - self.profile_start_s

    @property
    def profile_share(self) -> float:
        return self.profile_s / self.work.duration_s


def _work(intervals: list[Interval]) -> Interval:
    for kind in ("train", "infer"):
        found = [iv for iv in intervals if iv.kind == kind]
        if found:
            return found[0]
    raise AnalysisInputError("the run has no train_start..train_end (or infer_start..infer_end) marks: "
                             "prediction needs a finished run of `hwval workload train|infer`")


def predict_profile(run, *, profile_s: float | None = None, profile_pct: float | None = None,
                    profile_epochs: int | None = None, reference: str | None = None,
                    candidates=(), timings=None) -> Prediction:
    """Predict the whole work's energy from its first ``profile_s`` seconds (or ``profile_pct``
    % of it, or ``profile_epochs`` epochs); see the module docstring."""
    given = [x for x in (profile_s, profile_pct, profile_epochs) if x is not None]
    if len(given) != 1:
        raise AnalysisInputError("give one of --profile-s N, --profile-pct P or --profile-epochs K")
    base = epoch_energy(run, reference=reference, candidates=candidates, timings=timings)
    work = _work(base.intervals)
    step = "epoch" if work.kind == "train" else "infer_pass"
    steps = sorted((iv for iv in base.intervals if iv.kind == step), key=lambda iv: iv.index)
    notes = list(base.notes)
    start = work.start_s
    if profile_epochs is not None:
        if profile_epochs < 1:
            raise AnalysisInputError(f"--profile-epochs {profile_epochs}: must be at least 1")
        if profile_epochs >= len(steps):
            raise AnalysisInputError(f"--profile-epochs {profile_epochs}: the run has {len(steps)} "
                                     f"{'epochs' if step == 'epoch' else 'passes'}; the profile must be shorter")
        stop = steps[profile_epochs].start_s  # the next epoch's start: epoch K's evaluation included
        method = "energy_per_epoch_x_epochs"
    else:
        if profile_pct is not None:
            if not 0 < profile_pct < 100:
                raise AnalysisInputError(f"--profile-pct {profile_pct}: expected a share between 0 and 100")
            profile_s = work.duration_s * profile_pct / 100.0
        if not profile_s > 0:
            raise AnalysisInputError(f"--profile-s {profile_s}: must be > 0")
        if profile_s >= work.duration_s:
            raise AnalysisInputError(f"--profile-s {profile_s:g}: the work lasts {work.duration_s:.1f} s; "
                                     "the profile must be shorter")
        stop = start + profile_s
        method = "power_x_duration"
    streams = [s for s in base.streams if s != SOFTWARE_TOTAL]
    needed = streams + [m for m in base.members if m not in streams]
    energies, _ = energy_over(run, needed, [(start, stop), (work.start_s, work.stop_s)], timings)
    if base.members:
        energies[SOFTWARE_TOTAL] = np.sum([energies[m] for m in base.members], axis=0)
        streams.append(SOFTWARE_TOTAL)
    truth = float(energies[base.reference][1])
    rows = []
    for s in streams:
        prof, full = float(energies[s][0]), float(energies[s][1])
        if method == "power_x_duration":
            pred = prof / (stop - start) * work.duration_s
        else:
            pred = prof / profile_epochs * len(steps)
        rows.append(StreamPrediction(s, prof, pred, full, truth))
    return Prediction(str(run.path), base.reference, method, work, start, stop, profile_epochs, len(steps),
                      rows, notes)


def _f(x: float, fmt: str) -> str:
    return "-" if x is None or not np.isfinite(x) else format(x, fmt)


def format_prediction(p: Prediction) -> str:
    unit = "epochs" if p.work.kind == "train" else "passes"
    what = (f"first {p.profile_epochs} of {p.epochs} {unit}" if p.profile_epochs is not None
            else f"first {p.profile_s:.2f} s")
    lines = [f"work: {p.work.name} interval, {p.work.duration_s:.2f} s, {p.epochs} {unit}; profile: {what} "
             f"({100 * p.profile_share:.1f} % of the time)",
             f"method: {METHODS[p.method]}",
             f"truth: {p.reference} over the whole work; error = (predicted - truth) / truth; "
             "extrapolation = (predicted - the meter's own whole-work energy) / that", ""]
    head = (f"{'stream':<22} {'profile J':>11} {'predicted J':>12} {'own full J':>11} {'truth J':>11} "
            f"{'error %':>8} {'extrap. %':>10}")
    lines += [head, "-" * len(head)]
    for r in p.streams:
        lines.append(f"{r.stream:<22} {_f(r.profile_j, '.1f'):>11} {_f(r.predicted_j, '.1f'):>12} "
                     f"{_f(r.own_full_j, '.1f'):>11} {_f(r.truth_j, '.1f'):>11} {_f(r.error_pct, '+.2f'):>8} "
                     f"{_f(r.extrapolation_error_pct, '+.2f'):>10}")
    lines += [f"note: {n}" for n in p.notes]
    return "\n".join(lines)


def to_json(p: Prediction) -> dict[str, Any]:
    from hwval.analysis.output import plain

    return plain({"run": p.run_path, "reference": p.reference, "method": p.method, "method_text": METHODS[p.method],
                  "work": {"name": p.work.name, "start_s": p.work.start_s, "stop_s": p.work.stop_s,
                           "duration_s": p.work.duration_s},
                  "profile": {"start_s": p.profile_start_s, "stop_s": p.profile_stop_s, "seconds": p.profile_s,
                              "share": p.profile_share, "epochs": p.profile_epochs},
                  "epochs": p.epochs,
                  "streams": [{"stream": r.stream, "profile_j": r.profile_j, "predicted_j": r.predicted_j,
                               "own_full_j": r.own_full_j, "truth_j": r.truth_j, "error_pct": r.error_pct,
                               "extrapolation_error_pct": r.extrapolation_error_pct} for r in p.streams],
                  "notes": p.notes})
