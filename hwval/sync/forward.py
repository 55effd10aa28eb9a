"""The forward model: what a stream reports given a template of the true power, a lag and a window.

Schema definition: a reading stamped ``t`` covers the true power over ``[t - lag - window,
t - lag]``. With the true power ``P(x) = offset + amp * s(x)``, where ``s`` is a known template
(the commanded 0/1 pulse levels, or a reference stream's power) with integral ``C(x)``:

- a power reading (``window_mean`` or ``instant``) is ``offset + amp * g``, with
  ``g = (C(t - lag) - C(t - lag - w)) / w`` (the template's mean over the window; an instant
  value is the limit ``w -> 0``, taken at :data:`MIN_WINDOW_S`);
- a counter, differenced between consecutive readings, is the mean power over
  ``[t_prev - lag, t - lag]``: ``g = (C(t - lag) - C(t_prev - lag)) / (t - t_prev)``.

``offset`` and ``amp`` are unknown (how much a meter sees of the host's load, its idle level):
for each (lag, window) they are fitted by linear least squares (:func:`profile`), so the
nonlinear search runs over lag and window only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The window used for ``w -> 0`` (an instant reading): far below any meter's resolution.
MIN_WINDOW_S = 1e-5


@dataclass
class Observations:
    """One stream's readings around one template block.

    ``t`` are receipt stamps (s), ``y`` the power (W; for a counter the differenced energy over
    ``[t_prev, t]`` divided by its duration), ``t_prev`` the start of each counter interval
    (None for power readings).
    """

    t: np.ndarray
    y: np.ndarray
    t_prev: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(len(self.t))

    @property
    def is_counter(self) -> bool:
        return self.t_prev is not None

    def subset(self, mask: np.ndarray) -> "Observations":
        return Observations(self.t[mask], self.y[mask], None if self.t_prev is None else self.t_prev[mask])


@dataclass(frozen=True)
class Template:
    """A template's integral ``C`` at knots ``x`` (piecewise linear between, constant outside)."""

    x: np.ndarray
    c: np.ndarray

    def integral(self, x: np.ndarray) -> np.ndarray:
        return np.interp(x, self.x, self.c)


def regressor(tpl: Template, obs: Observations, lag_s, window_s) -> np.ndarray:
    """``g`` for one (lag, window), or a grid: ``lag_s``/``window_s`` broadcast against a leading
    axis (shape (k,) gives g of shape (k, n))."""
    lag = np.asarray(lag_s, dtype=float)[..., None]
    end = obs.t - lag
    if obs.is_counter:
        start = obs.t_prev - lag
        width = obs.t - obs.t_prev
    else:
        w = np.maximum(np.asarray(window_s, dtype=float), MIN_WINDOW_S)[..., None]
        start = end - w
        width = w
    return (tpl.integral(end) - tpl.integral(start)) / width


def profile(g: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares ``y = offset + amp * g`` along the last axis, with ``amp >= 0`` (a meter
    does not read less when the host does more).

    Returns
    -------
    rss, amp, offset : arrays over the leading axes of ``g``
        Residual sum of squares (W^2) and the fitted coefficients; where the unconstrained slope
        is negative the fit is the mean alone (``amp = 0``).
    """
    gm = g.mean(axis=-1, keepdims=True)
    ym = y.mean()
    gc = g - gm
    yc = y - ym
    sgg = np.einsum("...i,...i->...", gc, gc)
    sgy = gc @ yc
    syy = float(yc @ yc)
    with np.errstate(divide="ignore", invalid="ignore"):
        amp = np.where(sgg > 0, sgy / sgg, 0.0)
    amp = np.maximum(amp, 0.0)
    rss = np.maximum(syy - amp * sgy, 0.0)
    offset = ym - amp * gm[..., 0]
    return rss, amp, offset


def predict(tpl: Template, obs: Observations, lag_s: float, window_s: float, amp: float, offset: float) -> np.ndarray:
    return offset + amp * regressor(tpl, obs, lag_s, window_s)
