"""Energy-conserving alignment (hwval.sync.align / align_arrays) on series and run files with
known truth."""

from __future__ import annotations

import numpy as np
import pytest

from hwval.benchmodel import MeterModel
from hwval.runfile import DerivedEntry, open_run
from hwval.sync import Timing, align, align_arrays
from hwval.sync.align import align_stream
from hwval.sync.simulate import Meter, Scenario, write_run


def _steps(t):
    """True power: 100 W with 50 W steps every 5 s."""
    return 100.0 + 50.0 * (np.mod(t, 10.0) < 5.0)


def _energy(t):
    """Exact cumulative energy of _steps from 0."""
    cycles, phase = np.divmod(np.asarray(t, dtype=float), 10.0)
    return cycles * 1250.0 + 150.0 * np.minimum(phase, 5.0) + 100.0 * np.maximum(phase - 5.0, 0.0)


EDGES = np.arange(0.0, 101.0, 1.0)


@pytest.mark.parametrize("semantics", ["counter", "window_mean", "instant"])
def test_bins_add_up_to_the_stream_energy(semantics):
    t = np.arange(0.0, 100.0, 0.1) + 0.03
    if semantics == "counter":
        values = _energy(t) - _energy(t[0])
    elif semantics == "window_mean":
        values = (_energy(t) - _energy(t - 0.1)) / 0.1          # the mean over the 0.1 s before each stamp
    else:
        values = _steps(t)
    timing = Timing(window_s=0.1 if semantics == "window_mean" else 0.0)
    power, energy = align_arrays(t, values, semantics, timing, EDGES)
    ok = np.isfinite(energy)
    # outside the data: NaN (a window-mean reading at 0.03 s covers its window, from -0.07 s)
    assert ok[0] == (semantics == "window_mean") and not ok[-1] and ok[1:-1].all()
    assert np.allclose(energy[ok], power[ok] * 1.0)
    # conservation: the bins sum to one bin over the same span, for any bin layout
    _, whole = align_arrays(t, values, semantics, timing, np.array([1.0, 99.0]))
    _, uneven = align_arrays(t, values, semantics, timing, np.array([1.0, 1.7, 13.0, 13.05, 50.0, 99.0]))
    assert energy[1:-1].sum() == pytest.approx(whole[0], rel=1e-12)
    assert uneven.sum() == pytest.approx(whole[0], rel=1e-12)
    # and the reconstruction is the truth where it can be: counters and window-mean cells that
    # tile the time line are exact; trapezoids miss the steps by a triangle each
    truth = _energy(99.0) - _energy(1.0)
    rel = 1e-12 if semantics != "instant" else 2e-3
    assert whole[0] == pytest.approx(truth, rel=rel)


def test_the_three_semantics_agree_on_the_same_truth():
    t = np.arange(0.0, 100.0, 0.01)
    smooth = lambda x: 100 + 30 * np.sin(2 * np.pi * x / 7.0)       # noqa: E731
    cum = lambda x: 100 * x - 30 * 7.0 / (2 * np.pi) * (np.cos(2 * np.pi * x / 7.0) - 1)  # noqa: E731
    out = {}
    out["counter"] = align_arrays(t, cum(t), "counter", None, EDGES)[0]
    out["window_mean"] = align_arrays(t, (cum(t) - cum(t - 0.01)) / 0.01, "window_mean", Timing(window_s=0.01), EDGES)[0]
    out["instant"] = align_arrays(t, smooth(t), "instant", None, EDGES)[0]
    truth = (cum(EDGES[1:]) - cum(EDGES[:-1])) / 1.0
    for name, p in out.items():
        ok = np.isfinite(p)
        assert ok.sum() >= 98, name
        assert np.max(np.abs(p[ok] - truth[ok])) < 1e-3, name


def test_lag_and_window_move_readings_back_to_the_true_power():
    # a 1 Hz meter averaging 1 s, reporting 0.6 s late: raw stamps smear the steps into the
    # wrong bins, its timing puts them back (its windows then tile the bins exactly)
    t = np.arange(0.0, 100.0, 1.0) + 0.6
    lag, window = 0.6, 1.0
    values = (_energy(t - lag) - _energy(t - lag - window)) / window
    truth = (_energy(EDGES[1:]) - _energy(EDGES[:-1]))
    raw, _ = align_arrays(t, values, "window_mean", None, EDGES)
    fixed, _ = align_arrays(t, values, "window_mean", Timing(lag_s=lag, window_s=window), EDGES)
    ok = np.isfinite(fixed) & np.isfinite(raw)
    assert np.max(np.abs(fixed[ok] - truth[ok])) < 1e-9
    assert np.sqrt(np.mean((raw[ok] - truth[ok]) ** 2)) > 10.0
    # a drifting lag: lag(t) = 0.2 s + 1000 ppm * t
    tm = Timing(lag_s=0.2, drift_ppm=1000.0, window_s=1.0)
    values = (_energy(t - tm.lag_at(t)) - _energy(t - tm.lag_at(t) - 1.0))
    drifted, _ = align_arrays(t, values, "window_mean", tm, EDGES)
    ok = np.isfinite(drifted)
    assert np.median(np.abs(drifted[ok] - truth[ok])) < 1e-9


def test_gaps_make_nan_bins_and_are_never_interpolated():
    t = np.arange(0.0, 100.0, 0.1)
    e = _energy(t)
    # a gap in the stamps (rows missing) and a gap event with readings on either side
    keep = (t < 40.0) | (t >= 42.55)
    power, energy = align_arrays(t[keep], e[keep], "counter", None, EDGES, gaps=[(70.2, 70.4)])
    nan_bins = set(np.flatnonzero(np.isnan(energy)))
    assert {39, 40, 41, 42, 70} <= nan_bins and nan_bins <= {39, 40, 41, 42, 70, 99}
    assert 38 not in nan_bins and 43 not in nan_bins and 71 not in nan_bins
    # a NaN reading is a gap too (a window-mean reading breaks its own cell)
    p = _steps(t)
    p[505] = np.nan
    power, _ = align_arrays(t, p, "window_mean", Timing(window_s=0.1), EDGES)
    assert np.isnan(power[50]) and np.isfinite(power[49]) and np.isfinite(power[51])
    # long silence: readings more than 3 intervals apart
    t2 = np.concatenate([np.arange(0, 30, 1.0), np.arange(34, 100, 1.0)])
    power, _ = align_arrays(t2, _steps(t2), "instant", None, EDGES)
    assert np.isnan(power[29:34]).all() and np.isfinite(power[28]) and np.isfinite(power[34])


def test_bad_edges_and_shapes_are_refused():
    t = np.arange(10.0)
    with pytest.raises(ValueError, match="non-decreasing"):
        align_arrays(t, t, "instant", None, np.array([3.0, 1.0]))
    with pytest.raises(ValueError, match="one length"):
        align_arrays(t, t[:5], "instant", None, EDGES)
    with pytest.raises(ValueError, match="method"):
        align_arrays(t, t, "average", None, EDGES)


def _run(tmp_path, gaps=()):
    meters = [Meter("wall", 10.0, MeterModel(window_s=0.1, latency_s=0.3), "window_mean", 0.1),
              Meter("rapl_package_0", 100.0, MeterModel(latency_s=0.001, gain=0.4), "counter", kind="software",
                    driver="rapl", scope="cpu_package")]
    path = tmp_path / "run.h5"
    built = write_run(path, Scenario(meters, seed=3, chip_s=0.5, workload_s=40.0, gaps=list(gaps)))
    return path, built


def test_align_on_a_run_reads_sync_by_blocks_and_honours_gap_events(tmp_path):
    path, built = _run(tmp_path, gaps=[("wall", 30.0, 31.5)])
    with open_run(path, "r+") as run:
        raw = align(run, ["wall", "rapl_package_0"], bin_s=0.5)
        assert raw.synchronised == {"wall": False, "rapl_package_0": False}
        assert raw.method == {"wall": "window_mean", "rapl_package_0": "counter"}
        assert raw.timing["wall"] == Timing(window_s=0.1)           # the dataset's window_s attr
        bad = np.flatnonzero(np.isnan(raw.power_w["wall"]))
        assert {60, 61, 62} <= set(bad)                               # 30.0..31.5 s: the gap event
        # blocks of 777 rows give the same bins as one read
        for name in ("wall", "rapl_package_0"):
            p1, e1, _, _ = align_stream(run, name, raw.edges_s, built.timings[name])
            p2, e2, _, _ = align_stream(run, name, raw.edges_s, built.timings[name], block_rows=777)
            assert np.array_equal(np.isnan(e1), np.isnan(e2))
            assert np.allclose(e1[np.isfinite(e1)], e2[np.isfinite(e2)], rtol=0, atol=1e-9)
        # with /sync, align uses it and says so
        run.replace_derived("sync", {"wall": DerivedEntry(attrs={"reference": "pulses", "lag_s": 0.3,
                                                                 "window_s": 0.1, "drift_ppm": 0.0})}, whole=True)
        synced = align(run, ["wall", "rapl_package_0"], bin_s=0.5)
        assert synced.synchronised == {"wall": True, "rapl_package_0": False}
        assert synced.timing["wall"].lag_s == 0.3
        # with the true timing the wall (true power) and RAPL (0.4 x true) agree: exactly on
        # plateaus, within one wall cell's share of a step (0.4 x 80 W x 0.1 s / 0.5 s) next to
        # a step, and in total
        exact = align(run, ["wall", "rapl_package_0"], bin_s=0.5, timings=built.timings)
        w, r = exact.power_w["wall"], exact.power_w["rapl_package_0"]
        ok = np.isfinite(w) & np.isfinite(r)
        d = 0.4 * w[ok] - r[ok]
        assert ok.sum() > 130 and np.median(np.abs(d)) < 1e-6 and np.max(np.abs(d)) < 6.4
        assert abs(d.sum()) < 1e-3 * r[ok].sum()
        with pytest.raises(KeyError, match="no stream 'nope'"):
            align(run, ["nope"], bin_s=1.0)
