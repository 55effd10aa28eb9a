"""The lag line through the blocks' lags (hwval.sync.drift): a singular covariance from the fit
(fully correlated block lags, all zeros) still gives a line, never a LinAlgError."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hwval.sync.drift import clock_model


def test_two_blocks_give_the_line_through_both_whatever_their_covariance():
    # one block's lag with no variance left (the weighted solve raised "Singular matrix": seen
    # live, `hwval sync` of a pulsed capture on a loaded host), and both moving together
    t, lags = np.array([10.0, 110.0]), np.array([0.30, 0.31])
    m = clock_model(lags, np.array([[1e-4, 0.0], [0.0, 0.0]]), t)
    assert m.lag_s == pytest.approx(0.30) and m.drift_ppm == pytest.approx(100.0)
    assert m.lag_se_s == pytest.approx(0.01) and m.drift_se_ppm == pytest.approx(100.0)
    m = clock_model(lags, np.full((2, 2), 4e-4), t)
    assert m.lag_se_s == pytest.approx(0.02) and m.drift_se_ppm == pytest.approx(0.0, abs=1e-9)
    assert m.origin_s == 10.0 and m.n_blocks == 2


@pytest.mark.parametrize("cov, lag_se_s", [(np.full((3, 3), 1e-4), 0.01), (np.zeros((3, 3)), 0.0)],
                         ids=["rank1", "zeros"])
def test_three_blocks_with_a_singular_covariance_fall_back_to_the_unweighted_line(cov, lag_se_s):
    t = np.array([0.0, 50.0, 100.0])
    lags = 0.2 + 2e-6 * t  # 2 ppm
    m = clock_model(lags, cov, t)
    assert m.lag_s == pytest.approx(0.2) and m.drift_ppm == pytest.approx(2.0)
    # the sandwich: lags that move together (rank 1) shift the offset by their common error and
    # leave the slope exact; no error at all leaves neither any
    assert m.lag_se_s == pytest.approx(lag_se_s, abs=1e-9) and m.drift_se_ppm == pytest.approx(0.0, abs=1e-6)


def test_three_blocks_are_weighted_by_their_covariance():
    t = np.array([0.0, 50.0, 100.0])
    lags = np.array([0.20, 0.30, 0.20])
    # the middle block is 100 times less certain: the line follows the outer two
    m = clock_model(lags, np.diag([1e-6, 1e-2, 1e-6]), t)
    assert m.lag_s == pytest.approx(0.2, abs=1e-3) and abs(m.drift_ppm) < 20
    assert m.lag_se_s == pytest.approx(math.sqrt(1e-6), rel=0.2)
