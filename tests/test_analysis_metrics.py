"""Agreement metrics against scipy.stats, hand-worked cases and properties; the bootstrap's
sum-based resampling against direct recomputation on resampled series."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from hwval.analysis import bootstrap, metrics
from hwval.analysis.bootstrap import (_block_plan, _draw_starts, _moment_columns, _spearman_resamples,
                                      agreement_intervals, metrics_from_sums, politis_white_block_length)
from hwval.analysis.metrics import (agreement, bias, bland_altman, ccc, energy, linear_fit, mae, mape,
                                    pearson_r, rmse, spearman_rho)


def _series(seed: int = 0, n: int = 500):
    rng = np.random.default_rng(seed)
    ref = 150 + 40 * np.sin(np.arange(n) / 25.0) + rng.normal(0, 5, n)
    cand = 0.92 * ref + 4 + rng.normal(0, 3, n)
    return ref, cand


def test_docstring_examples_run():
    for module in (metrics, bootstrap):
        failed, tried = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert tried > 5 and failed == 0, module.__name__


def test_against_scipy_stats():
    ref, cand = _series()
    assert pearson_r(ref, cand) == pytest.approx(stats.pearsonr(ref, cand)[0], rel=1e-12)
    assert spearman_rho(ref, cand) == pytest.approx(stats.spearmanr(ref, cand)[0], rel=1e-12)
    lin = stats.linregress(cand, ref)  # ref = slope * cand + intercept
    fit = linear_fit(ref, cand)
    assert fit.slope == pytest.approx(lin.slope, rel=1e-12)
    assert fit.intercept == pytest.approx(lin.intercept, rel=1e-10)
    assert fit.r2 == pytest.approx(lin.rvalue ** 2, rel=1e-12)
    d, m = cand - ref, (cand + ref) / 2
    prop = stats.linregress(m, d)
    loa = bland_altman(ref, cand)
    assert loa.proportional_slope == pytest.approx(prop.slope, rel=1e-10)
    assert loa.proportional_intercept_w == pytest.approx(prop.intercept, rel=1e-10)
    assert loa.sd_w == pytest.approx(stats.tstd(d), rel=1e-12)  # ddof = 1


def test_ties_match_scipy_spearman():
    ref = np.array([1, 2, 2, 3, 3, 3, 4, 5, 5, 6], dtype=float)
    cand = np.array([2, 1, 2, 2, 4, 4, 3, 6, 5, 5], dtype=float)
    assert spearman_rho(ref, cand) == pytest.approx(stats.spearmanr(ref, cand)[0], rel=1e-12)


def test_hand_worked_case():
    # ref 100, 200, 300 W; cand 110, 190, 330 W; d = 10, -10, 30
    ref, cand = [100.0, 200.0, 300.0], [110.0, 190.0, 330.0]
    b = bias(ref, cand)
    assert b.bias_w == pytest.approx(10.0) and b.bias_pct == pytest.approx(5.0)
    e = energy(ref, cand, 2.0)  # 2 s bins: 1200 J vs 1260 J
    assert (e.energy_ref_j, e.energy_cand_j) == (1200.0, 1260.0)
    assert e.energy_error_pct == pytest.approx(5.0)
    assert mae(ref, cand) == pytest.approx(50 / 3)
    assert rmse(ref, cand) == pytest.approx(np.sqrt((100 + 100 + 900) / 3))
    assert mape(ref, cand).mape_pct == pytest.approx(100 * (0.1 + 0.05 + 0.1) / 3)
    # sd of d (ddof=1): deviations 0, -20, 20 -> sqrt(800 / 2) = 20
    loa = bland_altman(ref, cand)
    assert loa.sd_w == pytest.approx(20.0)
    assert (loa.low_w, loa.high_w) == pytest.approx((10 - 39.2, 10 + 39.2))
    # Lin's CCC with population moments: mr = 200, mc = 210, s_r^2 = 20000/3,
    # s_c^2 = (100^2 + 20^2 + 120^2)/3 = 24800/3, s_rc = (100*100 + 0 + 100*120)/3 = 22000/3
    expected = 2 * 22000 / 3 / (20000 / 3 + 24800 / 3 + 100)
    assert ccc(ref, cand) == pytest.approx(expected)


def test_nan_pairs_are_left_out_and_counted():
    ref = np.array([100.0, np.nan, 120.0, 130.0, 0.2])
    cand = np.array([101.0, 50.0, np.nan, 128.0, 0.5])
    m = agreement(ref, cand, 1.0)
    assert m["n_bins"] == 3
    assert m["energy_ref_j"] == pytest.approx(230.2) and m["energy_cand_j"] == pytest.approx(229.5)
    # the 0.2 W bin is below MAPE's 1 W threshold: skipped and counted
    assert m["mape_skipped_bins"] == 1
    assert m["mape_pct"] == pytest.approx(100 * (1 / 100 + 2 / 130) / 2)


def test_shape_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="one length"):
        bias([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="1-D"):
        pearson_r(np.ones((2, 2)), np.ones((2, 2)))


def test_degenerate_inputs_are_nan_not_errors():
    assert np.isnan(pearson_r([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert np.isnan(linear_fit([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]).slope)
    assert np.isnan(bias([], []).bias_w)
    assert np.isnan(mape([0.0, 0.1], [1.0, 1.0]).mape_pct)


finite = st.floats(min_value=1.0, max_value=1e4, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(arrays(float, st.integers(3, 60), elements=finite), st.floats(0.2, 5.0), st.floats(-50, 50))
def test_properties_identical_and_scaled(ref, scale, offset):
    if np.ptp(ref) < 1e-6 * np.abs(ref).max():
        return  # constant: correlations undefined
    same = agreement(ref, ref.copy(), 1.0)
    assert same["bias_w"] == 0 and same["mae_w"] == 0 and same["rmse_w"] == 0
    assert same["ccc"] == pytest.approx(1.0) and same["pearson_r"] == pytest.approx(1.0)
    assert same["energy_error_pct"] == 0 and same["slope"] == pytest.approx(1.0)
    # the candidate reads ref / scale - offset: the calibration recovers scale and offset
    cand = ref / scale - offset
    fit = linear_fit(ref, cand)
    assert fit.slope == pytest.approx(scale, rel=1e-6)
    assert fit.intercept == pytest.approx(scale * offset, rel=1e-5, abs=1e-6 * np.abs(ref).max())
    assert fit.r2 == pytest.approx(1.0)
    # a monotone map keeps the ranks, unless rounding merges two nearly equal readings into one
    # (hypothesis found 1.0 and 1.0000000000000002): then the ties lower rho legitimately
    if np.unique(cand).size == np.unique(ref).size:
        assert spearman_rho(ref, cand) == pytest.approx(1.0)
    # CCC penalises gain and offset where Pearson does not
    if scale != 1.0 or offset != 0.0:
        assert ccc(ref, cand) <= pearson_r(ref, cand) + 1e-12


def test_moment_sums_reproduce_direct_metrics_on_resamples():
    ref, cand = _series(2, n=300)
    ref[[10, 11, 200]] = np.nan  # gaps stay in place inside blocks
    cand[50] = 0.5
    ref[51] = 0.4                # below MAPE's threshold
    n, block = len(ref), 17
    shift = float(np.nanmean(ref))
    cols = _moment_columns(ref, cand, np.full(n, 0.5), shift, metrics.MAPE_MIN_REF_W)
    csum = np.vstack([np.zeros((1, cols.shape[1])), np.cumsum(cols, axis=0)])
    rng = np.random.default_rng(7)
    lengths = _block_plan(n, block)
    assert sum(lengths) == n
    plan = _draw_starts(rng, n, lengths, 5)
    sums = np.zeros((5, cols.shape[1]))
    for length, starts in plan:
        sums += (csum[starts + length] - csum[starts]).sum(axis=1)
    fast = metrics_from_sums(sums, shift)
    rho_fast = _spearman_resamples(ref, cand, np.isfinite(ref) & np.isfinite(cand), plan)
    for b in range(5):
        idx = np.concatenate([np.arange(s, s + length) for length, starts in plan for s in starts[b]])
        assert len(idx) == n
        direct = agreement(ref[idx], cand[idx], 0.5)
        for key, values in fast.items():
            assert values[b] == pytest.approx(direct[key], rel=1e-9, abs=1e-9), key
        r, c = metrics.paired(ref[idx], cand[idx])
        assert rho_fast[b] == pytest.approx(stats.spearmanr(r, c)[0], rel=1e-10)


def test_intervals_cover_the_truth_of_an_autocorrelated_process():
    # AR(1) errors around a known bias of 3 W: the block bootstrap's interval must be wide
    # enough to cover it in most seeded replications (an iid bootstrap would be far too narrow).
    covered = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        n = 600
        e = np.zeros(n)
        for i in range(1, n):
            e[i] = 0.9 * e[i - 1] + rng.normal(0, 1.0)
        ref = 200 + 30 * np.sin(np.arange(n) / 40.0)
        cand = ref + 3.0 + e
        ci, info = agreement_intervals(ref, cand, 1.0, n_resamples=400)
        assert info.block_bins > 5
        covered += ci["bias_w_ci"][0] <= 3.0 <= ci["bias_w_ci"][1]
    assert covered >= 15


def test_intervals_are_reproducible_and_record_how():
    ref, cand = _series(3)
    a, info = agreement_intervals(ref, cand, 1.0, n_resamples=200)
    b, _ = agreement_intervals(ref, cand, 1.0, n_resamples=200)
    assert a == b
    assert info.seed == bootstrap.DEFAULT_SEED and info.n_resamples == 200
    assert info.attrs()["bootstrap_block_bins"] == info.block_bins
    c, _ = agreement_intervals(ref, cand, 1.0, n_resamples=200, seed=5)
    assert c != a
    point = agreement(ref, cand, 1.0)
    for key in ("bias_w", "slope", "ccc", "spearman_rho", "mape_pct", "energy_error_pct"):
        lo, hi = a[f"{key}_ci"]
        assert lo <= point[key] <= hi, key


def test_too_few_bins_give_nan_intervals():
    ci, _ = agreement_intervals([1.0, 2.0, 3.0], [1.0, 2.5, 3.0], 1.0)
    assert all(np.isnan(v).all() for v in ci.values())


def test_linearised_spearman_matches_exact_width():
    rng = np.random.default_rng(5)
    n = 6000
    ref = 100 + np.repeat(rng.uniform(0, 200, n // 60), 60) + rng.normal(0, 2, n)
    cand = np.round(0.9 * ref + np.convolve(rng.normal(0, 40, n), np.ones(20) / 20 ** 0.5, "same"))
    saved = bootstrap.EXACT_RANK_WORK
    try:
        bootstrap.EXACT_RANK_WORK = 10 ** 12
        exact, info_e = agreement_intervals(ref, cand, 1.0, n_resamples=300)
        bootstrap.EXACT_RANK_WORK = 0
        lin, info_l = agreement_intervals(ref, cand, 1.0, n_resamples=300)
    finally:
        bootstrap.EXACT_RANK_WORK = saved
    assert info_e.spearman.startswith("exact") and info_l.spearman.startswith("linearised")
    w_e = np.diff(exact["spearman_rho_ci"])[0]
    w_l = np.diff(lin["spearman_rho_ci"])[0]
    assert w_l == pytest.approx(w_e, rel=0.25)


def test_politis_white_grows_with_persistence():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=4000)
    lengths = []
    for phi in (0.0, 0.5, 0.9):
        x = np.zeros(4000)
        for i in range(1, 4000):
            x[i] = phi * x[i - 1] + noise[i]
        lengths.append(politis_white_block_length(x))
    assert lengths[0] < lengths[1] < lengths[2]
    assert politis_white_block_length(np.ones(100)) == 1.0
    assert politis_white_block_length(np.arange(500.0)) <= np.ceil(3 * np.sqrt(500))
