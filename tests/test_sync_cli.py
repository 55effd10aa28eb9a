"""``hwval sync`` and ``hwval characterize`` as commands, on simulated runs with known truth."""

from __future__ import annotations

import json
import math

import h5py
import pytest
from click.testing import CliRunner

from conftest import run_hwval
from hwval.benchmodel import MeterModel
from hwval.cli import cli
from hwval.runfile import DerivedEntry, open_run
from hwval.sync import align
from hwval.sync.simulate import Meter, Scenario, write_run


def _meters():
    return [Meter("wall", 10.0, MeterModel(window_s=0.1, latency_s=0.04, noise_w=0.05, quantum_w=0.1), "window_mean",
                  0.1, 5e-4, driver="wt300"),
            Meter("plug", 2.0, MeterModel(window_s=0.5, latency_s=0.4, quantum_w=1.0, noise_w=0.4), "window_mean",
                  None, 2e-3, driver="tasmota"),
            Meter("rapl_package_0", 100.0, MeterModel(latency_s=0.001, gain=0.4), "counter", kind="software",
                  driver="rapl", scope="cpu_package", energy_unit_j=15.3e-6),
            # polled at 10 Hz, but its value only changes every 0.5 s
            Meter("nvml_gpu0", 10.0, MeterModel(window_s=0.5, latency_s=0.05, noise_w=0.2, gain=0.5, quantum_w=0.001),
                  "window_mean", None, 3e-4, kind="software", driver="nvml", scope="gpu", update_s=0.5)]


@pytest.fixture
def run_path(tmp_path):
    path = tmp_path / "run.h5"
    built = write_run(path, Scenario(_meters(), seed=7, chip_s=1.2, settle_s=6.0, tail_s=6.0, workload_s=60.0))
    return path, built


def _invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_sync_writes_every_stream_and_prints_a_table(run_path):
    path, built = run_path
    # a simulated run's streams are all emulated: here only the plug is, the others read as real
    with h5py.File(path, "r+") as f:
        for name in ("wall", "rapl_package_0", "nvml_gpu0"):
            f["streams"][name].attrs["emulated"] = False
    res = _invoke("sync", str(path))
    assert res.exit_code == 0, res.output
    assert "reference: pulses" in res.output and "written: /sync (4 streams)" in res.output
    rows = {line.split()[0]: line.split()[1] for line in res.output.splitlines()
            if line.split() and line.split()[0] in ("wall", "plug", "rapl_package_0", "nvml_gpu0")}
    assert rows == {"wall": "-", "plug": "yes", "rapl_package_0": "-", "nvml_gpu0": "-"}
    assert "EMULATED meters: plug (protocol emulators" in res.output
    for name in ("wall", "plug", "rapl_package_0", "nvml_gpu0"):
        assert name in res.output
    with open_run(path) as run:
        entries = run.read_derived("sync")
        assert set(entries) == {"wall", "plug", "rapl_package_0", "nvml_gpu0"}
        for name, entry in entries.items():
            a = entry.attrs
            for key in ("reference", "lag_s", "lag_ci_s", "window_s", "drift_ppm", "method", "quality",
                        "window_ci_s", "drift_ci_ppm", "drift_origin_s", "semantics", "absolute"):
                assert key in a, (name, key)
            assert a["reference"] == "pulses" and a["method"] == "pulse_fit"
            true = built.timings[name]
            if name == "nvml_gpu0":
                # a value held between updates is 0..0.5 s older than the box model says: its lag
                # comes out between the latency and the latency plus the update interval, and with
                # no declared window on a one-phase grid it is known only to half a period
                assert 0.05 < a["lag_s"] < 0.55 and "half a period" in a["note"] and 0.3 < a["quality"] <= 0.5
                continue
            assert 0.9 < a["quality"] <= 1.0
            assert a["lag_ci_s"][0] <= true.lag_at(a["drift_origin_s"]) <= a["lag_ci_s"][1], name
        # 1.2 s chips are 12 of the wall's 0.1 s periods: every edge meets its grid at one phase,
        # so lag and window cannot be told apart and the declared window is used (and said)
        assert "not separable" in entries["wall"].attrs["note"] and not entries["wall"].attrs["window_fitted"]
        assert entries["wall"].attrs["window_s"] == 0.1
        assert entries["plug"].attrs["window_fitted"] and entries["plug"].attrs["note"] == ""
        # analysis's align now lag-corrects every stream
        aligned = align(run, ["wall", "plug"], bin_s=1.0)
        assert all(aligned.synchronised.values())
        assert aligned.timing["plug"].lag_s == pytest.approx(entries["plug"].attrs["lag_s"])


def test_sync_json_and_rerun_replaces_sync(run_path):
    path, _ = run_path
    with open_run(path, "r+") as run:
        run.replace_derived("sync", {"stale": DerivedEntry(attrs={"lag_s": 9.0})})
    with h5py.File(path, "r+") as f:
        f["streams"]["wall"].attrs["emulated"] = False  # a real meter among simulated ones
    res = _invoke("sync", str(path), "--reference", "wall", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["reference"] == "wall" and out["absolute"] is False
    assert {n: s["emulated"] for n, s in out["streams"].items()} == {
        "wall": False, "plug": True, "rapl_package_0": True, "nvml_gpu0": True}
    assert out["streams"]["wall"]["method"] == "reference" and out["streams"]["plug"]["reference"] == "wall"
    with open_run(path) as run:
        entries = run.read_derived("sync")
    assert "stale" not in entries and entries["plug"].attrs["reference"] == "wall"
    # again with pulses: every entry replaced
    assert _invoke("sync", str(path)).exit_code == 0
    with open_run(path) as run:
        entries = run.read_derived("sync")
    assert {e.attrs["reference"] for e in entries.values()} == {"pulses"}


def test_characterize_finds_update_period_noise_and_quantum(run_path):
    path, built = run_path
    res = _invoke("characterize", str(path), "--json")            # no /sync yet: it syncs first
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    gpu, plug, wall, rapl = out["nvml_gpu0"], out["plug"], out["wall"], out["rapl_package_0"]
    lo, hi = gpu["update_period_ci_s"]
    assert gpu["update_period_s"] == pytest.approx(0.5, abs=0.01) and lo <= 0.5 <= hi
    assert wall["update_period_s"] == pytest.approx(0.1, rel=0.05)
    assert plug["quantum_w"] == pytest.approx(1.0) and plug["quantum_ci_w"] == [1.0, 1.0]
    assert wall["quantum_w"] == pytest.approx(0.1)
    assert rapl["quantum_w"] == pytest.approx(15.3e-6 / 0.01, rel=0.01)
    # noise on the idle plateau before the pulses: the configured 0.05 W (+ 0.1 W steps' share)
    lo, hi = wall["noise_ci_w"]
    assert lo <= math.sqrt(0.05 ** 2 + 0.1 ** 2 / 12) <= hi
    assert wall["latency_ci_s"][0] <= 0.04 <= wall["latency_ci_s"][1]
    with open_run(path) as run:
        a = run.read_derived("sync")["nvml_gpu0"].attrs
    assert a["update_period_s"] == pytest.approx(gpu["update_period_s"]) and "lag_s" in a   # added, kept
    res = _invoke("characterize", str(path))
    assert res.exit_code == 0 and "update s" in res.output and "nvml_gpu0" in res.output


def test_without_pulses_the_output_says_relative(tmp_path):
    path = tmp_path / "nopulse.h5"
    write_run(path, Scenario(_meters()[:3], seed=3, blocks="none", workload_s=120.0))
    res = _invoke("sync", str(path))
    assert res.exit_code == 0, res.output
    assert "no sync pulses in the run: lags are relative to rapl_package_0" in res.output
    assert "relative to rapl_package_0" in res.output.splitlines()[0]


def test_bad_input_is_one_line_exit_2(tmp_path, run_path):
    path, _ = run_path
    short = tmp_path / "short.h5"
    write_run(short, Scenario(_meters()[:1], chip_s=1.0, settle_s=2.0, stop_s=6.0))
    cases = [((str(tmp_path / "missing.h5"),), "no such file"),
             ((str(short),), "shorter than one pulse block"),
             ((str(path), "--reference", "nope"), "--reference 'nope': no such stream")]
    for args, message in cases:
        res = _invoke("sync", *args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output and res.output.startswith("hwval: error: ")
        assert len(res.output.strip().splitlines()) == 1
    # one real process: the error reaches stderr, no traceback
    proc = run_hwval("sync", str(short))
    assert proc.returncode == 2 and proc.stderr.startswith("hwval: error: ") and "Traceback" not in proc.stderr
    assert _invoke("characterize", str(short)).exit_code == 2
