"""The MLPerf meter-qualification test (MLPerf Training power rules, "Target 5% Accuracy").

MLCommons' training power rules (training_policies, power_measurement.adoc) accept a power meter
as x % accurate at 1 Hz if, measuring the same system at 1 Hz under different load conditions
(idle and two different benchmarks), the Olympic scores of the two meters over five
non-overlapping one-minute windows are within x % of each other. The rules target 5 %.

How hwval applies it (the rules leave the details to the submitter; these are hwval's choices):

- **Conditions** are marked by the workload: ``hwval.mark("condition", condition="idle")``, then
  ``hwval.mark("condition", condition="resnet")`` and so on. A condition runs from its mark to the
  next ``condition`` mark, the last one to ``workload_end``. A condition whose name starts with
  ``idle`` is an idle condition; when no condition is idle, the run's idle phase before
  ``workload_start`` (see :mod:`hwval.analysis.phases`) is used. At least one idle and two
  workload conditions are needed.
- **Windows**: five one-minute windows per condition, spread evenly from its start to its end
  (so they do not overlap whenever the condition lasts at least five minutes; a shorter one
  makes the input unusable).
- **Score**: each meter's mean power (1 s bins) in each window; the Olympic score of a meter
  drops its highest and lowest window and averages the other three; the condition passes when
  ``|score_cand - score_ref| / score_ref <= x %``. The meter qualifies when every condition
  passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hwval.runfile.schema import EventName

WINDOW_S = 60.0
N_WINDOWS = 5
DEFAULT_TOLERANCE_PCT = 5.0
BIN_S = 1.0  # the rules' 1 Hz


class ProtocolInputError(Exception):
    """The run does not hold what the protocol needs; the message says what is missing."""


@dataclass(frozen=True)
class Condition:
    name: str
    start_s: float
    stop_s: float
    idle: bool


@dataclass
class ConditionScore:
    condition: Condition
    windows_s: list[tuple[float, float]]
    ref_w: list[float]
    cand_w: list[float]
    ref_score_w: float
    cand_score_w: float
    error_pct: float
    passed: bool
    notes: list[str] = field(default_factory=list)


def olympic_mean(values) -> float:
    """Mean after dropping one highest and one lowest value.

    Examples
    --------
    >>> olympic_mean([10.0, 1.0, 5.0, 6.0, 7.0])
    6.0
    """
    v = np.sort(np.asarray(values, dtype=float))
    if len(v) < 3:
        raise ValueError(f"Olympic scoring needs at least 3 values, got {len(v)}")
    return float(np.mean(v[1:-1]))


def conditions_from_events(events: list, idle_phase: tuple[float, float] | None,
                           workload_end_s: float) -> list[Condition]:
    marks = [e for e in events if e.name == EventName.MARK and e.detail.get("mark") == "condition"]
    out = []
    for i, m in enumerate(marks):
        stop = marks[i + 1].t if i + 1 < len(marks) else workload_end_s
        name = str(m.detail.get("condition") or f"condition_{i + 1}")
        if name.lower() == "end":
            continue
        out.append(Condition(name, m.t, stop, name.lower().startswith("idle")))
    if not any(c.idle for c in out) and idle_phase is not None:
        out.insert(0, Condition("idle", idle_phase[0], idle_phase[1], True))
    n_idle = sum(c.idle for c in out)
    n_load = len(out) - n_idle
    if n_idle < 1 or n_load < 2:
        raise ProtocolInputError(
            f"the MLPerf protocol needs an idle condition and two workload conditions; found {n_idle} "
            f"idle and {n_load} workload: mark them in the workload with hwval.mark('condition', "
            "condition='idle'), hwval.mark('condition', condition='<benchmark>'), ...")
    return out


def windows(condition: Condition) -> list[tuple[float, float]]:
    span = condition.stop_s - condition.start_s
    if span < N_WINDOWS * WINDOW_S:
        raise ProtocolInputError(
            f"condition {condition.name!r} lasts {span:.0f} s; the MLPerf protocol needs "
            f"{N_WINDOWS} non-overlapping {WINDOW_S:.0f} s windows ({N_WINDOWS * WINDOW_S:.0f} s)")
    step = (span - WINDOW_S) / (N_WINDOWS - 1)
    return [(condition.start_s + i * step, condition.start_s + i * step + WINDOW_S) for i in range(N_WINDOWS)]


def score_condition(condition: Condition, t_s: np.ndarray, ref_w: np.ndarray, cand_w: np.ndarray,
                    tolerance_pct: float) -> ConditionScore:
    """Score one condition from 1 s bins (bin centres ``t_s``) of both meters."""
    wins = windows(condition)
    ref_means, cand_means, notes = [], [], []
    for a, b in wins:
        inside = (t_s >= a) & (t_s < b)
        ok = inside & np.isfinite(ref_w) & np.isfinite(cand_w)
        if np.count_nonzero(ok) < 0.9 * np.count_nonzero(inside) or not np.any(ok):
            raise ProtocolInputError(f"condition {condition.name!r}: window {a:.0f}-{b:.0f} s has gaps "
                                     "(more than 10 % of its bins missing)")
        ref_means.append(float(np.mean(ref_w[ok])))
        cand_means.append(float(np.mean(cand_w[ok])))
    ref_score, cand_score = olympic_mean(ref_means), olympic_mean(cand_means)
    error = 100.0 * (cand_score - ref_score) / ref_score if ref_score else np.nan
    return ConditionScore(condition, wins, ref_means, cand_means, ref_score, cand_score, error,
                          bool(np.isfinite(error) and abs(error) <= tolerance_pct), notes)
