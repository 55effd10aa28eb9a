"""Pure parts of analysis: phases from events, calibration records (TOML round trip, identity
matching), candidate files (CodeCarbon, CSV, JSONL), MLPerf scoring."""

from __future__ import annotations

import datetime as dt
import doctest
import json
import tomllib

import numpy as np
import pytest

from hwval.analysis import calibration as cal
from hwval.analysis import external, mlperf
from hwval.analysis.phases import find_phases, mark_phases, workload_window
from hwval.runfile import Event


def ev(t, name, stream="", **detail):
    return Event(float(t), name, stream, detail)


def mark(t, name, **detail):
    return ev(t, "mark", mark=name, **detail)


# -- phases ------------------------------------------------------------------------------------

def test_phases_of_a_training_run():
    events = [
        ev(0.5, "pulse_start"), ev(3.0, "pulse_end"),
        ev(10.0, "workload_start"),
        mark(10.1, "idle_before", seconds=2), mark(12.1, "train_start"),
        mark(12.2, "epoch_start", epoch=1), mark(20.0, "epoch", epoch=1, loss=0.5),
        mark(20.1, "eval_start", epoch=1), mark(21.0, "eval", epoch=1),
        mark(21.1, "epoch_start", epoch=2), mark(29.0, "epoch", epoch=2, loss=0.4),
        mark(29.5, "train_end"), mark(29.6, "idle_after"),
        ev(31.6, "workload_end"),
        ev(33.0, "pulse_start"), ev(36.0, "pulse_end"),
    ]
    phases = {p.name: p for p in find_phases(events, (0.0, 40.0))}
    assert (phases["workload"].start_s, phases["workload"].stop_s) == (10.0, 31.6)
    # idle: the longest stretch before workload_start clear of the pulse block (+ 2 s settling)
    assert (phases["idle"].start_s, phases["idle"].stop_s) == (5.0, 10.0)
    assert [(phases[f"pulses_{k}"].start_s, phases[f"pulses_{k}"].stop_s) for k in (1, 2)] == [(0.5, 3.0), (33.0, 36.0)]
    # paired marks: epoch_start .. epoch, named by the detail's epoch number
    assert (phases["epoch_1"].start_s, phases["epoch_1"].stop_s) == (12.2, 20.0)
    assert (phases["epoch_2"].start_s, phases["epoch_2"].stop_s) == (21.1, 29.0)
    assert phases["epoch_2"].detail == {"epoch": 2}
    assert (phases["eval_1"].start_s, phases["eval_1"].stop_s) == (20.1, 21.0)
    assert (phases["train_1"].start_s, phases["train_1"].stop_s) == (12.1, 29.5)
    # unpaired single marks run to the next mark / workload_end
    assert (phases["idle_before_1"].start_s, phases["idle_before_1"].stop_s) == (10.1, 12.1)
    assert (phases["idle_after_1"].start_s, phases["idle_after_1"].stop_s) == (29.6, 31.6)
    assert phases["epoch_1"].attrs()["phase_kind"] == "mark" and phases["epoch_1"].attrs()["phase_mark"] == "epoch"


def test_plain_epoch_marks_run_from_one_to_the_next():
    events = [ev(0, "workload_start"), mark(1, "epoch", epoch=1), mark(4, "epoch", epoch=2),
              mark(9, "epoch", epoch=3), ev(12, "workload_end")]
    got = [(p.name, p.start_s, p.stop_s) for p in mark_phases(events, 12.0)]
    assert got == [("epoch_1", 1, 4), ("epoch_2", 4, 9), ("epoch_3", 9, 12)]


def test_phase_names_never_clash_and_are_safe():
    events = [ev(0, "workload_start"), mark(1, "workload"), mark(2, "a/b c"), ev(5, "workload_end")]
    names = [p.name for p in find_phases(events, (0, 5))]
    assert "workload" in names and "workload_1" in names and "a_b_c_1" in names
    assert all("/" not in n for n in names)


def test_window_without_workload_events_is_the_whole_recording():
    start, stop, how = workload_window([], (2.0, 9.0))
    assert (start, stop) == (2.0, 9.0) and "whole recording" in how
    assert find_phases([], (2.0, 9.0)) == []


# -- calibration records -----------------------------------------------------------------------

def _meter(name="nvml_gpu0", driver="nvml", emulated=False, identity=None, host="lab1"):
    identity = identity if identity is not None else {"uuid": "GPU-1234", "name": "A100", "update_period_s": 0.1,
                                                      "nvml_index": 0, "power_limit_w": None}
    return cal.MeterDescription(name, driver, "software", "gpu", emulated, host, identity)


def _record(meter=None, reference=None, **kw):
    base = dict(meter=meter or _meter(),
                reference=reference or _meter("wall", "wt300", identity={"manufacturer": "YOKOGAWA", "model": "WT310",
                                                                          "serial": "C2PH1", "firmware": "F1.03"}),
                gain=1.05, gain_ci=(1.04, 1.06), offset_w=-3.5, offset_w_ci=(-4.0, -3.0), r2=0.998,
                residual_rmse_w=1.2, valid_min_w=50.0, valid_max_w=300.0, n_bins=600, bin_s=1.0,
                synchronised=True, run_id="0f" * 16, run_file="run.h5", run_sha256="ab" * 32,
                window_start_s=10.0, window_stop_s=610.0, created_utc="2026-12-01T10:00:00Z",
                hwval_version="0.1.0", bootstrap={"seed": 1, "block_bins": 20})
    base.update(kw)
    return cal.CalibrationRecord(**base)


def test_record_round_trips_through_toml(tmp_path):
    rec = _record()
    path = cal.write_record(rec, tmp_path)
    assert path.name == "nvml-GPU-1234.toml"
    text = path.read_text()
    doc = tomllib.loads(text)  # a plain TOML reader sees the documented layout
    assert doc["format"] == "hwval-calibration" and doc["fit"]["gain"] == 1.05
    assert doc["meter"]["identity"]["uuid"] == "GPU-1234" and "power_limit_w" not in doc["meter"]["identity"]
    assert doc["source"]["sha256"] == "ab" * 32 and doc["emulated"] is False
    back = cal.load_records(tmp_path)[0]
    assert back.gain == rec.gain and back.offset_w_ci == rec.offset_w_ci and back.path == str(path)
    assert back.meter.match_fields() == rec.meter.match_fields()


def test_matching_uses_identifying_fields_only():
    rec = _record()
    # same GPU in another session: index and detected period differ, the UUID does not
    again = _meter(identity={"uuid": "GPU-1234", "name": "A100", "update_period_s": 0.02, "nvml_index": 3})
    assert cal.matches(rec, again)
    assert not cal.matches(rec, _meter(identity={"uuid": "GPU-9999", "name": "A100"}))
    # a plug without serial: driver, name, host and the stable identity, never its pty path
    plug = _meter("wall", "tasmota", identity={"port": "/tmp/a/tty", "version": "13.1.0", "hardware": "ESP8266"})
    plug_rec = _record(meter=plug)
    moved = _meter("wall", "tasmota", identity={"port": "/dev/ttyUSB0", "version": "13.1.0", "hardware": "ESP8266"})
    assert cal.matches(plug_rec, moved)
    assert not cal.matches(plug_rec, _meter("wall", "tasmota", host="lab2",
                                            identity={"port": "/dev/ttyUSB0", "version": "13.1.0", "hardware": "ESP8266"}))


def test_emulated_records_never_match_real_meters(tmp_path):
    emu = _meter(emulated=True)
    rec = _record(meter=emu)
    assert rec.emulated
    path = cal.write_record(rec, tmp_path)
    assert path.name.endswith("-emulated.toml")
    assert tomllib.loads(path.read_text())["emulated"] is True
    assert not cal.matches(rec, _meter(emulated=False))
    assert cal.matches(rec, _meter(emulated=True))
    assert cal.pick([rec], _meter(emulated=False)) is None
    # a real meter fitted against an emulated reference: the record is emulated, and its gain
    # (the emulator's scale) must not correct the real meter either
    real_vs_emu = _record(meter=_meter(emulated=False), reference=_meter("wall", "wt300", emulated=True))
    assert real_vs_emu.emulated and not cal.matches(real_vs_emu, _meter(emulated=False))
    assert cal.matches(_record(meter=_meter(emulated=False)), _meter(emulated=False))


def test_pick_takes_the_newest():
    old, new = _record(created_utc="2026-01-01T00:00:00Z"), _record(created_utc="2026-06-01T00:00:00Z", gain=1.1)
    assert cal.pick([old, new], _meter()).gain == 1.1


def test_bad_records_are_one_line_errors(tmp_path):
    (tmp_path / "x.toml").write_text("format = 'something-else'\n")
    with pytest.raises(cal.CalibrationError, match="not a hwval calibration record"):
        cal.load_records(tmp_path)
    (tmp_path / "x.toml").write_text("format = [\n")
    with pytest.raises(cal.CalibrationError, match="not valid TOML"):
        cal.load_records(tmp_path)
    with pytest.raises(cal.CalibrationError, match="no such folder"):
        cal.load_records(tmp_path / "nope")


# -- candidate files ---------------------------------------------------------------------------

ORIGIN_NS = 1_764_000_000 * 10 ** 9  # the run's realtime origin


def _local_iso(unix_s: float, fraction: bool = False) -> str:
    stamp = dt.datetime.fromtimestamp(unix_s)  # naive local time, as CodeCarbon writes it
    return stamp.isoformat() if fraction else stamp.strftime("%Y-%m-%dT%H:%M:%S")


def test_codecarbon_cumulative_rows_become_increments(tmp_path):
    # one run, flushed twice then stopped: start at run time 5.3 s, durations 3.0, 5.0, 8.0 s
    start_unix = ORIGIN_NS / 1e9 + 5.3
    rows = [(3.0, 30.0), (5.0, 52.0), (8.0, 80.0)]  # (duration s, cumulative energy kJ... in J below)
    lines = ["timestamp,project_name,run_id,duration,emissions,energy_consumed,country_iso_code"]
    for dur, e_j in rows:
        lines.append(f"{_local_iso(start_unix + dur)},p,run-1,{dur},0.0,{e_j / 3.6e6},FRA")
    path = tmp_path / "emissions.csv"
    path.write_text("\n".join(lines) + "\n")
    fmt, data = external.read_candidate_file(path, "auto", ORIGIN_NS)
    assert fmt == "codecarbon"
    assert np.allclose(data.energy_j, [30.0, 22.0, 28.0])
    # whole-second stamps: the common start is known to within the intersection of the rows'
    # one-second ranges, and its middle is used
    assert data.time_uncertainty_s <= 0.5
    assert abs(data.start_s[0] - 5.3) <= data.time_uncertainty_s + 1e-6
    assert np.allclose(np.diff(np.r_[data.start_s[0], data.stop_s]), [3.0, 2.0, 3.0])
    assert np.allclose(data.start_s[1:], data.stop_s[:-1])
    assert any("cumulative" in n for n in data.notes)


def test_codecarbon_rows_of_separate_runs_with_offsets(tmp_path):
    lines = ["timestamp,run_id,duration,energy_consumed"]
    end = dt.datetime.fromtimestamp(ORIGIN_NS / 1e9 + 20.25, dt.timezone.utc)
    lines.append(f"{end.isoformat()},a,10.0,{100 / 3.6e6}")
    lines.append(f"{(end + dt.timedelta(seconds=30)).isoformat()},b,5.0,{40 / 3.6e6}")
    path = tmp_path / "e.csv"
    path.write_text("\n".join(lines) + "\n")
    _, data = external.read_candidate_file(path, "codecarbon", ORIGIN_NS)
    assert np.allclose(data.start_s, [10.25, 45.25]) and np.allclose(data.stop_s, [20.25, 50.25])
    assert data.time_uncertainty_s == 0.0
    assert np.allclose(data.energy_j, [100.0, 40.0])


def test_generic_csv_and_jsonl(tmp_path):
    t0 = ORIGIN_NS / 1e9
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("timestamp,power_w\n" + "".join(f"{t0 + i},{100 + i}\n" for i in range(5)))
    fmt, s = external.read_candidate_file(csv_path, "auto", ORIGIN_NS)
    assert fmt == "csv" and s.key == "power_w"
    assert np.allclose(s.t_s, np.arange(5)) and np.allclose(s.values, 100 + np.arange(5))
    jl = tmp_path / "m.jsonl"
    jl.write_text("\n".join(json.dumps({"timestamp": _local_iso(t0 + i + 0.5, fraction=True), "energy_j": 1000 + 50 * i})
                            for i in range(4)) + "\n\n")
    fmt, s = external.read_candidate_file(jl, "auto", ORIGIN_NS)
    assert fmt == "jsonl" and s.key == "energy_j"
    assert np.allclose(s.t_s, np.arange(4) + 0.5) and np.allclose(s.values, [0, 50, 100, 150])


@pytest.mark.parametrize("text,fmt,match", [
    ("timestamp,watts\n1,2\n", "csv", r"unknown column\(s\) 'watts' \(accepted: timestamp, power_w, energy_j\)"),
    ("timestamp,power_w\nyesterday,3\n", "csv", "neither Unix seconds nor ISO 8601"),
    ("timestamp,power_w\n1,abc\n2,3\n", "csv", "power_w 'abc' is not a number"),
    ("timestamp,power_w\n1,nan\n2,3\n", "csv", r"f.csv:2: power_w is 'nan': give a finite number"),
    ('{"timestamp": 1, "power": 3}\n', "jsonl", "unknown column"),
    ("not json\n", "jsonl", r":1: not JSON"),
    ("timestamp,energy_j\n1,10\n2,5\n", "csv", "cumulative"),
    ("timestamp,run_id,energy_consumed\n", "codecarbon", "missing column"),
])
def test_bad_files_name_the_problem(tmp_path, text, fmt, match):
    path = tmp_path / ("f.jsonl" if fmt == "jsonl" else "f.csv")
    path.write_text(text)
    with pytest.raises(external.ExternalFormatError, match=match):
        external.read_candidate_file(path, fmt, ORIGIN_NS)


def test_unknown_extension_asks_for_format(tmp_path):
    p = tmp_path / "data.txt"
    p.write_text("timestamp,power_w\n")
    with pytest.raises(external.ExternalFormatError, match="--format"):
        external.read_candidate_file(p, "auto", ORIGIN_NS)


# -- MLPerf scoring ----------------------------------------------------------------------------

def test_olympic_scoring_and_docstrings():
    assert mlperf.olympic_mean([5, 1, 9, 5, 5]) == 5.0
    failed, tried = doctest.testmod(mlperf)
    assert tried and not failed


def test_mlperf_conditions_windows_and_scores():
    events = [ev(0, "workload_start"), mark(10, "condition", condition="idle"), mark(400, "condition", condition="resnet"),
              mark(800, "condition", condition="bert"), ev(1200, "workload_end")]
    conds = mlperf.conditions_from_events(events, None, 1200.0)
    assert [(c.name, c.idle) for c in conds] == [("idle", True), ("resnet", False), ("bert", False)]
    wins = mlperf.windows(conds[1])
    assert len(wins) == 5 and wins[0][0] == 400 and wins[-1][1] == 800
    assert all(b - a == 60 for a, b in wins) and all(wins[i][1] <= wins[i + 1][0] for i in range(4))
    t = np.arange(0.5, 1200)
    ref = np.where(t < 400, 80.0, np.where(t < 800, 300.0, 250.0))
    # the candidate reads 3 % low, with one wild window per condition that Olympic scoring drops
    cand = 0.97 * ref
    cand[(t >= 400) & (t < 460)] = 600.0
    s = mlperf.score_condition(conds[1], t, ref, cand, 5.0)
    assert s.ref_score_w == pytest.approx(300.0) and s.cand_score_w == pytest.approx(291.0)
    assert s.error_pct == pytest.approx(-3.0) and s.passed
    assert not mlperf.score_condition(conds[1], t, ref, cand, 2.0).passed


def test_mlperf_needs_idle_and_two_workloads():
    events = [mark(10, "condition", condition="resnet"), ev(500, "workload_end")]
    with pytest.raises(mlperf.ProtocolInputError, match="0 idle and 1 workload"):
        mlperf.conditions_from_events(events, None, 500.0)
    short = mlperf.Condition("x", 0.0, 200.0, False)
    with pytest.raises(mlperf.ProtocolInputError, match="needs 5 non-overlapping 60 s windows"):
        mlperf.windows(short)
