"""Per-epoch energy (hwval.analysis.epochs, `hwval analyze --epochs`) and the accuracy/energy
trade-off across runs (`hwval analyze --tradeoff`), on run files with known truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hwval.analysis import epochs as ep
from hwval.analysis import tradeoff as tr
from hwval.analysis.carbon import J_PER_KWH, CarbonTable
from hwval.cli import cli
from hwval.runfile import DerivedEntry, open_run
from study_runs import Timeline, true_energy, write_study_run


def smooth_w(t):
    return 150.0 + 60.0 * np.sin(2 * np.pi * np.asarray(t, dtype=float) / 9.0)


def invoke(*args):
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def test_intervals_from_the_workload_marks():
    tl = Timeline()
    from hwval.runfile.reader import Event
    events = [Event(t, n, "", d) for t, n, d in tl.events()]
    intervals, notes = ep.workload_intervals(events)
    by = {iv.name: iv for iv in intervals}
    assert notes == []
    assert set(by) == {"workload", "setup", "idle_before", "train", "epoch_1", "eval_1", "epoch_2", "eval_2",
                       "epoch_3", "eval_3", "idle_after"}
    assert by["setup"].start_s == 1.0 and by["setup"].stop_s == 2.0
    assert (by["idle_before"].start_s, by["idle_before"].stop_s) == (2.0, 6.0)
    assert (by["epoch_2"].start_s, by["epoch_2"].stop_s) == (18.0, 28.0)
    assert (by["eval_2"].start_s, by["eval_2"].stop_s) == (28.0, 30.0)
    assert (by["train"].start_s, by["train"].stop_s) == (6.0, 42.0)
    assert (by["idle_after"].start_s, by["idle_after"].stop_s) == (42.0, 46.0)
    assert by["epoch_3"].detail["accuracy"] == 0.7 and by["eval_3"].detail["accuracy"] == 0.65
    # an interrupted run: epoch 2 never ended; its interval is left out and the note says so
    events = [Event(t, n, "", d) for t, n, d in tl.events(epochs_done=2)]
    events = [e for e in events if not (e.detail.get("mark") in ("epoch", "eval", "eval_start")
                                        and e.detail.get("epoch") == 2)]
    intervals, notes = ep.workload_intervals(events)
    names = {iv.name for iv in intervals}
    assert "epoch_1" in names and "epoch_2" not in names and "train" not in names
    assert any("epoch_start epoch=2" in n and "has no epoch" in n for n in notes)


def test_per_epoch_energy_matches_the_known_truth(tmp_path):
    path = tmp_path / "run.h5"
    tl = Timeline()
    write_study_run(path, smooth_w, tl)
    with open_run(path) as run:
        res = ep.epoch_energy(run)
    assert res.reference == "wall" and res.candidates == ["rapl_package_0", "software_total"]
    for i, iv in enumerate(res.intervals):
        truth = true_energy(smooth_w, iv.start_s, iv.stop_s)
        assert res.energy_j["wall"][i] == pytest.approx(truth, rel=2e-4), iv.name
        assert res.energy_j["rapl_package_0"][i] == pytest.approx(0.4 * truth, rel=2e-4), iv.name
        assert res.error_pct("rapl_package_0")[i] == pytest.approx(-60.0, abs=0.05)
    # intervals add up: the epochs and evaluations make the train interval
    parts = [i for i, iv in enumerate(res.intervals) if iv.kind in ("epoch", "eval")]
    assert sum(res.energy_j["wall"][parts]) == pytest.approx(res.energy_of("train"), rel=1e-9)
    assert res.idle_w("wall") == pytest.approx(true_energy(smooth_w, 2.0, 6.0) / 4.0, rel=2e-4)
    assert not any(res.synchronised.values()) and any("hwval sync" in n for n in res.notes)


def test_sync_lag_is_applied_to_each_interval(tmp_path):
    # RAPL's stamps are 0.6 s late: raw, every epoch's energy is off; with /sync saying so, it is right
    path = tmp_path / "late.h5"
    write_study_run(path, smooth_w, rapl_share=1.0, software_delay_s=0.6)
    with open_run(path) as run:
        raw = ep.epoch_energy(run)
    with open_run(path, "r+") as run:
        run.replace_derived("sync", {
            "wall": DerivedEntry(attrs={"reference": "pulses", "lag_s": 0.0, "window_s": 0.0, "drift_ppm": 0.0,
                                        "method": "test", "quality": 1.0}),
            "rapl_package_0": DerivedEntry(attrs={"reference": "pulses", "lag_s": 0.6, "window_s": 0.0,
                                                  "drift_ppm": 0.0, "method": "test", "quality": 1.0})}, whole=True)
    with open_run(path) as run:
        synced = ep.epoch_energy(run)
    i = synced.find("eval_2")
    iv = synced.intervals[i]
    # raw stamps charge the interval with the energy of 0.6 s earlier
    assert raw.energy_j["rapl_package_0"][i] == pytest.approx(
        true_energy(smooth_w, iv.start_s - 0.6, iv.stop_s - 0.6), rel=2e-4)
    assert abs(raw.error_pct("rapl_package_0")[i]) > 3.0
    assert abs(synced.error_pct("rapl_package_0")[i]) < 0.05
    assert all(synced.synchronised.values())


def test_analyze_epochs_prints_and_stores(tmp_path):
    path = tmp_path / "run.h5"
    write_study_run(path, smooth_w)
    code, out, err = invoke("analyze", str(path), "--epochs")
    assert code == 0, err
    assert "epoch_2" in out and "eval_3" in out and "-60.0" in out and "/analysis/epochs__wall" in out
    with open_run(path) as run:
        entry = run.read_derived("analysis")["epochs__wall"]
    names = json.loads(entry.attrs["intervals"]) if isinstance(entry.attrs["intervals"], str) else \
        list(entry.attrs["intervals"])
    i = names.index("epoch_1")
    assert entry.datasets["start_s"][i] == 6.0 and entry.datasets["stop_s"][i] == 16.0
    assert entry.children["rapl_package_0"].datasets["energy_j"][i] == pytest.approx(
        0.4 * true_energy(smooth_w, 6.0, 16.0), rel=2e-4)
    code, out, _ = invoke("analyze", str(path), "--epochs", "--json")
    doc = json.loads(out)
    assert doc["intervals"][names.index("train")]["error_pct"]["rapl_package_0"] == pytest.approx(-60.0, abs=0.05)
    code, _, err = invoke("analyze", str(path), "--epochs", "--bin-s", "2")
    assert code == 2 and "--bin-s applies to the comparison table" in err
    # a zero intensity is a value given, not an absent one: refused here like any other
    code, _, err = invoke("analyze", str(path), "--epochs", "--carbon-intensity", "0")
    assert code == 2 and err == "hwval: error: --carbon-intensity applies to --tradeoff only (CO2 per run and location)\n"


def constant(level_w):
    return lambda t: np.full(np.shape(t), float(level_w))


def test_tradeoff_numbers_by_hand(tmp_path):
    # vgg at 100 W (train 36 s: 3600 J), resnet at 250 W with longer epochs (train 51 s: 12750 J);
    # RAPL reads 40 % and 50 %: errors -60 % and -50 %
    vgg, resnet = tmp_path / "vgg.h5", tmp_path / "resnet.h5"
    write_study_run(vgg, constant(100.0), rapl_share=0.4, arch="vgg", params=70_000, macs=9_000_000,
                    train_samples=200, eval_accuracies=(0.2, 0.4, 0.6))
    slow = Timeline(epoch_s=(15.0, 15.0, 15.0))
    write_study_run(resnet, constant(250.0), slow, rapl_share=0.5, arch="resnet", params=175_000,
                    macs=26_000_000, train_samples=200, eval_accuracies=(0.3, 0.5, 0.8))
    with open_run(vgg) as r1, open_run(resnet) as r2:
        points = [tr.run_point(r1), tr.run_point(r2)]
    a, b = points
    assert (a.arch, a.accuracy, a.epochs, a.train_samples) == ("vgg", 0.6, 3, 600)
    assert a.hardware_j == pytest.approx(3600.0, rel=1e-9) and b.hardware_j == pytest.approx(12750.0, rel=1e-9)
    assert a.error_pct("rapl_package_0") == pytest.approx(-60.0) and b.error_pct("rapl_package_0") == pytest.approx(-50.0)
    rows = {r.arch: r for r in tr.by_arch(points)}
    assert rows["resnet"].accuracy == 0.8 and rows["vgg"].j_per_sample == pytest.approx(3600.0 / 600)
    table = CarbonTable.load()
    from hwval.analysis.carbon import resolve_intensity
    its = [resolve_intensity("US/OR", table=table), resolve_intensity("TW/Taipei", table=table)]
    co2 = tr.carbon_rows(points, its)
    assert co2[0].hardware_g == pytest.approx(3600.0 / J_PER_KWH * 288.2)
    assert co2[3].hardware_g == pytest.approx(12750.0 / J_PER_KWH * 494.0)
    assert co2[3].meter_g["rapl_package_0"] == pytest.approx(0.5 * 12750.0 / J_PER_KWH * 494.0)

    code, out, err = invoke("analyze", "--tradeoff", str(vgg), str(resnet), "--location", "US/OR",
                            "--location", "TW/Taipei")
    assert code == 0, err
    assert "3600.0" in out and "12750.0" in out and "-60.0" in out and "per architecture" in out
    assert f"{3600.0 / J_PER_KWH * 288.2:.4f}" in out and f"{12750.0 / J_PER_KWH * 494.0:.4f}" in out
    code, out, err = invoke("analyze", "--tradeoff", str(vgg), str(resnet), "--carbon-intensity", "1000", "--json")
    doc = json.loads(out)
    assert doc["emissions"][1]["hardware_g"] == pytest.approx(12750.0 / 3600.0)
    assert doc["runs"][1]["error_pct"]["rapl_package_0"] == pytest.approx(-50.0)
    code, out, err = invoke("analyze", "--tradeoff", str(vgg), "--carbon-intensity", "0", "--json")
    assert code == 0, err
    assert [e["hardware_g"] for e in json.loads(out)["emissions"]] == [0.0]
    table_file = tmp_path / "mine.csv"
    table_file.write_text("country,region,g_per_kwh,year,source\nXX,Lab,100,,measured\n")
    code, _, err = invoke("analyze", "--tradeoff", str(vgg), "--carbon-table", str(table_file))
    assert code == 2 and err == ("hwval: error: --carbon-table needs --location COUNTRY[/REGION] (which of its rows "
                                 "to use), e.g. --location US/OR\n")
    code, out, err = invoke("analyze", "--tradeoff", str(vgg), "--carbon-table", str(table_file), "--location",
                            "XX/Lab", "--json")
    assert code == 0, err
    assert json.loads(out)["emissions"][0]["hardware_g"] == pytest.approx(3600.0 / J_PER_KWH * 100.0)
    code, _, err = invoke("analyze", "--tradeoff", str(vgg), "--location", "XX")
    assert code == 2 and "no carbon intensity for country 'XX'" in err
    code, _, err = invoke("analyze", str(vgg), str(resnet))
    assert code == 2 and "several only with --tradeoff" in err


def test_a_late_counter_read_is_no_gap(tmp_path):
    # a loaded host delays a 10 ms RAPL read by 0.25 s inside epoch 2: the counter lost nothing,
    # so the epoch's energy is still exact (a stall of seconds, or a gap event, would be NaN)
    from analysis_runs import Stream, energy_of, write_run
    tl = Timeline()
    t_w = np.arange(0.025, tl.end_s + 2, 0.05)
    t_r = np.arange(0.0, tl.end_s + 2, 0.01)
    t_r = t_r[(t_r < 20.0) | (t_r > 20.25)]
    path = tmp_path / "late-read.h5"
    write_run(path, [Stream("wall", "hardware", t_w, power_w=smooth_w(t_w), period_s=0.05),
                     Stream("rapl_package_0", "software", t_r, energy_j=energy_of(t_r, smooth_w), driver="rapl",
                            scope="cpu_package", period_s=0.01)], tl.events())
    with open_run(path) as run:
        res = ep.epoch_energy(run)
    i = res.find("epoch_2")
    assert res.energy_j["rapl_package_0"][i] == pytest.approx(true_energy(smooth_w, 18.0, 28.0), rel=2e-4)


def test_a_gap_makes_its_intervals_nan_and_says_so(tmp_path):
    from analysis_runs import Stream, energy_of, write_run
    tl = Timeline()
    t_w = np.arange(0.025, tl.end_s + 2, 0.05)
    t_r = np.arange(0.0, tl.end_s + 2, 0.01)
    events = tl.events() + [(20.0, "gap_start", {"reason": "no answer"}), (20.3, "gap_end", {})]
    events.sort(key=lambda e: e[0])
    path = tmp_path / "gap.h5"
    write_run(path, [Stream("wall", "hardware", t_w, power_w=smooth_w(t_w), period_s=0.05),
                     Stream("rapl_package_0", "software", t_r, energy_j=energy_of(t_r, smooth_w), driver="rapl",
                            scope="cpu_package", period_s=0.01)], [])
    # gap events belong to the wall stream: write them with its name
    import h5py
    from hwval.runfile.documents import Event
    from hwval.runfile.layout import append_events
    with h5py.File(path, "r+") as f:
        append_events(f["events"], [Event(t, n, "wall" if n.startswith("gap") else "", d) for t, n, d in events])
    with open_run(path) as run:
        res = ep.epoch_energy(run)
    nan = {iv.name for iv, v in zip(res.intervals, res.energy_j["wall"]) if not np.isfinite(v)}
    assert nan == {"workload", "train", "epoch_2"}
    assert np.isfinite(res.energy_of("epoch_2", "rapl_package_0"))
    assert any(n.startswith("wall: no energy for workload, train, epoch_2: gap wall 20.00..20.30 s") for n in res.notes)
