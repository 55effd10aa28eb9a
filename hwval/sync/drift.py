"""Clock drift: the lag at each block -> a linear clock model ``lag(t) = lag_s + drift * (t - t0)``.

With two blocks (one before the workload, one after) the line goes through both lags; with more
it is the generalised least-squares line through all of them, weighted by their covariance from
the fit. ``drift_ppm`` is the slope in parts per million (1e-6 s of lag per s): a meter whose own
clock runs fast by d ppm, and which says when its readings were taken by that clock, shows
``drift_ppm = -d``. One block gives no drift (0, interval NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClockModel:
    lag_s: float            # the lag at origin_s
    lag_se_s: float
    drift_ppm: float
    drift_se_ppm: float
    origin_s: float         # the first block's time
    n_blocks: int

    def lag_at(self, t_s: float) -> float:
        return self.lag_s + self.drift_ppm * 1e-6 * (t_s - self.origin_s)


def clock_model(lags_s: np.ndarray, lag_cov: np.ndarray, centres_s: np.ndarray) -> ClockModel:
    """The lag line through the per-block lags (see the module docstring).

    Parameters
    ----------
    lags_s : array (B,)
        Lag of each block (s).
    lag_cov : array (B, B)
        Their covariance (s^2).
    centres_s : array (B,)
        Each block's time (s, run timebase); the first is the origin.
    """
    lags = np.asarray(lags_s, dtype=float)
    t = np.asarray(centres_s, dtype=float)
    cov = np.asarray(lag_cov, dtype=float)
    order = np.argsort(t)
    lags, t, cov = lags[order], t[order], cov[np.ix_(order, order)]
    origin = float(t[0])
    if len(lags) == 1 or float(t[-1] - t[0]) <= 0:
        return ClockModel(float(lags[0]), math.sqrt(max(cov[0, 0], 0.0)), 0.0, math.nan, origin, len(lags))
    if len(lags) == 2:  # the line through both: no weights needed (nor a solve to fail)
        beta = np.array([lags[0], (lags[1] - lags[0]) / (t[1] - t[0])])
        g = np.array([[1.0, 0.0], [-1.0 / (t[1] - t[0]), 1.0 / (t[1] - t[0])]])
        b_cov = g @ cov @ g.T
    else:
        beta, b_cov = _gls_line(lags, t - origin, cov)
    se = np.sqrt(np.maximum(np.diag(b_cov), 0.0))
    return ClockModel(float(beta[0]), float(se[0]), float(beta[1] * 1e6), float(se[1] * 1e6), origin, len(lags))


def _gls_line(lags: np.ndarray, dt: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(offset, slope) and their covariance. A covariance the fit left singular (blocks whose
    lag errors are fully correlated, or one that is all zeros) gives weights that cannot fix a
    line: then the unweighted line, its covariance propagated from ``cov`` (the sandwich)."""
    x = np.column_stack([np.ones(len(dt)), dt])
    if np.all(np.isfinite(cov)) and np.any(cov):
        w = np.linalg.pinv(cov)
        a = x.T @ w @ x
        if np.linalg.cond(a) < 1e12:
            b_cov = np.linalg.inv(a)
            return b_cov @ x.T @ w @ lags, b_cov
    h = np.linalg.inv(x.T @ x) @ x.T  # dt spans more than one time: x has full rank
    c = cov if np.all(np.isfinite(cov)) else np.full_like(cov, np.nan)
    return h @ lags, h @ c @ h.T
