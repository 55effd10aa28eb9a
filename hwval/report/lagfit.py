"""Per stream, its readings over one sync-pulse block beside what the fitted timing predicts.

The prediction is the synchroniser's own forward model (:mod:`hwval.sync.forward`): the
commanded template seen through the stored lag and window, with offset and amplitude fitted by
least squares, so the figure shows exactly what ``hwval sync`` fitted. Without pulses (lags
relative to a reference stream) the template is that stream's power over a stretch of the
workload, as in the synchroniser's fallback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hwval.runfile.schema import EventName
from hwval.sync.forward import Observations, Template, profile, regressor
from hwval.sync.observe import StreamSource
from hwval.sync.template import TemplateError, pulse_blocks

#: Readings drawn per stream at most (a RAPL counter at 100 Hz over a block is thousands).
MAX_POINTS = 1500
#: Without pulses: this long a stretch of the workload is drawn.
RELATIVE_STRETCH_S = 40.0


@dataclass
class LagFit:
    stream: str
    reference: str
    absolute: bool
    lag_s: float
    lag_ci_s: tuple[float, float]
    window_s: float
    quality: float
    method: str
    t_s: np.ndarray            # reading stamps
    measured_w: np.ndarray
    model_w: np.ndarray        # at the fitted lag
    model_lo_w: np.ndarray     # at the ends of the lag interval
    model_hi_w: np.ndarray
    command_t_s: np.ndarray    # the template's level (0..1) as steps, for the shading
    command_level: np.ndarray


def _thin(obs: Observations) -> Observations:
    if obs.n <= MAX_POINTS:
        return obs
    keep = np.zeros(obs.n, dtype=bool)
    keep[np.linspace(0, obs.n - 1, MAX_POINTS).astype(int)] = True
    return obs.subset(keep)


def _model(tpl: Template, obs: Observations, lag_s: float, window_s: float):
    g = regressor(tpl, obs, lag_s, window_s)
    _, amp, offset = profile(g, obs.y)
    return float(offset) + float(amp) * g


def _fit_view(name, sync, tpl, obs, command_t, command_level) -> LagFit | None:
    lag, window = float(sync.get("lag_s", math.nan)), float(sync.get("window_s", 0.0) or 0.0)
    if not math.isfinite(lag) or obs.n < 4:
        return None
    window = window if math.isfinite(window) else 0.0
    ci = sync.get("lag_ci_s", [math.nan, math.nan])
    lo, hi = (float(ci[0]), float(ci[1])) if len(ci) == 2 else (math.nan, math.nan)
    obs = _thin(obs)
    best = _model(tpl, obs, lag, window)
    lo_m = _model(tpl, obs, lo, window) if math.isfinite(lo) else best
    hi_m = _model(tpl, obs, hi, window) if math.isfinite(hi) else best
    return LagFit(name, str(sync.get("reference", "")), bool(sync.get("absolute", False)), lag, (lo, hi), window,
                  float(sync.get("quality", math.nan)), str(sync.get("method", "")), obs.t, obs.y, best,
                  lo_m, hi_m, command_t, command_level)


def lag_fits(run, sync: dict[str, dict]) -> tuple[list[LagFit], str]:
    """One :class:`LagFit` per synchronised stream, and a sentence saying what was drawn."""
    events = run.events
    try:
        blocks = pulse_blocks(events)
    except TemplateError:
        blocks = []
    out = []
    if blocks and any(a.get("method") == "pulse_fit" for a in sync.values()):
        b = blocks[0]
        x, c = b.knots
        tpl = Template(x, c)
        cmd_t = np.array([*b.chip_t_s, b.end_s])
        cmd_level = np.array([*b.levels, 0], dtype=float)
        for name, a in sync.items():
            if a.get("method") != "pulse_fit" or name not in run.stream_names:
                continue
            lag = float(a.get("lag_s", math.nan))
            window = float(a.get("window_s", 0.0) or 0.0)
            if not math.isfinite(lag):
                continue
            src = StreamSource.open(run, name, events)
            span = b.end_s - b.start_s
            obs = src.observations(b.start_s - 0.15 * span, b.end_s + lag + max(window, 0.0) + 0.15 * span)
            fit = _fit_view(name, a, tpl, obs, cmd_t, cmd_level)
            if fit is not None:
                out.append(fit)
        return out, (f"the first sync-pulse block ({b.pattern or 'pattern'}, {len(b.levels)} chips of "
                     f"{b.chip_s:g} s); grey: the commanded load")
    refs = {str(a.get("reference")) for a in sync.values() if a.get("method") == "stream_fit"}
    if len(refs) != 1:
        return [], "no stream was fitted (no sync pulses and no reference stream)"
    ref = refs.pop()
    if ref not in run.stream_names:
        return [], f"the sync reference {ref!r} is not a stream of this run"
    ref_src = StreamSource.open(run, ref, events)
    start = next((e.t for e in events if e.name == EventName.WORKLOAD_START and not e.stream), ref_src.first_last_s[0])
    lo, hi = start, min(start + RELATIVE_STRETCH_S, ref_src.first_last_s[1])
    for name, a in sync.items():
        if a.get("method") != "stream_fit" or name not in run.stream_names:
            continue
        src = StreamSource.open(run, name, events)
        tpl, _ = ref_src.reference_template(lo - 5.0, hi + 5.0)
        fit = _fit_view(name, a, tpl, src.observations(lo, hi), np.empty(0), np.empty(0))
        if fit is not None:
            out.append(fit)
    return out, (f"{hi - lo:.0f} s of the workload; the model is {ref}'s own power seen through each stream's "
                 f"lag and window (lags relative to {ref}: the run has no sync pulses)")
