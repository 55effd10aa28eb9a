"""Fitting the forward model: each block's lag and the stream's averaging window, with intervals.

The search (per stream; blocks are the pulse blocks, or stretches of workload in the fallback):

1. **Coarse grid** on decimated readings (at most :data:`COARSE_N` per block): lags over the
   whole search range at a step of a third of the reporting interval, first with the declared
   (or a guessed) window, which fixes the window's *centre*; then a grid of windows with the
   lag moved to keep that centre (a wrong window shifts the best lag by half its error).
2. **Refinement** at full resolution (at most :data:`REFINE_N` readings per block) by
   Nelder-Mead over ``(lag_1 .. lag_B, window)``; amplitude and offset of every block are
   profiled out by linear least squares inside each evaluation. A reading whose window contains
   an edge pins the edge part-way into it, so the lag comes out far finer than the reporting
   interval.
3. **Interval**: the cluster-robust (sandwich) covariance of all parameters, clusters being the
   readings around each template edge: it is the linearised bootstrap over edges, and it holds
   when residuals are correlated within an edge (averaging windows, quantisation). 95 %
   intervals use Student's t with (clusters - 1) degrees of freedom.
4. **Reaction**: the amplitude's z (amplitude over its robust standard error, the smallest over
   blocks) and the share of variance the model explains (r2). A stream with z below
   :data:`Z_MIN` or r2 below :data:`R2_MIN` did not react: its lag is NaN, never a made-up
   number. ``quality = r2 * clip((z - Z_MIN) / Z_MIN, 0, 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats

from hwval.sync.forward import Observations, Template, profile, regressor

COARSE_N = 1500
REFINE_N = 8000
COARSE_MAX_LAGS = 900
WINDOW_GRID = 14
Z_MIN = 5.0
R2_MIN = 0.2
#: Above this multiple correlation of the window with the lags the two are not separable ...
DEGENERATE_CORR = 0.995
#: ... nor below this spread (in periods) of the phases at which edges meet the reporting grid.
MIN_PHASE_SPREAD = 0.05


@dataclass
class Block:
    """One stretch to fit: the template, the readings, the boundaries between edge clusters
    (true-time axis) and the block's time (stamp axis, for drift)."""

    template: Template
    obs: Observations
    cluster_bounds_s: np.ndarray
    centre_s: float
    #: Time resolution of the template itself (0 for commanded pulses; a reference stream's
    #: reporting interval in the fallback): each template edge is then known only to within it.
    template_resolution_s: float = 0.0


@dataclass
class Fit:
    reacted: bool
    lags_s: np.ndarray
    lag_cov: np.ndarray
    window_s: float
    window_se_s: float
    window_fitted: bool
    r2: float
    amp_z: float
    quality: float
    amps: np.ndarray
    offsets: np.ndarray
    n_readings: int
    n_clusters: int
    t_quantile: float
    centres_s: np.ndarray
    lag_window_corr: float = 0.0
    notes: list[str] = field(default_factory=list)


def decimate(obs: Observations, max_n: int) -> Observations:
    """At most ``max_n`` readings: counter intervals merged in runs of m contiguous ones (exact),
    power readings every m-th."""
    if obs.n <= max_n:
        return obs
    m = math.ceil(obs.n / max_n)
    if not obs.is_counter:
        return obs.subset(np.arange(0, obs.n, m))
    k = obs.n // m
    t = obs.t[:k * m].reshape(k, m)
    tp = obs.t_prev[:k * m].reshape(k, m)
    y = obs.y[:k * m].reshape(k, m)
    contiguous = np.all(tp[:, 1:] == t[:, :-1], axis=1)
    energy = np.sum(y * (t - tp), axis=1)
    t_new, tp_new = t[:, -1], tp[:, 0]
    return Observations(t_new, energy / (t_new - tp_new), tp_new).subset(contiguous)


def _rss(blocks_obs, blocks_tpl, lags, window) -> float:
    total = 0.0
    for obs, tpl, lag in zip(blocks_obs, blocks_tpl, lags):
        rss, _, _ = profile(regressor(tpl, obs, lag, window), obs.y)
        total += float(rss)
    return total


def _lag_grid(lag_range, step_s: float) -> np.ndarray:
    lo, hi = lag_range
    step = max(step_s, (hi - lo) / COARSE_MAX_LAGS)
    return np.arange(lo, hi + 0.5 * step, step)


def _coarse(blocks: list[Block], interval_s: float, lag_range, window_range, window_guess: float | None):
    """(per-block lags, window) to start the refinement from, and the lag step used."""
    coarse = [decimate(b.obs, COARSE_N) for b in blocks]
    tpls = [b.template for b in blocks]
    eff = max(interval_s, max((np.median(np.diff(o.t)) if o.n > 1 else interval_s) for o in coarse))
    lags = _lag_grid(lag_range, eff / 3.0)
    step = float(lags[1] - lags[0]) if len(lags) > 1 else eff
    if window_range is None:
        best = [lags[int(np.argmin(profile(regressor(t, o, lags, 0.0), o.y)[0]))] for o, t in zip(coarse, tpls)]
        return np.array(best), 0.0, step
    w0 = float(np.clip(window_guess if window_guess is not None else interval_s, *window_range))
    centres = []
    for o, t in zip(coarse, tpls):
        rss = profile(regressor(t, o, lags, w0), o.y)[0]
        centres.append(lags[int(np.argmin(rss))] + w0 / 2)
    lo_w, hi_w = window_range
    grid = np.unique(np.concatenate([lo_w + (hi_w - lo_w) * np.linspace(0, 1, WINDOW_GRID) ** 2,
                                     [w0, min(max(interval_s, lo_w), hi_w)]]))
    offsets = step * np.arange(-4, 5)
    total = np.zeros(len(grid))
    best_l = np.zeros((len(blocks), len(grid)))
    for bi, (o, t, c) in enumerate(zip(coarse, tpls, centres)):
        for wi, w in enumerate(grid):
            cand = np.clip(c - w / 2 + offsets, *lag_range)
            rss = profile(regressor(t, o, cand, w), o.y)[0]
            j = int(np.argmin(rss))
            total[wi] += rss[j]
            best_l[bi, wi] = cand[j]
    wi = int(np.argmin(total))
    return best_l[:, wi], float(grid[wi]), step


def _refine(blocks, obs_list, lags0, w0, step, lag_range, window_range, fixed_window: float = 0.0):
    tpls = [b.template for b in blocks]
    nb = len(blocks)
    fit_w = window_range is not None
    x0 = np.concatenate([lags0, [w0]]) if fit_w else np.asarray(lags0, dtype=float)
    bounds = [lag_range] * nb + ([window_range] if fit_w else [])

    def f(x):
        return _rss(obs_list, tpls, x[:nb], x[nb] if fit_w else fixed_window)

    if len(x0) == 1:
        lo, hi = max(lag_range[0], x0[0] - 2 * step), min(lag_range[1], x0[0] + 2 * step)
        res = optimize.minimize_scalar(lambda v: f(np.array([v])), bounds=(lo, hi), method="bounded",
                                       options={"xatol": step * 1e-5})
        return np.array([res.x]), fixed_window
    simplex = [x0]
    for i in range(len(x0)):
        xi = x0.copy()
        xi[i] = np.clip(xi[i] + step, *bounds[i])
        if xi[i] == x0[i]:
            xi[i] = np.clip(x0[i] - step, *bounds[i])
        simplex.append(xi)
    res = optimize.minimize(f, x0, method="Nelder-Mead", bounds=bounds,
                            options={"initial_simplex": np.array(simplex), "xatol": step * 1e-5,
                                     "fatol": 1e-12 * max(f(x0), 1e-300), "maxiter": 600 * len(x0)})
    x = res.x
    return x[:nb], (float(x[nb]) if fit_w else fixed_window)


def fit(blocks: list[Block], *, interval_s: float, lag_range: tuple[float, float],
        window_range: tuple[float, float] | None, window_guess: float | None = None) -> Fit:
    """Fit lag per block and one window (``window_range=None``: a counter, no window) to the
    readings; see the module docstring. ``interval_s`` is the stream's reporting interval."""
    blocks = [b for b in blocks if b.obs.n >= 4]
    if not blocks:
        raise ValueError("no block has enough readings to fit")
    lags0, w0, step = _coarse(blocks, interval_s, lag_range, window_range, window_guess)
    obs_list = [decimate(b.obs, REFINE_N) for b in blocks]
    lags, window = _refine(blocks, obs_list, lags0, w0, step, lag_range, window_range)
    result = _assess(blocks, obs_list, lags, window, window_range is not None, interval_s)
    if window_range is None:
        return result
    spread, jitter = phase_spread(blocks, lags, interval_s)
    if result.lag_window_corr <= DEGENERATE_CORR and spread >= max(MIN_PHASE_SPREAD, 3.0 * jitter):
        return result
    # Lag and window trade off: the edges met the reporting grid at (nearly) one phase, so each
    # ramp was sampled at one point and the readings fix only the lag plus a share of the window
    # (what seems to separate them is stamp jitter).
    why = (f"lag and window not separable: the template's edges fall at too few phases of the reporting "
           f"grid (spread {spread:.3f} of a period; a chip length that is a multiple of the period?)")
    if window_guess is not None and window_range[0] <= window_guess <= window_range[1]:
        lags, _ = _refine(blocks, obs_list, lags, window_guess, step, lag_range, None, fixed_window=window_guess)
        result = _assess(blocks, obs_list, lags, window_guess, False, interval_s)
        result.notes.append(why + "; the declared window is used")
        return result
    # no declared window: any split along the valley fits, so the lag is known to half a period
    half = 0.5 * interval_s
    tq = result.t_quantile if np.isfinite(result.t_quantile) and result.t_quantile > 0 else 2.0
    for bi in range(len(blocks)):
        result.lag_cov[bi, bi] = max(result.lag_cov[bi, bi], (half / tq) ** 2)
    result.window_se_s = max(result.window_se_s, interval_s / tq)
    result.quality *= 0.5
    result.notes.append(why + "; lag known to half a period, window not resolved")
    return result


def phase_spread(blocks, lags, interval_s: float) -> tuple[float, float]:
    """(circular spread, relative stamp jitter) of where the template's edges fall in the
    stream's reporting grid, both in periods. The spread is ``sqrt(-2 ln R) / (2 pi)`` of the
    phases (R: the mean resultant length; 0 when all edges meet the grid at one phase); the
    jitter is the standard deviation of the stamp intervals over sqrt(2)."""
    phases, jitter = [], []
    for b, lag in zip(blocks, lags):
        t = b.obs.t
        if len(t) < 3 or not np.isfinite(interval_s) or interval_s <= 0:
            continue
        d = np.diff(t)
        jitter.append(float(np.std(d[d < 1.5 * interval_s])) / np.sqrt(2) if np.any(d < 1.5 * interval_s) else 0.0)
        x, c = b.template.x, b.template.c
        slope = np.diff(c) / np.where(np.diff(x) > 0, np.diff(x), 1.0)
        edges = x[1:-1][np.abs(np.diff(slope)) > 1e-9 * max(np.max(np.abs(slope)), 1e-300)]
        at = edges + lag
        k = np.searchsorted(t, at)
        ok = k < len(t)
        phases.append(((t[k[ok]] - at[ok]) / interval_s) % 1.0)
    if not phases or not sum(len(p) for p in phases):
        return 1.0, 0.0
    ph = np.concatenate(phases)
    r = float(np.abs(np.mean(np.exp(2j * np.pi * ph))))
    spread = float(np.sqrt(-2.0 * np.log(max(r, 1e-12))) / (2 * np.pi))
    return spread, (float(np.median(jitter)) / interval_s if jitter else 0.0)


def _active_clusters(g: np.ndarray, cl: np.ndarray) -> int:
    """Clusters in which the template moves (its regressor spans a quarter of its full range)."""
    span = float(np.ptp(g)) if len(g) else 0.0
    if span <= 0:
        return 0
    _, inv = np.unique(cl, return_inverse=True)
    lo = np.full(inv.max() + 1, np.inf)
    hi = np.full(inv.max() + 1, -np.inf)
    np.minimum.at(lo, inv, g)
    np.maximum.at(hi, inv, g)
    return int(np.count_nonzero(hi - lo > 0.25 * span))


def _assess(blocks, obs_list, lags, window, fit_w, interval_s) -> Fit:
    nb = len(blocks)
    h = max(1e-7, 1e-4 * interval_s)
    cols_n = nb + (1 if fit_w else 0) + 2 * nb
    rows_j, rows_r, rows_c, edges_b = [], [], [], []
    amps, offsets, rss_t, syy_t = np.zeros(nb), np.zeros(nb), 0.0, 0.0
    cluster_base = 0
    for bi, (b, obs, lag) in enumerate(zip(blocks, obs_list, lags)):
        tpl = b.template
        g = regressor(tpl, obs, lag, window)
        rss, amp, off = profile(g, obs.y)
        amps[bi], offsets[bi] = float(amp), float(off)
        r = obs.y - (off + amp * g)
        rss_t += float(rss)
        syy_t += float(np.sum((obs.y - obs.y.mean()) ** 2))
        j = np.zeros((obs.n, cols_n))
        j[:, bi] = amp * (regressor(tpl, obs, lag + h, window) - regressor(tpl, obs, lag - h, window)) / (2 * h)
        if fit_w:
            wl, wh = max(window - h, 0.0), window + h
            j[:, nb] = amp * (regressor(tpl, obs, lag, wh) - regressor(tpl, obs, lag, wl)) / (wh - wl)
        j[:, nb + (1 if fit_w else 0) + 2 * bi] = 1.0
        j[:, nb + (1 if fit_w else 0) + 2 * bi + 1] = g
        mid = (0.5 * (obs.t + obs.t_prev) if obs.is_counter else obs.t - window / 2) - lag
        cl = np.searchsorted(b.cluster_bounds_s, mid)
        rows_j.append(j)
        rows_r.append(r)
        rows_c.append(cluster_base + cl)
        cluster_base += len(b.cluster_bounds_s) + 1
        edges_b.append(_active_clusters(g, cl))
    jac, res, cl = np.vstack(rows_j), np.concatenate(rows_r), np.concatenate(rows_c)
    _, cl = np.unique(cl, return_inverse=True)
    n_cl = int(cl.max()) + 1
    u = np.zeros((n_cl, cols_n))
    np.add.at(u, cl, jac * res[:, None])
    bread = np.linalg.pinv(jac.T @ jac)
    lw_corr = 0.0
    if fit_w:
        # the window's multiple correlation with all the blocks' lags (R^2 = 1 - 1/(V_ww (V^-1)_ww)):
        # each block may leave one combination free, so pairwise correlations do not show it
        v = bread[:nb + 1, :nb + 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            r2_w = 1.0 - 1.0 / (v[nb, nb] * np.linalg.pinv(v)[nb, nb])
        lw_corr = float(np.sqrt(np.clip(r2_w, 0.0, 1.0))) if np.isfinite(r2_w) else 1.0
    meat = u.T @ u
    cov = bread @ meat @ bread * (n_cl / max(n_cl - 1, 1))
    # A template known only to within its own resolution (a reference stream's cells) misplaces
    # each of its edges by a uniform error: sd = resolution / sqrt(12) per edge, averaged over
    # the edges the block has. The sandwich cannot see it (the model is flat inside a cell).
    for bi, b in enumerate(blocks):
        if b.template_resolution_s > 0:
            cov[bi, bi] += b.template_resolution_s ** 2 / (12.0 * max(edges_b[bi], 1))
    se = np.sqrt(np.maximum(np.diag(cov), 0.0))
    r2 = 1.0 - rss_t / syy_t if syy_t > 0 else float("nan")
    amp_idx = nb + (1 if fit_w else 0) + 2 * np.arange(nb) + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se[amp_idx] > 0, amps / se[amp_idx], np.where(amps > 0, np.inf, 0.0))
    amp_z = float(np.min(z))
    reacted = bool(np.isfinite(r2) and r2 >= R2_MIN and amp_z >= Z_MIN)
    quality = 0.0 if not np.isfinite(r2) else float(max(r2, 0.0) * np.clip((amp_z - Z_MIN) / Z_MIN, 0.0, 1.0))
    tq = float(stats.t.ppf(0.975, n_cl - 1)) if n_cl >= 2 else float("nan")
    return Fit(reacted=reacted, lags_s=np.asarray(lags, dtype=float), lag_cov=cov[:nb, :nb],
               window_s=float(window), window_se_s=float(se[nb]) if fit_w else 0.0, window_fitted=fit_w,
               r2=float(r2), amp_z=amp_z, quality=quality, amps=amps, offsets=offsets,
               n_readings=int(len(res)), n_clusters=n_cl, t_quantile=tq,
               centres_s=np.array([b.centre_s for b in blocks]), lag_window_corr=lw_corr)
