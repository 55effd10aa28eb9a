"""Confidence intervals for the agreement metrics by moving-block bootstrap.

Aligned power bins are strongly autocorrelated (a plateau lasts many bins), so resampling single
bins would treat n correlated bins as n independent ones and give intervals far too narrow. The
moving-block bootstrap (Kuensch 1989, Ann. Statist. 17:1217-1241) resamples runs of ``l``
consecutive bins instead: ``n // l`` blocks of length ``l`` plus one block of the remaining
``n mod l`` bins, each starting at a uniformly drawn position, concatenated to length ``n``.

**Block length**: the automatic rule of Politis & White (2004, Econometric Reviews 23:53-70,
with the correction of Patton, Politis & White 2009, Econometric Reviews 28:372-375) for the
circular/moving-block bootstrap, applied to the reference, the candidate and their difference;
the longest of the three is used, so that correlations and means alike keep their dependence.

**Interval**: the percentile interval (2.5 and 97.5 percentiles of 1000 resamples by default).
The generator is ``numpy.random.default_rng(seed)`` with :data:`DEFAULT_SEED` unless a seed is
given, so an analysis is reproducible; the seed is stored with every result.

Every metric except Spearman's rho is a function of per-bin sums (of r, c, r^2, c^2, rc, |d|,
d^2, ...), so a resample's metrics come from block sums of cumulative sums without ever building
the resampled series: O(number of blocks) per resample instead of O(n). Spearman's rho needs the
ranks within each resample; they come from the resample's weights (how many times each bin was
drawn) over the sorted order, without sorting again (see :func:`_spearman_resamples`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import stats

from hwval.analysis.metrics import LOA_Z, MAPE_MIN_REF_W, spearman_rho

DEFAULT_SEED = 20261127
DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
#: Fewer finite pairs than this and no interval is given (NaN pair): a handful of bins cannot
#: say how variable a statistic is.
MIN_BINS_FOR_CI = 10
#: Spearman's rho is resampled exactly while (finite bins x resamples) stays below this (1000
#: bins at 1000 resamples); beyond it its linearisation is resampled instead (O(blocks) per
#: resample instead of O(bins): a day of 1 s bins has 86 400, and each marker phase thousands).
#: At such sizes the two intervals have the same width to a few percent; the exact percentile
#: interval sits slightly lower, by the bootstrap's own small bias of rho.
EXACT_RANK_WORK = 1_000_000
#: How the block length is chosen by default (stored as ``bootstrap_block_rule``).
BLOCK_RULE = "Politis-White 2004/2009, longest of ref, cand and cand - ref"
#: Upper bound on the elements of one batch's temporary arrays (keeps memory flat).
_BATCH_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class BootstrapInfo:
    """How the intervals were computed (stored beside them as ``bootstrap_*`` attributes)."""

    method: str
    block_rule: str
    block_bins: int
    n_resamples: int
    seed: int
    confidence: float
    spearman: str = "exact (weighted ranks)"

    def attrs(self) -> dict:
        return {f"bootstrap_{k}": v for k, v in asdict(self).items()}


def politis_white_block_length(x) -> float:
    """Politis-White automatic block length for the moving/circular block bootstrap.

    Parameters
    ----------
    x : array_like
        The series (NaN values are dropped first).

    Returns
    -------
    float
        The estimated optimal block length in samples, in ``[1, min(3 sqrt(n), n / 3)]``;
        1 for a constant or very short series.

    Notes
    -----
    With sample autocovariances :math:`\\hat R(k)` and autocorrelations :math:`\\hat\\rho(k)`:
    :math:`\\hat m` is the smallest lag after which :math:`K_n = \\max(5, \\lceil\\sqrt{\\log_{10}
    n}\\rceil)` consecutive :math:`|\\hat\\rho|` stay below :math:`2\\sqrt{\\log_{10} n / n}`;
    :math:`M = 2\\hat m`; with the flat-top kernel :math:`\\lambda(t) = 1` for :math:`|t| \\le
    1/2`, :math:`2(1-|t|)` for :math:`1/2 < |t| \\le 1`, 0 beyond,

    .. math:: \\hat G = \\sum_{|k| \\le M} \\lambda(k/M)\\,|k|\\,\\hat R(k),\\quad
              \\hat g = \\sum_{|k| \\le M} \\lambda(k/M)\\,\\hat R(k),\\quad
              \\hat b = \\Big(\\frac{2 \\hat G^2}{\\tfrac43 \\hat g^2}\\Big)^{1/3} n^{1/3}

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> white = rng.normal(size=5000)
    >>> politis_white_block_length(white) < 5
    True
    >>> ar = np.zeros(5000)
    >>> for i in range(1, 5000):
    ...     ar[i] = 0.95 * ar[i - 1] + rng.normal()
    >>> politis_white_block_length(ar) > 20
    True
    """
    v = np.asarray(x, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n < 8:
        return 1.0
    v = v - v.mean()
    r0 = float(np.dot(v, v) / n)
    if r0 <= 0:
        return 1.0
    k_n = max(5, math.ceil(math.sqrt(math.log10(n))))
    m_max = min(math.ceil(math.sqrt(n)) + k_n, n - 1)
    b_max = math.ceil(min(3 * math.sqrt(n), n / 3))
    acov = _autocovariance(v, m_max)
    rho = acov / r0
    threshold = 2.0 * math.sqrt(math.log10(n) / n)
    small = np.abs(rho[1:]) < threshold  # small[j] is lag j + 1
    m_hat = None
    for m in range(0, m_max - k_n + 1):
        if small[m:m + k_n].all():
            m_hat = m
            break
    if m_hat is None:
        # Still correlated at the end of the search: use the whole searched range.
        m_hat = m_max - k_n
    big_m = min(2 * max(m_hat, 1), m_max)
    k = np.arange(1, big_m + 1)
    t = k / big_m
    lam = np.where(t <= 0.5, 1.0, 2.0 * (1.0 - t))
    g_hat = 2.0 * np.sum(lam * k * acov[1:big_m + 1])
    spec0 = r0 + 2.0 * np.sum(lam * acov[1:big_m + 1])
    if spec0 <= 0 or g_hat == 0:
        return float(b_max) if spec0 <= 0 else 1.0
    b = (2.0 * g_hat ** 2 / ((4.0 / 3.0) * spec0 ** 2)) ** (1.0 / 3.0) * n ** (1.0 / 3.0)
    return float(min(max(b, 1.0), b_max))


def _autocovariance(v: np.ndarray, max_lag: int) -> np.ndarray:
    """Sample autocovariances (1/n) at lags 0..max_lag of a demeaned series, by FFT."""
    n = len(v)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(v, size)
    acov = np.fft.irfft(f * np.conj(f), size)[:max_lag + 1] / n
    return acov


def block_length(*series) -> int:
    """The block length (bins) used for a comparison: the longest Politis-White estimate over
    ``series``, rounded up."""
    return max(1, max(math.ceil(politis_white_block_length(s)) for s in series))


# -- the moment form of every metric but Spearman's ----------------------------------------------

_COLUMNS = ("n", "r", "c", "rr", "cc", "rc", "absd", "dd", "ape_n", "ape", "er", "ec", "m", "mm", "md")
_I = {name: i for i, name in enumerate(_COLUMNS)}


def _moment_columns(ref: np.ndarray, cand: np.ndarray, width: np.ndarray, shift: float,
                    min_ref_w: float) -> np.ndarray:
    """Per-bin terms whose sums give every moment metric (zero rows for invalid bins).

    Values are shifted by ``shift`` (the reference's mean) so that sums of squares stay well
    conditioned; the shift-sensitive outputs (bias %, intercept, energy, MAPE) undo it.
    """
    ok = np.isfinite(ref) & np.isfinite(cand)
    r = np.where(ok, ref - shift, 0.0)
    c = np.where(ok, cand - shift, 0.0)
    d = c - r
    m = (r + c) / 2.0
    raw_r = np.where(ok, ref, 0.0)
    ape_ok = ok & (np.abs(raw_r) >= min_ref_w)
    out = np.empty((len(ref), len(_COLUMNS)))
    out[:, _I["n"]] = ok
    out[:, _I["r"]] = r
    out[:, _I["c"]] = c
    out[:, _I["rr"]] = r * r
    out[:, _I["cc"]] = c * c
    out[:, _I["rc"]] = r * c
    out[:, _I["absd"]] = np.abs(d)
    out[:, _I["dd"]] = d * d
    out[:, _I["ape_n"]] = ape_ok
    out[:, _I["ape"]] = np.where(ape_ok, np.abs(d) / np.where(ape_ok, np.abs(raw_r), 1.0), 0.0)
    out[:, _I["er"]] = np.where(ok, ref * width, 0.0)
    out[:, _I["ec"]] = np.where(ok, cand * width, 0.0)
    out[:, _I["m"]] = m
    out[:, _I["mm"]] = m * m
    out[:, _I["md"]] = m * d
    return out


def metrics_from_sums(sums: np.ndarray, shift: float) -> dict[str, np.ndarray]:
    """Moment metrics from column sums (one row per resample): the same numbers as
    :func:`hwval.analysis.metrics.agreement` gives on the resampled series (Spearman aside)."""
    s = np.atleast_2d(sums)
    with np.errstate(divide="ignore", invalid="ignore"):
        n = s[:, _I["n"]]
        mr, mc = s[:, _I["r"]] / n, s[:, _I["c"]] / n
        var_r = s[:, _I["rr"]] / n - mr * mr
        var_c = s[:, _I["cc"]] / n - mc * mc
        cov = s[:, _I["rc"]] / n - mr * mc
        b = mc - mr
        var_d = (s[:, _I["dd"]] - n * b * b) / (n - 1)
        sd_d = np.sqrt(np.maximum(var_d, 0.0))
        mm = s[:, _I["m"]] / n
        var_m = s[:, _I["mm"]] / n - mm * mm
        cov_md = s[:, _I["md"]] / n - mm * b
        pearson = cov / np.sqrt(var_r * var_c)
        slope = cov / var_c
        er, ec = s[:, _I["er"]], s[:, _I["ec"]]
        out = {
            "bias_w": b,
            "bias_pct": 100.0 * b / (mr + shift),
            "energy_ref_j": er,
            "energy_cand_j": ec,
            "energy_error_pct": 100.0 * (ec - er) / er,
            "pearson_r": pearson,
            "ccc": 2.0 * cov / (var_r + var_c + b * b),
            "mae_w": s[:, _I["absd"]] / n,
            "rmse_w": np.sqrt(s[:, _I["dd"]] / n),
            "mape_pct": 100.0 * s[:, _I["ape"]] / s[:, _I["ape_n"]],
            "loa_low_w": b - LOA_Z * sd_d,
            "loa_high_w": b + LOA_Z * sd_d,
            "proportional_slope": cov_md / var_m,
            "slope": slope,
            "intercept": (mr - slope * mc) + shift * (1.0 - slope),
            "r2": pearson * pearson,
        }
    return out


def _block_plan(n: int, block: int) -> list[int]:
    """Block lengths of one resample: ``n // block`` full blocks and the remainder."""
    k, rem = divmod(n, block)
    return [block] * k + ([rem] if rem else [])


def _draw_starts(rng: np.random.Generator, n: int, lengths: list[int], count: int) -> list[np.ndarray]:
    """Start positions per distinct block length: ``{length: (count, blocks) array}`` as a list
    aligned with the distinct lengths (full blocks first, then the remainder)."""
    out = []
    full = lengths[0]
    n_full = sum(1 for L in lengths if L == full)
    out.append((full, rng.integers(0, n - full + 1, size=(count, n_full))))
    if len(lengths) > n_full:
        rem = lengths[-1]
        out.append((rem, rng.integers(0, n - rem + 1, size=(count, 1))))
    return out


def agreement_intervals(ref_w, cand_w, width_s, *, n_resamples: int = DEFAULT_RESAMPLES,
                        seed: int | None = None, confidence: float = DEFAULT_CONFIDENCE,
                        block_bins: int | None = None,
                        min_ref_w: float = MAPE_MIN_REF_W) -> tuple[dict[str, list[float]], BootstrapInfo]:
    """Moving-block bootstrap percentile intervals of every metric of
    :func:`hwval.analysis.metrics.agreement`.

    Parameters
    ----------
    ref_w, cand_w : array_like
        Aligned power per bin (W), in time order; NaN bins (gaps) stay in place, so blocks keep
        their time structure, and simply contribute nothing.
    width_s : float or array_like
        Bin width(s), s.
    n_resamples, seed, confidence : optional
        Resamples (default 1000), generator seed (default :data:`DEFAULT_SEED`), interval level.
    block_bins : int, optional
        Block length; by default the Politis-White rule (see the module docstring).

    Returns
    -------
    intervals : dict
        ``{metric + "_ci": [lo, hi]}``; ``[nan, nan]`` when fewer than
        :data:`MIN_BINS_FOR_CI` pairs are finite or the metric is undefined in most resamples.
    info : BootstrapInfo

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> ref = 100 + np.cumsum(rng.normal(size=400))
    >>> cand = ref + 2 + rng.normal(size=400)
    >>> ci, info = agreement_intervals(ref, cand, 1.0)
    >>> ci["bias_w_ci"][0] < 2 < ci["bias_w_ci"][1]
    True
    """
    ref = np.asarray(ref_w, dtype=float)
    cand = np.asarray(cand_w, dtype=float)
    if ref.shape != cand.shape or ref.ndim != 1:
        raise ValueError(f"ref_w and cand_w must be 1-D of one length, got {ref.shape} and {cand.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    seed = DEFAULT_SEED if seed is None else int(seed)
    width = np.broadcast_to(np.asarray(width_s, dtype=float), ref.shape)
    ok = np.isfinite(ref) & np.isfinite(cand)
    n, n_ok = len(ref), int(np.count_nonzero(ok))
    names = [*metrics_from_sums(np.zeros((1, len(_COLUMNS))), 0.0), "spearman_rho"]
    rule = "given" if block_bins is not None else BLOCK_RULE
    if block_bins is None:
        block_bins = block_length(ref[ok], cand[ok], cand[ok] - ref[ok]) if n_ok >= 8 else 1
    block_bins = int(min(max(block_bins, 1), max(n, 1)))
    info = BootstrapInfo("moving-block, percentile interval", rule, block_bins, int(n_resamples), seed,
                         float(confidence))
    if n_ok < MIN_BINS_FOR_CI or n_resamples < 1:
        return {f"{name}_ci": [np.nan, np.nan] for name in names}, info

    rng = np.random.default_rng(seed)
    shift = float(np.mean(ref[ok]))
    cols = _moment_columns(ref, cand, width, shift, min_ref_w)
    exact_ranks = n_ok * n_resamples <= EXACT_RANK_WORK
    if not exact_ranks:
        # Spearman's rho through its linearisation: one more per-bin column, resampled like
        # the others (see _spearman_influence).
        psi = np.zeros(n)
        psi[ok] = _spearman_influence(ref[ok], cand[ok])
        cols = np.column_stack([cols, psi])
        rho_hat, psi_mean = spearman_rho(ref[ok], cand[ok]), float(np.mean(psi[ok]))
    info = replace(info, spearman="exact (weighted ranks)" if exact_ranks else "linearised (influence function)")
    csum = np.vstack([np.zeros((1, cols.shape[1])), np.cumsum(cols, axis=0)])
    lengths = _block_plan(n, block_bins)
    blocks = len(lengths)
    batch = max(1, _BATCH_ELEMENTS // max(blocks * cols.shape[1], 1))
    stats: dict[str, list[np.ndarray]] = {}
    done = 0
    while done < n_resamples:
        count = min(batch, n_resamples - done)
        plan = _draw_starts(rng, n, lengths, count)
        sums = np.zeros((count, cols.shape[1]))
        for length, starts in plan:
            sums += (csum[starts + length] - csum[starts]).sum(axis=1)
        for key, value in metrics_from_sums(sums[:, :len(_COLUMNS)], shift).items():
            stats.setdefault(key, []).append(value)
        if exact_ranks:
            stats.setdefault("spearman_rho", []).append(_spearman_resamples(ref, cand, ok, plan))
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                stats.setdefault("spearman_rho", []).append(
                    rho_hat + sums[:, -1] / sums[:, _I["n"]] - psi_mean)
        done += count
    alpha = (1.0 - confidence) / 2.0
    out = {}
    for key in names:
        values = np.concatenate(stats[key])
        finite = values[np.isfinite(values)]
        if len(finite) < 0.5 * len(values):
            out[f"{key}_ci"] = [np.nan, np.nan]
        else:
            lo, hi = np.quantile(finite, [alpha, 1.0 - alpha])
            out[f"{key}_ci"] = [float(lo), float(hi)]
    return out, info


def _spearman_resamples(ref: np.ndarray, cand: np.ndarray, ok: np.ndarray,
                        plan: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """Spearman's rho of each resample of ``plan``, from the resample's weights.

    A resample holds bin i ``w_i`` times. With the finite bins sorted once by value and grouped
    into runs of equal values, a group of total weight W after C bins of weight that sort
    before it gets the average rank C + (W + 1) / 2 (ties averaged, as ``rankdata`` does); the
    resample's rho is then the w-weighted Pearson correlation of those ranks, whose weighted
    mean is (N + 1) / 2 for N drawn finite bins. No resample is ever sorted.
    """
    n = len(ref)
    idx = np.flatnonzero(ok)
    order_r = np.argsort(ref[idx], kind="stable")
    order_c = np.argsort(cand[idx], kind="stable")
    # positions, in cand-sorted order, of the bins taken in ref-sorted order
    to_r_order = np.empty(len(idx), dtype=np.intp)
    to_r_order[order_c] = np.arange(len(idx))
    to_r_order = to_r_order[order_r]
    ties = [_tie_groups(ref[idx][order_r]), _tie_groups(cand[idx][order_c])]
    count = plan[0][1].shape[0]
    rows = max(1, _BATCH_ELEMENTS // max(n, 1))
    out = np.empty(count)
    for lo in range(0, count, rows):
        hi = min(lo + rows, count)
        b = hi - lo
        offsets = (np.arange(b) * (n + 1))[:, None]
        diff = np.zeros(b * (n + 1))
        for length, starts in plan:
            s = (starts[lo:hi] + offsets).ravel()
            diff += np.bincount(s, minlength=b * (n + 1))
            diff -= np.bincount(s + length, minlength=b * (n + 1))
        w = np.cumsum(diff.reshape(b, n + 1), axis=1)[:, idx]
        w_r = w[:, order_r]
        x = _weighted_ranks(w_r, ties[0])
        y = _weighted_ranks(w[:, order_c], ties[1])[:, to_r_order]
        with np.errstate(divide="ignore", invalid="ignore"):
            total = w_r.sum(axis=1)
            mean = ((total + 1.0) / 2.0)[:, None]
            x -= mean
            y -= mean
            wx = w_r * x
            out[lo:hi] = np.einsum("ij,ij->i", wx, y) / np.sqrt(
                np.einsum("ij,ij->i", wx, x) * np.einsum("ij,ij->i", w_r * y, y))
    return out


def _spearman_influence(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Empirical influence of each (finite) bin on Spearman's rho.

    With U = F(X) and V = G(Y) taken as mid-ranks / n (the mid-distribution functions, so ties
    count half), rho = (E[UV] - 1/4) / sqrt(var U var V) and the influence of a point (x, y) is

    .. math:: \\psi(x, y) = \\frac{F(x)G(y) + E[V\\,1\\{X \\succ x\\}] + E[U\\,1\\{Y \\succ y\\}]
              - 3E[UV]}{\\sqrt{\\operatorname{var} U \\operatorname{var} V}}

    where 1{X > x} counts ties as 1/2 (von Mises expansion; Hoeffding's projection of the rank
    statistic). Then rho* ~ rho + mean*(psi) - mean(psi) for a resample, to first order.
    """
    n = len(ref)
    out = []
    u = stats.rankdata(ref) / n
    v = stats.rankdata(cand) / n
    for values, other in ((ref, v), (cand, u)):
        order = np.argsort(values, kind="stable")
        sorted_values = values[order]
        suffix = np.concatenate([np.cumsum(other[order][::-1])[::-1], [0.0]])
        lo = np.searchsorted(sorted_values, values, side="left")
        hi = np.searchsorted(sorted_values, values, side="right")
        out.append((suffix[lo] + suffix[hi]) / (2.0 * n))
    uv = u * v
    den = math.sqrt(float(np.var(u) * np.var(v)))
    if den == 0:
        return np.zeros(n)
    return (uv + out[0] + out[1] - 3.0 * float(np.mean(uv))) / den


def _tie_groups(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Starts and sizes of the runs of equal values in a sorted array (None: no ties)."""
    new = np.empty(len(sorted_values), dtype=bool)
    new[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=new[1:])
    if new.all():
        return None
    starts = np.flatnonzero(new)
    return starts, np.diff(np.append(starts, len(sorted_values)))


def _weighted_ranks(w_sorted: np.ndarray, ties: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Average ranks, within each resample (row), of the bins in sorted order."""
    if ties is None:
        return np.cumsum(w_sorted, axis=1) - (w_sorted - 1.0) / 2.0
    starts, sizes = ties
    weight = np.add.reduceat(w_sorted, starts, axis=1)
    group_rank = np.cumsum(weight, axis=1) - (weight - 1.0) / 2.0
    return np.repeat(group_rank, sizes, axis=1)


def ratio_interval(num, den, *, block_bins: int, n_resamples: int = DEFAULT_RESAMPLES,
                   seed: int | None = None, confidence: float = DEFAULT_CONFIDENCE) -> list[float]:
    """Moving-block percentile interval of sum(num) / sum(den) over the bins where both are
    finite (``den = 1`` gives the mean of ``num``).

    Examples
    --------
    >>> x = np.r_[np.full(50, 10.0), np.full(50, 12.0)]
    >>> lo, hi = ratio_interval(x, np.ones(100), block_bins=10)
    >>> 10.0 <= lo <= 11.0 <= hi <= 12.0
    True
    """
    num = np.asarray(num, dtype=float)
    den = np.broadcast_to(np.asarray(den, dtype=float), num.shape)
    ok = np.isfinite(num) & np.isfinite(den)
    n = len(num)
    if np.count_nonzero(ok) < MIN_BINS_FOR_CI or n_resamples < 1:
        return [np.nan, np.nan]
    cols = np.column_stack([np.where(ok, num, 0.0), np.where(ok, den, 0.0)])
    csum = np.vstack([np.zeros((1, 2)), np.cumsum(cols, axis=0)])
    rng = np.random.default_rng(DEFAULT_SEED if seed is None else int(seed))
    lengths = _block_plan(n, int(min(max(block_bins, 1), n)))
    sums = np.zeros((n_resamples, 2))
    batch = max(1, _BATCH_ELEMENTS // len(lengths))
    for lo in range(0, n_resamples, batch):
        hi = min(lo + batch, n_resamples)
        for length, starts in _draw_starts(rng, n, lengths, hi - lo):
            sums[lo:hi] += (csum[starts + length] - csum[starts]).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = sums[:, 0] / sums[:, 1]
    values = values[np.isfinite(values)]
    if len(values) < n_resamples / 2:
        return [np.nan, np.nan]
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return [float(lo), float(hi)]
