"""``hwval analyze``, ``hwval calibrate`` and ``hwval validate`` as commands, on run files with
known truth (tests/analysis_runs.py writes them through the run-file layout functions).

The commands run in-process through click's runner (an interpreter start per call would cost
more than the analysis); one check runs the real ``hwval`` process for the one-line error."""

from __future__ import annotations

import json
import tomllib

import h5py
import numpy as np
import pytest

from analysis_runs import ORIGIN_REALTIME_NS, Stream, energy_of, profile_w, write_run
from click.testing import CliRunner
from conftest import run_hwval as run_process
from hwval.cli import cli
from hwval.runfile import open_run

T_END = 130.0


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_hwval(*args: str) -> Result:
    """``hwval ARGS`` in this process; an exception (a traceback) fails the test."""
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return Result(r.exit_code, r.stdout, r.stderr)
EVENTS = [(1.0, "pulse_start", {"pattern": "barker13", "chip_s": 0.5}), (7.5, "pulse_end", {}),
          (20.0, "workload_start", {}),
          (30.0, "mark", {"mark": "epoch", "epoch": 1}), (70.0, "mark", {"mark": "epoch", "epoch": 2}),
          (120.0, "workload_end", {"exit_code": 0})]


def _node(tmp_path, emulated=True, extra=()):
    """Wall meter at 10 Hz (true power + 30 W the software does not see), RAPL package (40 %
    of the true power) and DRAM (10 %) counters at 100 Hz, the core domain (part of the package,
    25 %), and a GPU at 20 Hz reading 30 % of the true power minus 2 W."""
    t_w = np.arange(0.0, T_END, 0.1)
    t_r = np.arange(0.0, T_END, 0.01)
    t_g = np.arange(0.0, T_END, 0.05)
    e = energy_of(t_r)
    streams = [
        Stream("wall", "hardware", t_w, power_w=profile_w(t_w) + 30.0, driver="wt300", period_s=0.1,
               identity={"manufacturer": "YOKOGAWA", "model": "WT310", "serial": "C2PH1"}, emulated=emulated),
        Stream("rapl_package_0", "software", t_r, energy_j=0.4 * e, driver="rapl", scope="cpu_package",
               identity={"zone": "intel-rapl:0", "domain": "package-0", "part_of": None}, emulated=emulated),
        Stream("rapl_dram_0", "software", t_r, energy_j=0.1 * e, driver="rapl", scope="dram",
               identity={"zone": "intel-rapl:0:0", "domain": "dram", "part_of": None}, emulated=emulated),
        Stream("rapl_core_0", "software", t_r, energy_j=0.25 * e, driver="rapl", scope="core",
               identity={"zone": "intel-rapl:0:1", "domain": "core", "part_of": "rapl_package_0"}, emulated=emulated),
        Stream("nvml_gpu0", "software", t_g, power_w=0.3 * profile_w(t_g) - 2.0, driver="nvml", scope="gpu",
               identity={"uuid": "GPU-test-0", "name": "A100"}, emulated=emulated),
        *extra,
    ]
    path = tmp_path / "run.h5"
    write_run(path, streams, EVENTS)
    return path


def test_analyze_writes_every_comparison_with_phases(tmp_path):
    path = _node(tmp_path)
    # only the GPU meter is emulated: its row and software_total (which sums it) are marked
    with h5py.File(path, "r+") as f:
        for name in ("wall", "rapl_package_0", "rapl_dram_0", "rapl_core_0"):
            f["streams"][name].attrs["emulated"] = False
    res = run_hwval("analyze", str(path), "--resamples", "200")
    assert res.returncode == 0, res.stderr
    emu = {line.split()[0]: line.split()[1] for line in res.stdout.splitlines()
           if not line.startswith(" ") and line.split()  # the main table, not the indented phases
           and line.split()[0] in ("rapl_package_0", "nvml_gpu0", "software_total")}
    assert emu == {"rapl_package_0": "-", "nvml_gpu0": "yes", "software_total": "yes"}
    assert "EMULATED meters: nvml_gpu0 (protocol emulators" in res.stdout
    assert res.stdout.startswith("reference: wall   window")  # a real reference is not marked
    assert "NOT SYNCHRONISED" in res.stdout and "hwval sync" in res.stdout
    assert "software_total" in res.stdout and "unmetered power" in res.stdout
    with open_run(path) as run:
        entries = run.read_derived("analysis")
    assert set(entries) == {f"{c}__vs__wall" for c in ("rapl_package_0", "rapl_dram_0", "rapl_core_0",
                                                        "nvml_gpu0", "software_total")}
    pkg = entries["rapl_package_0__vs__wall"]
    for key in ("window_s", "n_bins", "bias_w", "bias_pct", "energy_ref_j", "energy_cand_j", "energy_error_pct",
                "pearson_r", "spearman_rho", "ccc", "mae_w", "rmse_w", "mape_pct", "loa_low_w", "loa_high_w",
                "slope", "intercept", "r2", "bias_w_ci", "ccc_ci", "slope_ci", "bootstrap_seed",
                "bootstrap_block_bins"):
        assert key in pkg.attrs, key
    assert pkg.attrs["synchronised"] is False or pkg.attrs["synchronised"] == 0
    assert pkg.attrs["n_bins"] == 100 and len(pkg.datasets["t"]) == 100
    assert set(pkg.datasets) == {"t", "ref_w", "cand_w"}
    # known truth over the workload: the package reads 40 % of true power, the wall true + 30 W
    t = pkg.datasets["t"]
    true_mean = np.mean(profile_w(np.linspace(20, 120, 100001)))
    assert pkg.attrs["energy_ref_j"] == pytest.approx(100 * (true_mean + 30), rel=2e-3)
    assert pkg.attrs["energy_cand_j"] == pytest.approx(0.4 * 100 * true_mean, rel=2e-3)
    assert np.all(np.diff(t) == pytest.approx(1.0)) and t[0] == pytest.approx(20.5)
    lo, hi = pkg.attrs["bias_w_ci"]
    assert lo <= pkg.attrs["bias_w"] <= hi
    # phases as children: idle before (clear of the pulse block), the pulse block, the workload,
    # and each epoch interval
    assert set(pkg.children) == {"workload", "idle", "pulses_1", "epoch_1", "epoch_2"}
    assert pkg.children["epoch_1"].attrs["n_bins"] == 40 and pkg.children["epoch_2"].attrs["n_bins"] == 50
    assert pkg.children["idle"].attrs["phase_start_s"] == pytest.approx(9.5)
    assert pkg.children["pulses_1"].attrs["phase_kind"] == "pulses"
    # software_total: package + DRAM + GPU, never the core domain (part of the package)
    total = entries["software_total__vs__wall"]
    assert json.loads(total.attrs["members"]) == ["nvml_gpu0", "rapl_dram_0", "rapl_package_0"]
    expected_sw = 0.8 * true_mean - 2.0
    assert total.attrs["energy_cand_j"] == pytest.approx(100 * expected_sw, rel=2e-3)
    # unmetered = wall - software = (true + 30) - (0.8 true - 2)
    assert total.attrs["unmetered_w"] == pytest.approx(0.2 * true_mean + 32, rel=5e-3)
    assert total.attrs["unmetered_share_pct"] == pytest.approx(100 * (0.2 * true_mean + 32) / (true_mean + 30), rel=5e-3)
    assert "fans" in total.attrs["unmetered_includes"]


def test_analyze_json_psu_and_candidate_choice(tmp_path):
    path = _node(tmp_path)
    with h5py.File(path, "r+") as f:
        f["streams"]["wall"].attrs["emulated"] = False  # a real reference, emulated software meters
    res = run_hwval("analyze", str(path), "--candidate", "software_total", "--psu-efficiency", "0.9",
                    "--resamples", "100", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert list(out["comparisons"]) == ["software_total__vs__wall"]
    total = out["comparisons"]["software_total__vs__wall"]
    assert total["emulated"] is True and total["reference_emulated"] is False and out["reference_emulated"] is False
    true_mean = np.mean(profile_w(np.linspace(20, 120, 100001)))
    wall = true_mean + 30
    assert total["unmetered_w"] == pytest.approx(0.9 * wall - (0.8 * true_mean - 2), rel=5e-3)
    assert total["psu_loss_w"] == pytest.approx(0.1 * wall, rel=5e-3)
    assert out["synchronised"] == {s: False for s in ("wall", "nvml_gpu0", "rapl_dram_0", "rapl_package_0")}
    assert set(total["phases"]) == {"workload", "idle", "pulses_1", "epoch_1", "epoch_2"}


def test_identical_and_scaled_streams_through_the_command(tmp_path):
    t = np.arange(0.0, T_END, 0.1)
    p = profile_w(t)
    path = tmp_path / "run.h5"
    write_run(path, [Stream("wall", "hardware", t, power_w=p),
                     Stream("same", "software", t, power_w=p.copy()),
                     Stream("half", "software", t, power_w=0.5 * p)], EVENTS)
    assert run_hwval("analyze", str(path), "--resamples", "50").returncode == 0
    with open_run(path) as run:
        a = run.read_derived("analysis")
    same, half = a["same__vs__wall"].attrs, a["half__vs__wall"].attrs
    assert same["bias_w"] == pytest.approx(0.0, abs=1e-9) and same["ccc"] == pytest.approx(1.0)
    assert same["energy_error_pct"] == pytest.approx(0.0, abs=1e-9)
    assert half["slope"] == pytest.approx(2.0, rel=1e-9) and half["intercept"] == pytest.approx(0.0, abs=1e-6)
    assert half["energy_error_pct"] == pytest.approx(-50.0, rel=1e-9)


@pytest.mark.parametrize("args,message", [
    (["--reference", "nope"], "--reference 'nope': no such stream"),
    (["--candidate", "nope"], "--candidate 'nope': no such stream"),
    (["--bin-s", "0"], "--bin-s 0.0: must be > 0"),
    (["--psu-efficiency", "92"], "expected a fraction in (0, 1]"),
])
def test_analyze_bad_input_is_one_line(tmp_path, args, message):
    path = _node(tmp_path)
    res = run_hwval("analyze", str(path), *args)
    assert res.returncode == 2
    assert res.stderr.startswith("hwval: error: ") and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_several_hardware_streams_ask_for_reference(tmp_path):
    t = np.arange(0.0, 30.0, 0.1)
    path = _node(tmp_path, extra=[Stream("plug", "hardware", t, power_w=profile_w(t), driver="tasmota")])
    res = run_hwval("analyze", str(path))
    assert res.returncode == 2
    assert "several hardware streams (plug, wall)" in res.stderr and "--reference" in res.stderr
    assert run_hwval("analyze", str(path), "--reference", "plug", "--resamples", "0").returncode == 0
    res = run_hwval("analyze", str(tmp_path / "missing.h5"))
    assert res.returncode == 2 and "no such file" in res.stderr


def test_calibrate_then_analyze_applies_the_record(tmp_path):
    path = _node(tmp_path)
    cal_dir = tmp_path / "cal"
    res = run_hwval("calibrate", str(path), "--meter", "nvml_gpu0", "--reference", "wall", "-o", str(cal_dir),
                    "--resamples", "200")
    assert res.returncode == 0, res.stderr
    (record,) = cal_dir.glob("*.toml")
    assert record.name == "nvml-GPU-test-0-emulated.toml"
    doc = tomllib.loads(record.read_text())
    # wall = true + 30 and gpu = 0.3 true - 2  =>  wall = gpu / 0.3 + 30 + 2 / 0.3
    assert doc["fit"]["gain"] == pytest.approx(1 / 0.3, rel=0.01)
    # (the bins at the profile's 190 W steps see each meter's sampling smear the step over its
    # own period, 0.1 s vs 0.05 s: that moves the offset by up to a couple of watts)
    assert doc["fit"]["offset_w"] == pytest.approx(30 + 2 / 0.3, abs=2.5)
    lo, hi = doc["fit"]["gain_ci"]
    assert lo <= doc["fit"]["gain"] <= hi
    assert doc["emulated"] is True and doc["meter"]["identity"]["uuid"] == "GPU-test-0"
    with open_run(path) as run:
        assert doc["source"]["run_id"] == run.attrs["run_id"]
    import hashlib
    assert doc["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert doc["fit"]["valid_min_w"] < doc["fit"]["valid_max_w"]
    assert "valid for nvml_gpu0 between" in res.stdout

    res = run_hwval("analyze", str(path), "--calibration", str(cal_dir), "--candidate", "nvml_gpu0",
                    "--resamples", "100")
    assert res.returncode == 0, res.stderr
    assert "calibration applied: nvml_gpu0: gain" in res.stdout
    with open_run(path) as run:
        a = run.read_derived("analysis")
    cal = a["nvml_gpu0_calibrated__vs__wall"].attrs
    assert abs(cal["bias_w"]) < 0.5 and cal["calibration_applied"] == str(record)
    assert abs(a["nvml_gpu0__vs__wall"].attrs["bias_w"]) > 50
    assert a["calibration__nvml_gpu0"].attrs["gain"] == pytest.approx(doc["fit"]["gain"])

    # the same GPU measured for real: an emulated record never applies
    real = tmp_path / "real"
    real.mkdir()
    real_path = _node(real, emulated=False)
    res = run_hwval("analyze", str(real_path), "--calibration", str(cal_dir), "--resamples", "0")
    assert res.returncode == 0, res.stderr
    assert "no record in" in res.stdout
    with open_run(real_path) as run:
        assert not any(k.startswith("calibration__") for k in run.read_derived("analysis"))


def test_calibrate_errors(tmp_path):
    path = _node(tmp_path)
    res = run_hwval("calibrate", str(path), "--meter", "nope", "--reference", "wall")
    assert res.returncode == 2 and "no such stream" in res.stderr
    res = run_hwval("calibrate", str(path), "--meter", "wall", "--reference", "wall")
    assert res.returncode == 2 and "same stream" in res.stderr


def test_validate_a_stream_passes_and_fails_on_thresholds(tmp_path):
    path = _node(tmp_path)
    # the package reads 40 % of (wall - 30 W): far from the wall
    res = run_hwval("validate", str(path), "--candidate", "rapl_package_0", "--max-bias-pct", "5")
    assert res.returncode == 1, res.stderr
    assert res.stdout.startswith("FAIL: rapl_package_0 against wall") and "bias" in res.stdout
    t = np.arange(0.0, T_END, 0.1)
    good = Stream("good", "software", t, power_w=1.01 * (profile_w(t) + 30.0))
    (tmp_path / "b").mkdir()
    path2 = _node(tmp_path / "b", extra=[good])
    res = run_hwval("validate", str(path2), "--candidate", "good", "--max-energy-error-pct", "2", "--min-ccc", "0.99",
                    "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    v = json.loads(res.stdout)
    assert v["verdict"] == "pass" and v["metrics"]["energy_error_pct"] == pytest.approx(1.0, abs=0.05)
    with open_run(path2) as run:
        stored = run.read_derived("analysis")["validation__good__vs__wall"]
    assert stored.attrs["verdict"] == "pass" and json.loads(stored.attrs["reasons"])


def test_validate_files_and_unusable_input(tmp_path):
    path = _node(tmp_path)
    o = ORIGIN_REALTIME_NS / 1e9
    t = np.arange(15.0, 125.0, 0.5)
    csv_path = tmp_path / "meter.csv"
    csv_path.write_text("timestamp,power_w\n" + "".join(f"{o + x:.3f},{0.97 * (profile_w(np.array([x]))[0] + 30):.3f}\n"
                                                         for x in t))
    res = run_hwval("validate", str(path), "--candidate", str(csv_path), "--max-energy-error-pct", "5")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PASS: meter.csv against wall" in res.stdout and "against wall's power changes" in res.stdout
    jl = tmp_path / "meter.jsonl"
    e = energy_of(t)
    jl.write_text("".join(json.dumps({"timestamp": o + x, "energy_j": 1.10 * (ej + 30 * (x - t[0]))}) + "\n"
                          for x, ej in zip(t, e)))
    res = run_hwval("validate", str(path), "--candidate", str(jl), "--max-energy-error-pct", "5", "--json")
    assert res.returncode == 1, res.stdout + res.stderr
    assert json.loads(res.stdout)["metrics"]["energy_error_pct"] == pytest.approx(10.0, abs=0.5)

    bad = tmp_path / "bad.csv"
    bad.write_text("time,watts\n1,2\n")
    res = run_process("validate", str(path), "--candidate", str(bad))
    assert res.returncode == 2
    assert "unknown column(s) 'time', 'watts' (accepted: timestamp, power_w, energy_j)" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    elsewhere = tmp_path / "elsewhere.csv"
    elsewhere.write_text("timestamp,power_w\n1000,5\n1001,5\n")
    res = run_hwval("validate", str(path), "--candidate", str(elsewhere))
    assert res.returncode == 2 and "do not overlap" in res.stderr
    res = run_hwval("validate", str(path), "--candidate", str(tmp_path / "none.csv"))
    assert res.returncode == 2 and "no such file" in res.stderr


def _late_series(o, lag_s, step_s=0.37):
    """A file meter stamping each reading ``lag_s`` late (its value is the true power then),
    at a step that is no divisor of the profile's 5 s plateaus (edges at every phase)."""
    t = np.arange(15.0, 125.0, step_s)
    return t, [(o + x, p) for x, p in zip(t, 0.97 * (profile_w(t - lag_s) + 30.0))]


def test_validate_estimates_a_file_series_lag(tmp_path):
    path = _node(tmp_path)
    o = ORIGIN_REALTIME_NS / 1e9
    _, rows = _late_series(o, 0.8)
    late = tmp_path / "late.csv"
    late.write_text("timestamp,power_w\n" + "".join(f"{ts:.3f},{p:.3f}\n" for ts, p in rows))
    res = run_hwval("validate", str(path), "--candidate", str(late), "--min-ccc", "0.98", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    v = json.loads(res.stdout)
    m = v["metrics"]
    assert v["synchronised"] is True and m["lag_estimated"] is True
    assert m["lag_s"] == pytest.approx(0.8, abs=0.06)
    lo, hi = m["lag_relative_ci_s"]
    assert lo < m["lag_relative_s"] < hi and hi - lo < 0.5
    # 0.97 x the wall, sampled at 0.37 s (trapezoids across the plateaus' edges add their share)
    assert m["ccc"] > 0.98 and -6.0 < m["bias_pct"] < -2.0

    # a cumulative energy_j series, 1.2 s early: the counter's lag is fitted as well
    t = np.arange(15.0, 125.0, 0.29)
    e = energy_of(t + 1.2) + 30.0 * (t - t[0])
    jl = tmp_path / "early.jsonl"
    jl.write_text("".join(json.dumps({"timestamp": o + x, "energy_j": ej}) + "\n" for x, ej in zip(t, e)))
    res = run_hwval("validate", str(path), "--candidate", str(jl), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    m = json.loads(res.stdout)["metrics"]
    assert m["lag_s"] == pytest.approx(-1.2, abs=0.08) and m["ccc"] > 0.99
    with open_run(path) as run:
        stored = run.read_derived("analysis")["validation__early.jsonl__vs__wall"].attrs
    assert stored["lag_estimated"] and stored["lag_s"] == pytest.approx(m["lag_s"])
    # a search range that cannot reach the lag: the counter's bins straddle the wrong edges
    res = run_hwval("validate", str(path), "--candidate", str(jl), "--max-lag-s", "0.1", "--json")
    short = json.loads(res.stdout)["metrics"]
    assert short["lag_estimated"] is False, short["lag_note"]  # pinned at the bound, if at all
    assert short["rmse_w"] > 2 * m["rmse_w"] and short["ccc"] < m["ccc"] - 0.01

    # a meter that never follows the load: nothing to fit, its own stamps, and it says so
    flat = tmp_path / "flat.csv"
    flat.write_text("timestamp,power_w\n" + "".join(f"{ts:.3f},100.0\n" for ts, _ in rows))
    res = run_hwval("validate", str(path), "--candidate", str(flat), "--max-bias-pct", "1000")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "lag not estimated" in res.stdout and "the file's own timestamps are used" in res.stdout


def test_file_series_lag_adds_the_references_sync_lag(tmp_path):
    # the wall reports 0.3 s late (and /sync says so); the file 0.8 s late: against the wall's
    # raw stamps the file is 0.5 s late, and on the aligned timebase 0.8 s
    t = np.arange(0.0, T_END, 0.1)
    path = tmp_path / "run.h5"
    write_run(path, [Stream("wall", "hardware", t, power_w=profile_w(t - 0.3) + 30.0)], EVENTS)
    from hwval.runfile import DerivedEntry
    with open_run(path, "r+") as run:
        run.replace_derived("sync", {"wall": DerivedEntry(attrs={
            "reference": "pulses", "lag_s": 0.3, "lag_ci_s": [0.29, 0.31], "window_s": 0.0, "drift_ppm": 0.0,
            "method": "test", "quality": 1.0})}, whole=True)
    _, rows = _late_series(ORIGIN_REALTIME_NS / 1e9, 0.8)
    late = tmp_path / "late.csv"
    late.write_text("timestamp,power_w\n" + "".join(f"{ts:.3f},{p:.3f}\n" for ts, p in rows))
    res = run_hwval("validate", str(path), "--candidate", str(late), "--resamples", "0", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    m = json.loads(res.stdout)["metrics"]
    assert m["lag_relative_s"] == pytest.approx(0.5, abs=0.06)
    assert m["lag_s"] == pytest.approx(0.8, abs=0.06)
    assert m["ccc"] > 0.99


def test_validate_mlperf_protocol(tmp_path):
    # idle, then two workloads, five minutes each, 1 Hz meters: the candidate reads 3 % low
    t = np.arange(0.0, 1000.0, 1.0) + 0.5
    level = np.where(t < 320, 80.0, np.where(t < 640, 300.0, 240.0)) + 5 * np.sin(t / 9.0)
    events = [(1.0, "workload_start", {}), (10.0, "mark", {"mark": "condition", "condition": "idle"}),
              (320.0, "mark", {"mark": "condition", "condition": "resnet"}),
              (640.0, "mark", {"mark": "condition", "condition": "bert"}), (990.0, "workload_end", {})]
    path = tmp_path / "q.h5"
    write_run(path, [Stream("wall", "hardware", t, power_w=level, period_s=1.0),
                     Stream("meter", "software", t, power_w=0.97 * level, period_s=1.0)], events)
    res = run_hwval("validate", str(path), "--candidate", "meter", "--protocol", "mlperf")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "MLPerf meter qualification" in res.stdout and res.stdout.count("[ok]") == 3
    assert "-3.00 %" in res.stdout
    res = run_hwval("validate", str(path), "--candidate", "meter", "--protocol", "mlperf", "--max-energy-error-pct", "2")
    assert res.returncode == 1 and res.stdout.count("[FAIL]") == 3
    with open_run(path) as run:
        v = run.read_derived("analysis")["validation__meter__vs__wall"]
    assert v.attrs["protocol"] == "mlperf" and set(v.children) == {"condition_idle", "condition_resnet", "condition_bert"}
    assert len(v.children["condition_resnet"].attrs["ref_w"]) == 5
    # the same meter as a JSONL file (stamped 0.4 s late): qualified the same way; the stretches
    # the lag is fitted on hold only a slow 5 W ripple, which pins it to no better than the
    # search range, so the file keeps its stamps and says why (60 s windows hardly mind 0.4 s)
    jl = tmp_path / "meter.jsonl"
    jl.write_text("".join(json.dumps({"timestamp": ORIGIN_REALTIME_NS / 1e9 + x + 0.4, "power_w": 0.97 * p}) + "\n"
                          for x, p in zip(t, level)))
    res = run_hwval("validate", str(path), "--candidate", str(jl), "--protocol", "mlperf", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    v = json.loads(res.stdout)
    assert v["protocol"] == "mlperf" and len(v["checks"]) == 3
    # (0.4 s on the 5 W ripple moves a window mean by up to ~0.2 W: 0.25 % of the 80 W idle)
    assert all(c["value"] == pytest.approx(-3.0, abs=0.3) for c in v["checks"])
    assert v["metrics"]["lag_estimated"] is False and "wider than the +-3 s searched" in v["metrics"]["lag_note"]
    short = tmp_path / "s.h5"
    write_run(short, [Stream("wall", "hardware", t[:200], power_w=level[:200]),
                      Stream("meter", "software", t[:200], power_w=level[:200])], events[:2])
    res = run_hwval("validate", str(short), "--candidate", "meter", "--protocol", "mlperf")
    assert res.returncode == 2 and "two workload conditions" in res.stderr


def test_sync_timings_are_used_when_present(tmp_path):
    # the software meter reports 0.7 s late; /sync says so and analysis corrects it
    t = np.arange(0.0, T_END, 0.05)
    path = tmp_path / "run.h5"
    write_run(path, [Stream("wall", "hardware", t, power_w=profile_w(t)),
                     Stream("late", "software", t, power_w=profile_w(t - 0.7))], EVENTS)
    raw = run_hwval("analyze", str(path), "--resamples", "0", "--json")
    assert raw.returncode == 0, raw.stderr
    before = json.loads(raw.stdout)["comparisons"]["late__vs__wall"]
    assert before["synchronised"] is False and "hwval sync" in before["sync_note"]
    from hwval.runfile import DerivedEntry
    with open_run(path, "r+") as run:
        run.replace_derived("sync", {
            "wall": DerivedEntry(attrs={"reference": "pulses", "lag_s": 0.0, "lag_ci_s": [0.0, 0.0], "window_s": 0.0,
                                        "drift_ppm": 0.0, "method": "test", "quality": 1.0}),
            "late": DerivedEntry(attrs={"reference": "pulses", "lag_s": 0.7, "lag_ci_s": [0.69, 0.71], "window_s": 0.0,
                                        "drift_ppm": 0.0, "method": "test", "quality": 1.0})}, whole=True)
    res = run_hwval("analyze", str(path), "--resamples", "0")
    assert res.returncode == 0, res.stderr
    assert "NOT SYNCHRONISED" not in res.stdout and "synchronised: every stream lag-corrected" in res.stdout
    with open_run(path) as run:
        after = run.read_derived("analysis")["late__vs__wall"].attrs
    assert after["synchronised"] and json.loads(after["timing"])["late"]["lag_s"] == 0.7
    # lag-corrected, the late meter agrees with the wall bin for bin; raw, it does not
    assert after["rmse_w"] < 1.0 < before["rmse_w"]
    assert after["ccc"] > 0.999 > before["ccc"]
