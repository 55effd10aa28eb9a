"""`hwval sweep`: the search space, the three strategies (grid covers the grid, random and bayes
propose distinct trials, bayes follows the history it is told), the summaries, and one real
trial under a capture with the synthetic driver."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from hwval.cli import cli
from hwval.runfile import open_run
from hwval.workloads import sweep as sw


def test_space_parsing_and_its_errors():
    space = sw.parse_space()
    assert [p.name for p in space] == ["lr", "width", "arch"]
    lr, width, arch = space
    assert lr.kind == "log" and (lr.low, lr.high) == (0.01, 0.1) and lr.grid(3) == [0.01, 0.0316228, 0.1]
    assert width.values == (8, 16) and arch.values == ("vgg", "resnet")
    assert sw.parse_param("batch-size=16..64").grid(3) == [16, 40, 64]
    for spec, text in (("colour=red", "cannot be searched"), ("lr=log:0..1", "LO > 0"), ("lr=0.2..0.1", "LO < HI"),
                       ("arch=vgg,alexnet", "must be one of"), ("width=8,x", "not a valid --width"),
                       ("arch=log:1..2", "not a number"), ("lr", "expected NAME=")):
        with pytest.raises(sw.SweepError, match=text):
            sw.parse_param(spec)
    with pytest.raises(sw.SweepError, match="more than once"):
        sw.parse_space(["width=8", "width=16"])


def drain(strategy, objective=lambda p: 0.5):
    asked = []
    while (p := strategy.ask()) is not None:
        asked.append(p)
        strategy.tell(p, objective(p))
    return asked


def test_grid_covers_the_grid():
    space = sw.parse_space()
    full = drain(sw.GridStrategy(space, 100, 0))
    expected = [dict(zip(["lr", "width", "arch"], c))
                for c in itertools.product([0.01, 0.0316228, 0.1], [8, 16], ["vgg", "resnet"])]
    assert full == expected
    g = sw.GridStrategy(space, 100, 0)
    assert any("12 trials, not 100" in n for n in g.notes)
    part = drain(sw.GridStrategy(space, 4, 0))
    assert len({sw.key(p) for p in part}) == 4 and part[0] == expected[0] and part[-1] == expected[-1]


def test_random_proposes_distinct_trials_reproducibly():
    space = sw.parse_space()
    a, b = drain(sw.RandomStrategy(space, 6, 7)), drain(sw.RandomStrategy(space, 6, 7))
    assert a == b and len({sw.key(p) for p in a}) == 6
    assert all(0.01 <= p["lr"] <= 0.1 and p["width"] in (8, 16) for p in a)
    small = sw.RandomStrategy(sw.parse_space(["width=8,16"]), 5, 0)
    assert len(drain(small)) == 2 and any("ran out" in n for n in small.notes)


def test_bayes_proposes_distinct_trials_from_the_history():
    pytest.importorskip("optuna")
    space = sw.parse_space(["lr=log:0.001..1.0"])
    # the same seed, opposite objectives: the start-up draws agree, the proposals after them follow
    # what was told (small lr rewarded in one study, large lr in the other)
    small = sw.BayesStrategy(space, 12, 3)
    large = sw.BayesStrategy(space, 12, 3)
    a = drain(small, lambda p: -math.log(p["lr"]))
    b = drain(large, lambda p: math.log(p["lr"]))
    assert len(a) == len(b) == 12 and len({sw.key(p) for p in a}) == 12
    k = small.startup
    assert a[:k] == b[:k]
    after_a = np.mean([math.log(p["lr"]) for p in a[k:]])
    after_b = np.mean([math.log(p["lr"]) for p in b[k:]])
    assert after_a < after_b - 1.0
    # a space of two points: two trials, then the repeats stop it
    tiny = sw.BayesStrategy(sw.parse_space(["width=8,16"]), 5, 0)
    assert len(drain(tiny)) == 2 and any("known points" in n for n in tiny.notes)


def test_bayes_without_optuna_says_how_to_install(monkeypatch):
    import builtins
    real = builtins.__import__

    def no_optuna(name, *args, **kwargs):
        if name == "optuna":
            raise ImportError("No module named 'optuna'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_optuna)
    with pytest.raises(sw.SweepError, match="pip install optuna"):
        sw.make_strategy("bayes", sw.parse_space(), 3, 0)


def test_run_sweep_and_the_summary():
    space = sw.parse_space(["width=8,16,32"])
    strategies = [sw.make_strategy("grid", space, 3, 0), sw.make_strategy("random", space, 2, 0)]
    energy = {8: 100.0, 16: 200.0, 32: 400.0}

    def run_trial(spec):
        w = spec.params["width"]
        return sw.TrialResult(spec, 0, w / 100, reference="wall",
                              energy_j={"wall": energy[w], "rapl": 0.5 * energy[w]})

    results = sw.run_sweep(strategies, run_trial)
    assert [r.spec.label for r in results] == ["grid_001", "grid_002", "grid_003", "random_001", "random_002"]
    summary = {s["strategy"]: s for s in sw.strategy_summary(results)}
    g = summary["grid"]
    assert g["trials"] == 3 and g["best_objective"] == 0.32 and g["best_trial"] == "grid_003"
    assert g["energy_j"] == {"wall": 700.0, "rapl": 350.0} and g["error_pct"]["rapl"] == pytest.approx(-50.0)
    assert g["energy_to_best_j"] == 700.0
    text = sw.format_results(results)
    assert "grid_003" in text and "per strategy" in text and "-50.0" in text


def test_one_trial_under_a_real_capture(tmp_path):
    out = tmp_path / "sweep"
    r = CliRunner().invoke(cli, [
        "sweep", "-m", "synthetic:constant:100?name=bench&period_s=0.05", "--reference", "bench", "--no-nvml",
        "--no-rapl", "--strategy", "grid", "--trials", "1", "--space", "width=4", "--space", "lr=0.02",
        "--epochs", "1", "-o", str(out), "--", "--train-samples", "64", "--eval-samples", "32",
        "--batch-size", "32", "--threads", "1"], catch_exceptions=False)
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "grid_001" in r.stdout and "per strategy" in r.stdout
    doc = json.loads((out / "sweep.json").read_text())
    trial = doc["trials"][0]
    with open_run(out / "grid_001.h5") as run:
        marks = {e.detail["mark"]: e.detail for e in run.events if e.name == "mark"}
        assert json.loads(run.stream_reader("bench").attrs.get("error_counts") or "{}") == {}
    start = marks["trial_start"]
    assert (start["trial"], start["strategy"], start["params"]) == (1, "grid", {"width": 4, "lr": 0.02})
    assert marks["train_start"]["width"] == 4 and marks["train_start"]["lr"] == 0.02
    assert trial["objective"] == marks["train_end"]["eval_accuracy"] == marks["trial_end"]["objective"]
    # the synthetic meter's true power is a constant 100 W: the workload's energy is 100 W x its duration
    # (within half a second of readings at the window's two edges: a loaded machine delays the
    # 0.05 s readings there; 0.17 s was seen at load 10)
    assert trial["energy_j"]["bench"] == pytest.approx(100.0 * trial["duration_s"], abs=100.0 * 0.5)
    assert (out / "grid_001.log").read_text().startswith("epoch 1/1")


@pytest.mark.parametrize("args, message", [
    (["--space", "colour=red", "-m", "synthetic:constant:100"], "--space 'colour=red': 'colour' cannot be searched"),
    (["-m", "synthetic:constant:100", "--", "--epochs", "3"],
     "--epochs after --: the sweep sets it for every trial (use --epochs of the sweep)"),
    (["--space", "width=8,16", "-m", "synthetic:constant:100", "--", "--width", "4"],
     "--width after --: it is searched by --space; give it there or drop it from the space"),
    (["--no-nvml", "--no-rapl"], "no hardware meter: give -m SPEC or -c lab.toml"),
])
def test_bad_sweep_command_lines_are_one_line_errors(tmp_path, args, message):
    r = CliRunner().invoke(cli, ["sweep", "-o", str(tmp_path / "s"), *args])
    assert r.exit_code == 2, r.stdout + r.stderr
    assert r.stderr.startswith(f"hwval: error: {message}") and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "s" / "sweep.json").exists()
