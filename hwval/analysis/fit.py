"""Fitting a calibration record: what ``hwval calibrate`` computes.

The meter and the reference are aligned as in ``hwval analyze`` (main window, same bins); the
line ``reference_w = gain * meter_w + offset_w`` is fitted by least squares over the bins where
both are finite, with moving-block bootstrap intervals for gain and offset. The record is valid
over the meter power range the fit saw (the lowest and highest aligned bin).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hwval import __version__
from hwval.analysis import bootstrap
from hwval.analysis.calibration import CalibrationRecord, MeterDescription, sha256_of, utc_now
from hwval.analysis.compare import (AnalysisInputError, default_bin_s, grid, recorded_span,
                                    select_streams)
from hwval.analysis.fit_limits import MIN_FIT_BINS, MIN_RANGE_SHARE
from hwval.analysis.metrics import linear_fit, paired
from hwval.analysis.phases import workload_window


def fit_record(run, meter: str, reference: str, *, bin_s: float | None = None,
               n_resamples: int = bootstrap.DEFAULT_RESAMPLES, seed: int | None = None) -> CalibrationRecord:
    from hwval.sync import align

    if meter == reference:
        raise AnalysisInputError("--meter and --reference name the same stream")
    sel = select_streams(run, reference, [meter])
    if bin_s is None:
        bin_s = default_bin_s(run, reference, sel.attrs[reference])
    span = recorded_span(run, [reference, meter])
    w_start, w_stop, how = workload_window(run.events, span)
    edges = grid((max(span[0], w_start), min(span[1], w_stop)), w_start, bin_s)
    aligned = align(run, [reference, meter], edges_s=edges)
    ref_w = np.asarray(aligned.power_w[reference], dtype=float)
    met_w = np.asarray(aligned.power_w[meter], dtype=float)
    r, m = paired(ref_w, met_w)
    if len(r) < MIN_FIT_BINS:
        raise AnalysisInputError(f"only {len(r)} aligned bins of {meter} and {reference} in the window ({how}); "
                                 f"a calibration needs at least {MIN_FIT_BINS}")
    if np.ptp(m) < MIN_RANGE_SHARE * abs(np.mean(m)):
        raise AnalysisInputError(f"{meter} stays at {np.mean(m):.1f} W throughout: the gain cannot be told from "
                                 "the offset; calibrate on a run with idle and load")
    fit = linear_fit(r, m)
    intervals, info = bootstrap.agreement_intervals(ref_w, met_w, bin_s, n_resamples=n_resamples, seed=seed)
    residual = r - (fit.slope * m + fit.intercept)
    host = str(run.attrs.get("hostname", ""))
    return CalibrationRecord(
        meter=MeterDescription.from_stream(meter, sel.attrs[meter], host),
        reference=MeterDescription.from_stream(reference, sel.attrs[reference], host),
        gain=fit.slope, gain_ci=tuple(intervals["slope_ci"]),
        offset_w=fit.intercept, offset_w_ci=tuple(intervals["intercept_ci"]),
        r2=fit.r2, residual_rmse_w=float(np.sqrt(np.mean(residual ** 2))),
        valid_min_w=float(m.min()), valid_max_w=float(m.max()),
        n_bins=int(len(r)), bin_s=float(bin_s),
        synchronised=bool(aligned.synchronised[meter] and aligned.synchronised[reference]),
        run_id=str(run.attrs.get("run_id", "")), run_file=Path(run.path).name,
        run_sha256=sha256_of(run.path), window_start_s=float(edges[0]), window_stop_s=float(edges[-1]),
        created_utc=utc_now(), hwval_version=__version__,
        bootstrap={k.removeprefix("bootstrap_"): v for k, v in info.attrs().items()})
