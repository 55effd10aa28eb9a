"""Agreement between a reference power series and a candidate's: pure array functions.

Every function takes two equal-length 1-D arrays of aligned bins, ``ref_w`` (the hardware
reference) and ``cand_w`` (the meter under test), in watts. A pair where either value is NaN
(a bin that touches a gap) is left out, so the functions can be applied to aligned bins as they
come. The difference is always ``d = cand - ref``: a positive bias means the candidate reads high.

Examples
--------
>>> import numpy as np
>>> ref = np.array([100.0, 120.0, 150.0, 130.0])
>>> cand = 0.9 * ref
>>> bias(ref, cand).bias_pct
-10.0
>>> round(linear_fit(ref, cand).slope, 6)       # ref = slope * cand + intercept
1.111111
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

#: Bins whose reference power is below this many watts (in absolute value) are skipped by MAPE:
#: a percentage of nearly nothing is noise. 1 W is below any plug's or analyzer's useful range
#: and below any whole-device idle power hwval compares against.
MAPE_MIN_REF_W = 1.0
#: Two-sided 95 % normal quantile, for the Bland-Altman limits of agreement.
LOA_Z = 1.96


def paired(ref_w, cand_w) -> tuple[np.ndarray, np.ndarray]:
    """The pairs where both values are finite, as float arrays.

    Raises ``ValueError`` when the inputs are not 1-D arrays of one length.
    """
    ref = np.asarray(ref_w, dtype=float)
    cand = np.asarray(cand_w, dtype=float)
    if ref.ndim != 1 or cand.ndim != 1:
        raise ValueError(f"expected 1-D arrays, got shapes {ref.shape} and {cand.shape}")
    if ref.shape != cand.shape:
        raise ValueError(f"ref_w and cand_w must have one length, got {len(ref)} and {len(cand)}")
    ok = np.isfinite(ref) & np.isfinite(cand)
    return ref[ok], cand[ok]


class BiasResult(NamedTuple):
    bias_w: float
    bias_pct: float


def bias(ref_w, cand_w) -> BiasResult:
    """Mean difference, in watts and as a share of the reference's mean.

    Parameters
    ----------
    ref_w, cand_w : array_like
        Aligned reference and candidate power (W), one value per bin.

    Returns
    -------
    BiasResult
        ``bias_w`` = mean(cand - ref); ``bias_pct`` = 100 * bias_w / mean(ref) (NaN when the
        reference's mean is 0). NaN for both when no pair is finite.

    Notes
    -----
    .. math:: b = \\frac{1}{n}\\sum_i (c_i - r_i), \\qquad b_\\% = 100\\,\\frac{b}{\\bar r}

    Examples
    --------
    >>> bias([10.0, 20.0], [11.0, 23.0])
    BiasResult(bias_w=2.0, bias_pct=13.333333333333334)
    """
    r, c = paired(ref_w, cand_w)
    if len(r) == 0:
        return BiasResult(np.nan, np.nan)
    b = float(np.mean(c - r))
    mean_r = float(np.mean(r))
    return BiasResult(b, 100.0 * b / mean_r if mean_r != 0 else np.nan)


class EnergyResult(NamedTuple):
    energy_ref_j: float
    energy_cand_j: float
    energy_error_pct: float


def energy(ref_w, cand_w, width_s) -> EnergyResult:
    """Energy of each series over the bins both cover, and the candidate's error.

    Parameters
    ----------
    ref_w, cand_w : array_like
        Aligned mean power per bin (W).
    width_s : float or array_like
        Bin width in seconds (one number, or one per bin).

    Returns
    -------
    EnergyResult
        ``energy_ref_j`` and ``energy_cand_j`` = sum(power * width) over the bins where both are
        finite (a gap in one never counts against the other); ``energy_error_pct`` =
        100 * (E_cand - E_ref) / E_ref (NaN when E_ref is 0).

    Notes
    -----
    .. math:: E = \\sum_i P_i\\,\\Delta t_i, \\qquad
              \\varepsilon_E = 100\\,\\frac{E_c - E_r}{E_r}

    Examples
    --------
    >>> energy([100.0, 100.0], [90.0, 95.0], 1.0)
    EnergyResult(energy_ref_j=200.0, energy_cand_j=185.0, energy_error_pct=-7.5)
    """
    ref = np.asarray(ref_w, dtype=float)
    cand = np.asarray(cand_w, dtype=float)
    paired(ref, cand)  # shape checks
    width = np.broadcast_to(np.asarray(width_s, dtype=float), ref.shape)
    ok = np.isfinite(ref) & np.isfinite(cand)
    e_r = float(np.sum(ref[ok] * width[ok]))
    e_c = float(np.sum(cand[ok] * width[ok]))
    return EnergyResult(e_r, e_c, 100.0 * (e_c - e_r) / e_r if e_r != 0 else np.nan)


def pearson_r(ref_w, cand_w) -> float:
    """Pearson's correlation coefficient (NaN when either series is constant or n < 2).

    Notes
    -----
    .. math:: r = \\frac{\\sum (r_i-\\bar r)(c_i-\\bar c)}
                       {\\sqrt{\\sum (r_i-\\bar r)^2 \\sum (c_i-\\bar c)^2}}

    Examples
    --------
    >>> round(pearson_r([1.0, 2.0, 3.0], [2.0, 4.0, 7.0]), 4)
    0.9934
    """
    r, c = paired(ref_w, cand_w)
    if len(r) < 2:
        return np.nan
    dr, dc = r - r.mean(), c - c.mean()
    den = np.sqrt(np.sum(dr * dr) * np.sum(dc * dc))
    return float(np.sum(dr * dc) / den) if den > 0 else np.nan


def spearman_rho(ref_w, cand_w) -> float:
    """Spearman's rank correlation: Pearson's r of the ranks (ties get their average rank).

    Notes
    -----
    .. math:: \\rho = r\\big(\\operatorname{rank}(r_i), \\operatorname{rank}(c_i)\\big)

    Examples
    --------
    >>> spearman_rho([1.0, 2.0, 3.0, 4.0], [1.0, 4.0, 9.0, 16.0])
    1.0
    """
    r, c = paired(ref_w, cand_w)
    if len(r) < 2:
        return np.nan
    return pearson_r(stats.rankdata(r), stats.rankdata(c))


def ccc(ref_w, cand_w) -> float:
    """Lin's concordance correlation coefficient, with population (1/n) moments.

    CCC is 1 only when the candidate equals the reference bin for bin; it falls with both
    scatter (like Pearson's r) and any bias or gain error (unlike it).

    Notes
    -----
    .. math:: \\rho_c = \\frac{2 s_{rc}}{s_r^2 + s_c^2 + (\\bar r - \\bar c)^2},\\quad
              s_{rc} = \\tfrac{1}{n}\\sum (r_i-\\bar r)(c_i-\\bar c)

    (Lin 1989, Biometrics 45:255-268.) NaN when both series are constant and equal (0/0), or
    n < 2.

    Examples
    --------
    >>> ccc([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    1.0
    >>> round(ccc([1.0, 2.0, 3.0], [2.0, 3.0, 4.0]), 4)   # perfect correlation, 1 W bias
    0.5714
    """
    r, c = paired(ref_w, cand_w)
    if len(r) < 2:
        return np.nan
    mr, mc = r.mean(), c.mean()
    s_rc = np.mean((r - mr) * (c - mc))
    den = np.mean((r - mr) ** 2) + np.mean((c - mc) ** 2) + (mr - mc) ** 2
    return float(2.0 * s_rc / den) if den > 0 else np.nan


def mae(ref_w, cand_w) -> float:
    """Mean absolute error, W: mean(|cand - ref|).

    Examples
    --------
    >>> mae([10.0, 20.0], [12.0, 17.0])
    2.5
    """
    r, c = paired(ref_w, cand_w)
    return float(np.mean(np.abs(c - r))) if len(r) else np.nan


def rmse(ref_w, cand_w) -> float:
    """Root mean square error, W: sqrt(mean((cand - ref)^2)).

    Examples
    --------
    >>> rmse([10.0, 20.0], [13.0, 16.0])
    3.5355339059327378
    """
    r, c = paired(ref_w, cand_w)
    return float(np.sqrt(np.mean((c - r) ** 2))) if len(r) else np.nan


class MapeResult(NamedTuple):
    mape_pct: float
    n_used: int
    n_skipped: int


def mape(ref_w, cand_w, min_ref_w: float = MAPE_MIN_REF_W) -> MapeResult:
    """Mean absolute percentage error over the bins whose reference is not near zero.

    Parameters
    ----------
    ref_w, cand_w : array_like
        Aligned power (W).
    min_ref_w : float
        Bins with ``|ref| < min_ref_w`` are skipped and counted (default 1 W).

    Returns
    -------
    MapeResult
        ``mape_pct`` = 100 * mean(|cand - ref| / |ref|) over the bins used (NaN when none is),
        ``n_used``, ``n_skipped``.

    Examples
    --------
    >>> mape([0.0, 100.0, 200.0], [5.0, 110.0, 180.0])
    MapeResult(mape_pct=10.0, n_used=2, n_skipped=1)
    """
    r, c = paired(ref_w, cand_w)
    use = np.abs(r) >= min_ref_w
    n_used = int(np.count_nonzero(use))
    value = float(100.0 * np.mean(np.abs(c[use] - r[use]) / np.abs(r[use]))) if n_used else np.nan
    return MapeResult(value, n_used, int(len(r) - n_used))


class LimitsOfAgreement(NamedTuple):
    bias_w: float
    sd_w: float
    low_w: float
    high_w: float
    proportional_slope: float
    proportional_intercept_w: float


def bland_altman(ref_w, cand_w, z: float = LOA_Z) -> LimitsOfAgreement:
    """Bland-Altman limits of agreement and proportional bias.

    Returns
    -------
    LimitsOfAgreement
        ``bias_w`` = mean(d), ``sd_w`` = std(d, ddof=1), ``low_w``/``high_w`` = bias -+ z * sd
        with d = cand - ref; ``proportional_slope`` and ``proportional_intercept_w``: the least
        squares line d = slope * m + intercept with m = (cand + ref) / 2. A slope far from 0 means
        the disagreement grows with power (a gain error), which a single bias hides.

    Notes
    -----
    .. math:: \\mathrm{LoA} = \\bar d \\pm 1.96\\, s_d,\\qquad
              s_d^2 = \\tfrac{1}{n-1}\\sum (d_i - \\bar d)^2

    (Bland & Altman 1986, Lancet i:307-310; proportional bias: Bland & Altman 1999, Stat.
    Methods Med. Res. 8:135-160.)

    Examples
    --------
    >>> loa = bland_altman([100.0, 200.0, 300.0], [101.0, 203.0, 305.0])
    >>> round(loa.bias_w, 3), round(loa.sd_w, 3), round(loa.proportional_slope, 4)
    (3.0, 2.0, 0.0198)
    """
    r, c = paired(ref_w, cand_w)
    n = len(r)
    if n == 0:
        return LimitsOfAgreement(*([np.nan] * 6))
    d = c - r
    b = float(d.mean())
    sd = float(np.std(d, ddof=1)) if n > 1 else np.nan
    m = (c + r) / 2.0
    slope, intercept = _ols(m, d)
    return LimitsOfAgreement(b, sd, b - z * sd, b + z * sd, slope, intercept)


class LinearFit(NamedTuple):
    slope: float
    intercept: float
    r2: float


def linear_fit(ref_w, cand_w) -> LinearFit:
    """Calibration line ``ref = slope * cand + intercept`` by ordinary least squares.

    Applying it to the candidate gives the best linear estimate of the reference: the slope is
    the gain to multiply the meter by and the intercept the offset (W) to add.

    Returns
    -------
    LinearFit
        ``slope``, ``intercept`` (W) and ``r2`` = Pearson's r squared. NaN when the candidate is
        constant or n < 2.

    Notes
    -----
    .. math:: \\hat\\beta = \\frac{\\sum (c_i-\\bar c)(r_i-\\bar r)}{\\sum (c_i-\\bar c)^2},\\qquad
              \\hat\\alpha = \\bar r - \\hat\\beta\\,\\bar c

    Examples
    --------
    >>> linear_fit([10.0, 20.0, 30.0], [4.0, 9.0, 14.0])
    LinearFit(slope=2.0, intercept=2.0, r2=1.0)
    """
    r, c = paired(ref_w, cand_w)
    slope, intercept = _ols(c, r)
    rr = pearson_r(r, c)
    return LinearFit(slope, intercept, rr * rr if np.isfinite(rr) else np.nan)


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares line y = slope * x + intercept (NaN when x is constant or n < 2)."""
    if len(x) < 2:
        return np.nan, np.nan
    mx, my = x.mean(), y.mean()
    sxx = np.sum((x - mx) ** 2)
    if sxx <= 0:
        return np.nan, np.nan
    slope = float(np.sum((x - mx) * (y - my)) / sxx)
    return slope, float(my - slope * mx)


#: The scalar metrics :func:`agreement` returns, in the order tables print them.
METRICS = ("bias_w", "bias_pct", "energy_ref_j", "energy_cand_j", "energy_error_pct", "pearson_r",
           "spearman_rho", "ccc", "mae_w", "rmse_w", "mape_pct", "loa_low_w", "loa_high_w",
           "proportional_slope", "slope", "intercept", "r2")


def agreement(ref_w, cand_w, width_s, min_ref_w: float = MAPE_MIN_REF_W) -> dict[str, float]:
    """Every metric of this module at once, keyed as the ``/analysis`` attributes are.

    Also ``n_bins`` (pairs used), ``mape_skipped_bins`` and ``loa_sd_w``.

    Examples
    --------
    >>> m = agreement([100.0, 150.0, 120.0], [100.0, 150.0, 120.0], 1.0)
    >>> m["bias_w"], m["ccc"], m["slope"]
    (0.0, 1.0, 1.0)
    """
    r, c = paired(ref_w, cand_w)
    b = bias(r, c)
    e = energy(ref_w, cand_w, width_s)
    mp = mape(r, c, min_ref_w)
    loa = bland_altman(r, c)
    fit = linear_fit(r, c)
    return {
        "n_bins": int(len(r)),
        "bias_w": b.bias_w, "bias_pct": b.bias_pct,
        "energy_ref_j": e.energy_ref_j, "energy_cand_j": e.energy_cand_j,
        "energy_error_pct": e.energy_error_pct,
        "pearson_r": pearson_r(r, c), "spearman_rho": spearman_rho(r, c), "ccc": ccc(r, c),
        "mae_w": mae(r, c), "rmse_w": rmse(r, c),
        "mape_pct": mp.mape_pct, "mape_skipped_bins": mp.n_skipped,
        "loa_low_w": loa.low_w, "loa_high_w": loa.high_w, "loa_sd_w": loa.sd_w,
        "proportional_slope": loa.proportional_slope,
        "slope": fit.slope, "intercept": fit.intercept, "r2": fit.r2,
    }
