"""`hwval predict`: profile-based prediction arithmetic on a known power profile, the model-size
law fitted on runs built to follow it, and the fitted model judged by `hwval validate` as a meter."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hwval.analysis import predict as pr
from hwval.analysis import size_model as sm
from hwval.cli import cli
from hwval.runfile import open_run
from study_runs import Timeline, write_study_run

TL = Timeline()  # train 6..42 s: epochs of 10 s, evaluations of 2 s; idle 2..6 and 42..46


def step_w(t):
    """100 W for the first 12 s of the training, 200 W after (50 W outside it)."""
    t = np.asarray(t, dtype=float)
    return np.where((t >= 6.0) & (t < 42.0), np.where(t < 18.0, 100.0, 200.0), 50.0)


def invoke(*args):
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture(scope="module")
def step_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("predict") / "step.h5"
    write_study_run(path, step_w, TL, rapl_share=0.4)
    return path


@pytest.mark.parametrize("how, expected_j, share", [
    ({"profile_s": 9.0}, 100.0 * 36, 9 / 36),                      # 100 W x 36 s
    ({"profile_pct": 50.0}, (1200 + 6 * 200) / 18 * 36, 0.5),     # 2400 J in 18 s
    ({"profile_epochs": 1}, 1200.0 * 3, 12 / 36),                  # epoch 1 with its eval: 6..18 s
    ({"profile_epochs": 2}, (1200 + 2400) / 2 * 3, 24 / 36),
])
def test_profile_prediction_arithmetic(step_run, how, expected_j, share):
    truth = 12 * 100 + 24 * 200.0
    with open_run(step_run) as run:
        p = pr.predict_profile(run, **how)
    rows = {r.stream: r for r in p.streams}
    assert p.work.duration_s == 36.0 and p.profile_share == pytest.approx(share)
    assert rows["wall"].truth_j == pytest.approx(truth, rel=1e-3)
    assert rows["wall"].predicted_j == pytest.approx(expected_j, rel=1e-3)
    assert rows["wall"].error_pct == pytest.approx(100 * (expected_j - truth) / truth, abs=0.1)
    # RAPL sees 40 %: its prediction is off by its meter error and the extrapolation error together
    assert rows["rapl_package_0"].predicted_j == pytest.approx(0.4 * expected_j, rel=1e-3)
    assert rows["rapl_package_0"].error_pct == pytest.approx(100 * (0.4 * expected_j - truth) / truth, abs=0.1)
    assert rows["rapl_package_0"].extrapolation_error_pct == pytest.approx(rows["wall"].error_pct, abs=0.1)
    assert p.method == ("energy_per_epoch_x_epochs" if "profile_epochs" in how else "power_x_duration")


def test_predict_command_and_its_errors(step_run):
    code, out, err = invoke("predict", str(step_run), "--profile-s", "9")
    assert code == 0, err
    assert "mean power of the profile x the work's duration" in out and "-40.00" in out
    code, out, _ = invoke("predict", str(step_run), "--profile-epochs", "2", "--json")
    doc = json.loads(out)
    assert doc["method"] == "energy_per_epoch_x_epochs" and doc["streams"][0]["error_pct"] == pytest.approx(-10, abs=0.1)
    for args, text in ((["--profile-epochs", "3"], "the run has 3 epochs"), (["--profile-s", "40"], "lasts 36.0 s"),
                       (["--profile-s", "5", "--profile-epochs", "1"], "give one of"),
                       (["--profile-pct", "120"], "between 0 and 100"), ([], "give one of")):
        code, _, err = invoke("predict", str(step_run), *args)
        assert code == 2 and text in err, (args, err)


A_J, B_J = 500.0, 2e-6  # the law the runs are built to follow: E = a + b * macs * (3 n_train + n_eval)


def build_size_runs(folder, sizes):
    """Runs whose training energy follows the law exactly (constant power over the training,
    50 W outside it, read at 1 kHz so the steps at its ends cost next to nothing); per epoch 100 training and 60 evaluation samples, so the law's power is
    the same in every epoch and evaluation (3 x 100 / 10 s = 60 / 2 s)."""
    paths = []
    for k, macs in enumerate(sizes):
        work = macs * (3 * 300 + 180)
        level = (A_J + B_J * work) / TL.train_s

        def power(t, level=level):
            t = np.asarray(t, dtype=float)
            return np.where((t >= 6.0) & (t < 42.0), level, 50.0)

        path = folder / f"run{k}.h5"
        write_study_run(path, power, TL, arch="vgg" if k % 2 else "resnet", macs=macs, params=macs // 100,
                        train_samples=100, eval_samples=60, wall_period_s=0.001)
        paths.append(path)
    return paths


def test_size_model_fit_recovers_the_law(tmp_path):
    paths = build_size_runs(tmp_path, [2_000_000, 9_000_000, 26_000_000, 40_000_000])
    runs = []
    for p in paths:
        with open_run(p) as run:
            runs.append(sm.run_size(run))
    assert runs[0].train_samples == 300 and runs[0].eval_samples == 180
    model = sm.fit(runs, "macs")
    assert model.intercept_j == pytest.approx(A_J, rel=2e-3)
    assert model.j_per_unit == pytest.approx(B_J, rel=1e-3)
    assert model.r2 == pytest.approx(1.0, abs=1e-6) and model.idle_w == pytest.approx(50.0, rel=1e-3)
    assert all(abs(r["residual_pct"]) < 0.1 for r in model.runs)
    # fewer than 3 runs: through the origin, and the note says so
    two = sm.fit(runs[:2], "macs")
    assert two.intercept_j == 0.0 and any("through the origin" in n for n in two.notes)
    # the TOML file round-trips
    out = tmp_path / "size_model.toml"
    out.write_text(model.to_toml())
    back = sm.SizeModel.load(out)
    assert (back.feature, back.intercept_j, back.j_per_unit, back.idle_w) == \
        (model.feature, model.intercept_j, model.j_per_unit, model.idle_w)
    bad = tmp_path / "bad.toml"
    bad.write_text('format = "something-else"\n')
    with pytest.raises(sm.AnalysisInputError, match="not a size model"):
        sm.SizeModel.load(bad)


def test_size_model_as_a_meter_passes_validate(tmp_path):
    paths = build_size_runs(tmp_path, [2_000_000, 9_000_000, 26_000_000])
    model_file = tmp_path / "size_model.toml"
    code, out, err = invoke("predict", "--fit-size", *map(str, paths), "-o", str(model_file))
    assert code == 0, err
    assert "r2 = 1.0000" in out and model_file.exists()
    (tmp_path / "new").mkdir()
    new = build_size_runs(tmp_path / "new", [15_000_000])
    meter = tmp_path / "size.jsonl"
    code, out, err = invoke("predict", str(new[0]), "--size-model", str(model_file), "--meter-out", str(meter))
    assert code == 0, err
    assert "(+0.0" in out or "(-0.0" in out
    rows = [json.loads(line) for line in meter.read_text().splitlines()]
    assert set(rows[0]) == {"timestamp", "energy_j"} and rows[0]["energy_j"] == 0.0
    assert all(b["energy_j"] >= a["energy_j"] for a, b in zip(rows, rows[1:]))
    code, out, err = invoke("validate", str(new[0]), "--candidate", str(meter), "--max-energy-error-pct", "1",
                            "--json")
    verdict = json.loads(out)
    assert code == 0 and verdict["verdict"] == "pass", out + err
    assert abs(verdict["metrics"]["energy_error_pct"]) < 0.5
    # a wrong law fails the same check: a model at twice the slope
    import tomllib
    data = tomllib.loads(model_file.read_text())
    doc = model_file.read_text().replace(f"j_per_unit = {data['j_per_unit']!r}", f"j_per_unit = {2 * data['j_per_unit']!r}")
    model_file.write_text(doc)
    code, out, err = invoke("predict", str(new[0]), "--size-model", str(model_file), "--meter-out", str(meter),
                            "--force")
    assert code == 0, err
    code, out, _ = invoke("validate", str(new[0]), "--candidate", str(meter), "--max-energy-error-pct", "1")
    assert code == 1 and "FAIL" in out


def test_size_model_fit_refuses_runs_without_work():
    runs = [sm.RunSize(f"r{i}.h5", str(i), "vgg", 1000.0, 5000.0, 0, 0, 10.0 * (i + 1), 50.0, "wall")
            for i in range(3)]
    with pytest.raises(sm.AnalysisInputError, match="every run has zero macs x samples"):
        sm.fit(runs, "macs")
    # a run whose hardware energy is 0 J gets no residual (not a ZeroDivisionError)
    runs = [sm.RunSize("a.h5", "a", "vgg", 1.0, 2.0, 10, 0, 0.0, 50.0, "wall"),
            sm.RunSize("b.h5", "b", "vgg", 1.0, 2.0, 20, 0, 120.0, 50.0, "wall")]
    model = sm.fit(runs, "macs")
    assert np.isnan(model.runs[0]["residual_pct"]) and np.isfinite(model.runs[1]["residual_pct"])
