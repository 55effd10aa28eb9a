"""Lag, window and drift estimation on simulated runs with known truth (hwval.sync.simulate
writes them through the capture's HDF5 writer, from the bench model)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hwval.benchmodel import MeterModel
from hwval.runfile import open_run
from hwval.sync.simulate import Meter, Scenario, bench_meters, write_run
from hwval.sync.synchronise import SyncInputError, synchronise
from hwval.sync.template import TemplateError, pulse_blocks
from hwval.workloads.pulses import chip_length_s


def _bench(seed, **kw):
    meters = bench_meters(np.random.default_rng(seed))
    chip = chip_length_s([(m.period_s, m.model.window_s) for m in meters])
    return meters, Scenario(meters, seed=seed, chip_s=chip, settle_s=6.0, tail_s=6.0, workload_s=kw.pop("workload_s", 300.0), **kw)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("sync") / "bench.h5"
    meters, sc = _bench(11)
    built = write_run(path, sc)
    with open_run(path) as run:
        result = synchronise(run)
    return meters, built, result


def test_pulses_give_absolute_lags_within_their_intervals(bench_run):
    meters, built, result = bench_run
    assert result.absolute and result.reference == "pulses" and result.n_blocks == 2
    for m in meters:
        st = result.streams[m.name]
        true = built.timings[m.name]
        assert st.method == "pulse_fit" and st.reference == "pulses"
        lo, hi = st.lag_ci_s
        truth_at_origin = float(true.lag_at(st.drift_origin_s))
        assert lo <= truth_at_origin <= hi, (m.name, st.lag_s, truth_at_origin, st.lag_ci_s)
        # far below the reporting period: within 2 % of it at both blocks
        for t_b in st.block_times_s:
            est = st.lag_s + st.drift_ppm * 1e-6 * (t_b - st.drift_origin_s)
            assert abs(est - true.lag_at(t_b)) < 0.02 * m.period_s, m.name
        assert st.quality > 0.9
        if m.semantics == "counter":
            assert st.window_s == 0.0 and not st.window_fitted
        else:
            assert st.window_ci_s[0] <= m.model.window_s <= st.window_ci_s[1], (m.name, st.window_s, st.window_ci_s)


def test_drift_of_a_self_clocked_instrument(bench_run):
    meters, built, result = bench_run
    dc = next(m for m in meters if m.name == "n6705")
    st = result.streams["n6705"]
    assert abs(dc.model.drift_ppm) == 50.0
    assert st.drift_ci_ppm[0] <= -dc.model.drift_ppm <= st.drift_ci_ppm[1]
    assert abs(st.drift_ppm + dc.model.drift_ppm) < 2.0
    # streams on the host's clock: no drift found (the interval holds 0)
    assert result.streams["wt310"].drift_ci_ppm[0] <= 0.0 <= result.streams["wt310"].drift_ci_ppm[1]


def test_stream_that_never_reacts_gets_no_lag(tmp_path):
    meters = [Meter("wall", 10.0, MeterModel(window_s=0.1, latency_s=0.05, noise_w=0.2), "window_mean", 0.1),
              Meter("nvml_gpu0", 10.0, MeterModel(window_s=1.0, latency_s=0.05, noise_w=0.5), "window_mean", 1.0,
                    kind="software", driver="nvml", scope="gpu")]
    path = tmp_path / "run.h5"
    write_run(path, Scenario(meters, seed=2, chip_s=1.2, workload_s=20.0, never_reacts=("nvml_gpu0",)))
    with open_run(path) as run:
        result = synchronise(run)
    dead = result.streams["nvml_gpu0"]
    assert dead.method == "no_response" and math.isnan(dead.lag_s) and dead.quality < 0.05
    assert all(math.isnan(v) for v in dead.lag_ci_s) and "did not react" in dead.note
    assert result.streams["wall"].method == "pulse_fit" and result.streams["wall"].quality > 0.9


def test_gaps_inside_a_pulse_block(tmp_path):
    meters, sc = _bench(5, workload_s=120.0)
    # the plug loses 6 s in the middle of the first block, RAPL 1 s (gap events and missing rows)
    start = sc.settle_s + 4 * sc.chip_s
    sc.gaps = [("plug", start, start + 6.0), ("rapl_package_0", start + 1.0, start + 2.0)]
    path = tmp_path / "gaps.h5"
    built = write_run(path, sc)
    with open_run(path) as run:
        result = synchronise(run)
    for name in ("plug", "rapl_package_0"):
        st = result.streams[name]
        true = built.timings[name]
        period = next(m.period_s for m in meters if m.name == name)
        assert st.method == "pulse_fit"
        assert st.lag_ci_s[0] <= true.lag_at(st.drift_origin_s) <= st.lag_ci_s[1], name
        assert abs(st.lag_s - true.lag_at(st.drift_origin_s)) < 0.03 * period, name


def test_without_pulses_lags_are_relative_to_a_reference_stream(tmp_path):
    meters = [Meter("wall", 10.0, MeterModel(window_s=0.1, latency_s=0.25, noise_w=0.1), "window_mean", 0.1,
                    driver="wt300"),
              Meter("rapl_package_0", 100.0, MeterModel(latency_s=0.001, gain=0.4), "counter", kind="software",
                    driver="rapl", scope="cpu_package"),
              Meter("nvml_gpu0", 10.0, MeterModel(window_s=1.0, latency_s=0.08, noise_w=0.3, gain=0.5),
                    "window_mean", 1.0, kind="software", driver="nvml", scope="gpu")]
    path = tmp_path / "nopulse.h5"
    built = write_run(path, Scenario(meters, seed=4, blocks="none", workload_s=200.0))
    with open_run(path) as run:
        assert pulse_blocks(run.events) == []
        result = synchronise(run)
    # the sharpest stream is the reference (RAPL's 10 ms counter); the note says lags are relative
    assert not result.absolute and result.reference == "rapl_package_0"
    assert any("no sync pulses" in n and "relative to rapl_package_0" in n for n in result.notes)
    ref = result.streams["rapl_package_0"]
    assert ref.method == "reference" and ref.lag_s == 0.0 and ref.reference == "rapl_package_0"
    for name, tol in (("wall", 0.005), ("nvml_gpu0", 0.015)):
        st = result.streams[name]
        rel_true = built.timings[name].lag_s - built.timings["rapl_package_0"].lag_s
        assert st.method == "stream_fit" and st.reference == "rapl_package_0"
        assert abs(st.lag_s - rel_true) < tol, (name, st.lag_s, rel_true)
        assert st.lag_ci_s[0] <= rel_true <= st.lag_ci_s[1], name
    assert result.streams["nvml_gpu0"].window_ci_s[0] <= 1.0 <= result.streams["nvml_gpu0"].window_ci_s[1]


def test_a_run_shorter_than_one_pulse_block_is_refused(tmp_path):
    meters = [Meter("wall", 10.0, MeterModel(window_s=0.1), "window_mean", 0.1)]
    path = tmp_path / "short.h5"
    write_run(path, Scenario(meters, chip_s=1.0, settle_s=2.0, stop_s=8.0))    # the block runs 2..15 s
    with open_run(path) as run:
        with pytest.raises(TemplateError, match="never ended"):
            pulse_blocks(run.events)
        with pytest.raises(SyncInputError, match="shorter than one pulse block"):
            synchronise(run)
        with pytest.raises(SyncInputError, match="no stream 'nope'"):
            synchronise(run, streams=["nope"])
