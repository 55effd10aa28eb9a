"""A small hyperparameter search over the training workload, every trial its own capture.

Search space (``--space NAME=SPEC``, repeatable; NAME is a training option such as ``lr``,
``width``, ``depth``, ``arch``, ``batch-size``, ``optimizer``, ``weight-decay``):

- ``NAME=a,b,c``: a choice among values (typed like the option: ``arch=vgg,resnet``, ``width=8,16``);
- ``NAME=log:LO..HI``: a number drawn log-uniformly (``lr=log:0.005..0.2``);
- ``NAME=LO..HI``: a number drawn uniformly (an integer option: an integer in LO..HI).

Strategies:

- ``grid``: every combination, ranges taken at ``grid_points`` points (geometric for ``log:``,
  even otherwise); with fewer trials than grid points, evenly spaced points of the grid (in grid
  order), so the trials still span it.
- ``random``: independent draws (seeded), distinct trials only.
- ``bayes``: optuna's TPE sampler (seeded; the first ``max(2, trials // 3)`` trials are its
  random start-up, the rest are proposed from the history of objectives told so far). A
  duplicate proposal is told its earlier result without a new run, and asked again.

The objective is the final held-out accuracy (``train_end``'s ``eval_accuracy``; maximised).
Each trial runs ``python -m hwval.workloads.sweep --trial K --strategy S --params JSON [--log
FILE] [train options]``, which marks ``trial_start`` [trial, strategy, params] and ``trial_end`` [trial,
strategy, params, status, objective] around the workload's own marks. This module knows nothing
of capture or analysis: :func:`run_sweep` gets a ``run_trial`` function (the command's, which
captures and measures) and returns the trials.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from hwval.workloads.options import OPTIONS, WorkloadError

STRATEGIES = ("grid", "random", "bayes")
DEFAULT_SPACE = ("lr=log:0.01..0.1", "width=8,16", "arch=vgg,resnet")
#: Training options a sweep may vary (the rest are the sweep's own or the trial's files).
SEARCHABLE = ("arch", "width", "depth", "batch_size", "lr", "optimizer", "weight_decay", "seed")
OPTUNA_MISSING = ("--strategy bayes needs optuna: pip install optuna (or pip install -e '.[workloads]')")
#: Draws (random) or proposals (bayes) in a row that may repeat known points before the space
#: counts as exhausted.
MAX_DRAWS = 200
MAX_BAYES_REPEATS = 30


class SweepError(ValueError):
    """Bad space, strategy or trial count: one line for the operator."""


@dataclass(frozen=True)
class Param:
    name: str               # option dest: "lr", "batch_size"
    kind: str               # "choice" | "log" | "uniform"
    values: tuple = ()      # choice
    low: float = math.nan
    high: float = math.nan
    integer: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def grid(self, points: int) -> list:
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "log":
            vals = np.geomspace(self.low, self.high, points)
        else:
            vals = np.linspace(self.low, self.high, points)
        if self.integer:
            return sorted({int(round(v)) for v in vals})
        return [float(f"{v:.6g}") for v in vals]


def parse_param(spec: str) -> Param:
    """One ``NAME=SPEC`` (module docstring)."""
    name, sep, body = spec.partition("=")
    dest = name.strip().lstrip("-").replace("-", "_")
    if not sep or not body.strip():
        raise SweepError(f"--space {spec!r}: expected NAME=a,b,c or NAME=log:LO..HI or NAME=LO..HI")
    by_dest = {o.dest: o for o in OPTIONS}
    if dest not in SEARCHABLE:
        raise SweepError(f"--space {spec!r}: {name!r} cannot be searched (searchable: "
                         f"{', '.join(s.replace('_', '-') for s in SEARCHABLE)})")
    opt = by_dest[dest]
    body = body.strip()
    kind = "uniform"
    if body.startswith("log:"):
        kind, body = "log", body[4:]
    if ".." in body:
        if opt.type not in (int, float):
            raise SweepError(f"--space {spec!r}: {opt.flag} is not a number; give a list of values")
        lo_text, _, hi_text = body.partition("..")
        try:
            lo, hi = float(lo_text), float(hi_text)
        except ValueError:
            raise SweepError(f"--space {spec!r}: LO..HI must be numbers") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise SweepError(f"--space {spec!r}: need LO < HI")
        if kind == "log" and lo <= 0:
            raise SweepError(f"--space {spec!r}: a log range needs LO > 0")
        if opt.minimum is not None and lo < opt.minimum:
            raise SweepError(f"--space {spec!r}: {opt.flag} must be at least {opt.minimum:g}")
        return Param(dest, kind, low=lo, high=hi, integer=opt.type is int)
    if kind == "log":
        raise SweepError(f"--space {spec!r}: log: needs a range LO..HI")
    values = []
    for text in body.split(","):
        text = text.strip()
        try:
            value = opt.type(text)
        except ValueError:
            raise SweepError(f"--space {spec!r}: {text!r} is not a valid {opt.flag} value") from None
        if opt.choices and value not in opt.choices:
            raise SweepError(f"--space {spec!r}: {opt.flag} must be one of {', '.join(opt.choices)}")
        if opt.minimum is not None and value < opt.minimum:
            raise SweepError(f"--space {spec!r}: {opt.flag} must be at least {opt.minimum:g} (got {value})")
        if value not in values:
            values.append(value)
    return Param(dest, "choice", tuple(values))


def parse_space(specs: Sequence[str] = ()) -> list[Param]:
    params = [parse_param(s) for s in (specs or DEFAULT_SPACE)]
    names = [p.name for p in params]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SweepError(f"--space names {', '.join(dupes)} more than once")
    return params


def key(params: dict[str, Any]) -> str:
    """A canonical text of a trial's parameters (floats to 6 significant digits): equal keys are the same trial."""
    return json.dumps({k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in sorted(params.items())})


class Strategy:
    name = ""

    def __init__(self, space: list[Param], trials: int, seed: int) -> None:
        if trials < 1:
            raise SweepError(f"--trials {trials}: must be at least 1")
        self.space, self.trials, self.seed = space, trials, seed
        self.history: list[tuple[dict[str, Any], float | None]] = []
        self.notes: list[str] = []

    def ask(self) -> dict[str, Any] | None:
        """The next distinct trial's parameters, or None when done (or the space is exhausted)."""
        raise NotImplementedError

    def tell(self, params: dict[str, Any], objective: float | None) -> None:
        """The result of a trial asked for (None: the trial failed)."""
        self.history.append((params, objective))


class GridStrategy(Strategy):
    name = "grid"

    def __init__(self, space, trials, seed, grid_points: int = 3) -> None:
        super().__init__(space, trials, seed)
        axes = [p.grid(grid_points) for p in space]
        full = [dict(zip([p.name for p in space], combo)) for combo in itertools.product(*axes)]
        if trials < len(full):
            picks = np.unique(np.round(np.linspace(0, len(full) - 1, trials)).astype(int))
            self.notes.append(f"grid of {len(full)} points, {trials} trials: evenly spaced points of it")
            self.points = [full[i] for i in picks]
        else:
            if trials > len(full):
                self.notes.append(f"grid of {len(full)} points: {len(full)} trials, not {trials}")
            self.points = full
        self._next = 0

    def ask(self):
        if self._next >= len(self.points):
            return None
        self._next += 1
        return dict(self.points[self._next - 1])


def _draw(p: Param, rng: np.random.Generator):
    if p.kind == "choice":
        return p.values[int(rng.integers(len(p.values)))]
    if p.integer:
        return int(rng.integers(int(math.ceil(p.low)), int(math.floor(p.high)) + 1))
    if p.kind == "log":
        return float(f"{math.exp(rng.uniform(math.log(p.low), math.log(p.high))):.6g}")
    return float(f"{rng.uniform(p.low, p.high):.6g}")


class RandomStrategy(Strategy):
    name = "random"

    def __init__(self, space, trials, seed) -> None:
        super().__init__(space, trials, seed)
        self.rng = np.random.default_rng(seed)
        self.seen: set[str] = set()

    def ask(self):
        if len(self.seen) >= self.trials:
            return None
        for _ in range(MAX_DRAWS):
            params = {p.name: _draw(p, self.rng) for p in self.space}
            if key(params) not in self.seen:
                self.seen.add(key(params))
                return params
        self.notes.append(f"the space ran out of distinct points after {len(self.seen)} trials")
        return None


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise SweepError(OPTUNA_MISSING) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


class BayesStrategy(Strategy):
    name = "bayes"

    def __init__(self, space, trials, seed) -> None:
        super().__init__(space, trials, seed)
        optuna = self.optuna = import_optuna()
        self.startup = max(2, trials // 3)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.startup)
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        self.results: dict[str, float | None] = {}
        self._pending: dict[str, Any] = {}

    def _suggest(self, trial) -> dict[str, Any]:
        out = {}
        for p in self.space:
            if p.kind == "choice":
                out[p.name] = trial.suggest_categorical(p.name, list(p.values))
            elif p.integer:
                out[p.name] = trial.suggest_int(p.name, int(math.ceil(p.low)), int(math.floor(p.high)),
                                                log=p.kind == "log")
            else:
                out[p.name] = float(f"{trial.suggest_float(p.name, p.low, p.high, log=p.kind == 'log'):.6g}")
        return out

    def ask(self):
        if len(self.results) >= self.trials:
            return None
        for _ in range(MAX_BAYES_REPEATS):
            trial = self.study.ask()
            params = self._suggest(trial)
            k = key(params)
            if k in self.results:  # seen: tell its result again instead of running it twice
                self._finish(trial, self.results[k])
                continue
            self._pending[k] = trial
            return params
        self.notes.append(f"TPE kept proposing known points after {len(self.results)} trials: stopped")
        return None

    def _finish(self, trial, objective: float | None) -> None:
        if objective is None or not math.isfinite(objective):
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, objective)

    def tell(self, params, objective):
        super().tell(params, objective)
        k = key(params)
        self.results[k] = objective
        trial = self._pending.pop(k, None)
        if trial is not None:
            self._finish(trial, objective)


def make_strategy(name: str, space: list[Param], trials: int, seed: int, grid_points: int = 3) -> Strategy:
    if name == "grid":
        return GridStrategy(space, trials, seed, grid_points)
    if name == "random":
        return RandomStrategy(space, trials, seed)
    if name == "bayes":
        return BayesStrategy(space, trials, seed)
    raise SweepError(f"--strategy {name!r}: expected one of {', '.join(STRATEGIES)}")


@dataclass
class TrialSpec:
    strategy: str
    number: int                 # 1.. within its strategy
    params: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.strategy}_{self.number:03d}"

    def command(self, python: str, train_args: Sequence[str], log: str | None = None) -> list[str]:
        """The trial's command line: this module's trial runner with the params as training options."""
        return [python, "-m", "hwval.workloads.sweep", "--trial", str(self.number), "--strategy", self.strategy,
                "--params", json.dumps(self.params), *(["--log", log] if log else []), *train_args]


@dataclass
class TrialResult:
    spec: TrialSpec
    exit_code: int
    objective: float | None         # final eval accuracy; None when the trial failed
    run_path: str = ""
    reference: str = ""
    energy_j: dict[str, float] = field(default_factory=dict)   # workload interval, per stream
    train_energy_j: dict[str, float] = field(default_factory=dict)
    duration_s: float = math.nan
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["label"] = self.spec.label
        return d


def run_sweep(strategies: Sequence[Strategy], run_trial: Callable[[TrialSpec], TrialResult],
              on_result: Callable[[TrialResult], None] | None = None) -> list[TrialResult]:
    """Each strategy in turn: ask, run the trial, tell its objective, until it is done."""
    results = []
    for strategy in strategies:
        number = 0
        while (params := strategy.ask()) is not None:
            number += 1
            res = run_trial(TrialSpec(strategy.name, number, params))
            strategy.tell(params, res.objective)
            results.append(res)
            if on_result is not None:
                on_result(res)
    return results


# ---------------------------------------------------------------------- summaries


def _f(x, fmt: str) -> str:
    return "-" if x is None or not isinstance(x, (int, float)) or not math.isfinite(x) else format(x, fmt)


def _err(value: float, ref: float) -> float:
    return 100.0 * (value - ref) / ref if ref and math.isfinite(ref) else math.nan


def strategy_summary(results: Sequence[TrialResult]) -> list[dict[str, Any]]:
    """Per strategy: trials, best objective and its trial, total energy per stream (workload
    intervals summed) with each meter's error against the hardware total."""
    out = []
    for name in dict.fromkeys(r.spec.strategy for r in results):
        group = [r for r in results if r.spec.strategy == name]
        ok = [r for r in group if r.objective is not None]
        best = max(ok, key=lambda r: r.objective) if ok else None
        streams = list(dict.fromkeys(s for r in group for s in r.energy_j))
        totals = {s: float(sum(r.energy_j.get(s, math.nan) for r in group)) for s in streams}
        ref = group[0].reference
        out.append({"strategy": name, "trials": len(group), "failed": len(group) - len(ok),
                    "best_objective": best.objective if best else None, "best_trial": best.spec.label if best else None,
                    "best_params": best.spec.params if best else None, "reference": ref, "energy_j": totals,
                    "error_pct": {s: _err(v, totals.get(ref, math.nan)) for s, v in totals.items() if s != ref},
                    "energy_to_best_j": float(sum(r.energy_j.get(ref, math.nan)
                                                  for r in group[:group.index(best) + 1])) if best else None})
    return out


def format_results(results: Sequence[TrialResult]) -> str:
    streams = list(dict.fromkeys(s for r in results for s in r.energy_j))
    ref = results[0].reference if results else ""
    meters = [s for s in streams if s != ref]
    lines = [f"energy of each trial's workload (process start to exit) by {ref or 'the reference'} and each "
             "software meter; err = (meter - hardware) / hardware", ""]
    head = f"{'trial':<12} {'params':<44} {'accuracy':>8} {'s':>6} {ref + ' J':>11}"
    for m in meters:
        head += f" {m + ' J':>16} {'err %':>7}"
    lines += [head, "-" * len(head)]
    for r in results:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.spec.params.items())
        hw = r.energy_j.get(ref, math.nan)
        line = (f"{r.spec.label:<12} {params:<44} {_f(r.objective, '.3f'):>8} {_f(r.duration_s, '.1f'):>6} "
                f"{_f(hw, '.1f'):>11}")
        for m in meters:
            line += f" {_f(r.energy_j.get(m), '.1f'):>16} {_f(_err(r.energy_j.get(m, math.nan), hw), '+.1f'):>7}"
        if r.objective is None:
            line += f"  (failed: exit {r.exit_code})"
        lines.append(line)
    lines += ["", "per strategy:"]
    head = f"{'strategy':<10} {'trials':>6} {'best acc':>8} {'best trial':<12} {'energy to best J':>16} {ref + ' J':>11}"
    for m in meters:
        head += f" {m + ' J':>16} {'err %':>7}"
    lines += [head, "-" * len(head)]
    for s in strategy_summary(results):
        line = (f"{s['strategy']:<10} {s['trials']:>6} {_f(s['best_objective'], '.3f'):>8} "
                f"{s['best_trial'] or '-':<12} {_f(s['energy_to_best_j'], '.1f'):>16} "
                f"{_f(s['energy_j'].get(ref), '.1f'):>11}")
        for m in meters:
            line += f" {_f(s['energy_j'].get(m), '.1f'):>16} {_f(s['error_pct'].get(m), '+.1f'):>7}"
        lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------------- the trial runner


def trial_main(argv: Sequence[str] | None = None) -> int:
    """``python -m hwval.workloads.sweep --trial K --strategy S --params JSON [train options]``:
    mark the trial, run the training with the params applied, mark its end."""
    import hwval
    from hwval.workloads.data import DataError
    from hwval.workloads.options import config_from_options
    from hwval.workloads.train import build_parser, run

    ap = argparse.ArgumentParser(prog="python -m hwval.workloads.sweep",
                                 description="one sweep trial: the training workload between trial marks")
    ap.add_argument("--trial", type=int, required=True)
    ap.add_argument("--strategy", required=True)
    ap.add_argument("--params", required=True, help="JSON object of training options (dest names)")
    ap.add_argument("--log", default=None, help="send the trial's standard output to this file")
    ns, rest = ap.parse_known_args(argv)
    if ns.log:
        # fd-level, so the sweep's own stdout (a table, or --json) stays clean of the epochs' lines
        sys.stdout.flush()
        fd = os.open(ns.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.close(fd)
    try:
        params = json.loads(ns.params)
        if not isinstance(params, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        print(f"hwval: error: --params: expected a JSON object ({exc})", file=sys.stderr)
        return 2
    values = vars(build_parser().parse_args(rest))
    mode = values.pop("mode")
    defaults = {o.dest: o.default for o in OPTIONS}
    values = {k: (v if v is not None else defaults.get(k)) for k, v in values.items()}
    values.update(params)
    hwval.mark("trial_start", trial=ns.trial, strategy=ns.strategy, params=params)
    try:
        summary = run(config_from_options(mode, values))
    except (WorkloadError, DataError) as exc:
        hwval.mark("trial_end", trial=ns.trial, strategy=ns.strategy, params=params, status="error",
                   objective=None, error=str(exc))
        print(f"hwval: error: {exc}", file=sys.stderr)
        return 2
    objective = summary.get("eval_accuracy")
    if objective is None:  # --eval-batches 0: no held-out split to judge by
        objective = summary.get("accuracy")
    hwval.mark("trial_end", trial=ns.trial, strategy=ns.strategy, params=params, status="ok",
               objective=objective, eval_accuracy=objective, accuracy=summary.get("accuracy"))
    return 0


if __name__ == "__main__":
    sys.exit(trial_main())
