"""A stream's timing: how its receipt stamps relate to the true power they describe.

The run file's definition (README, *Run file*): a reading stamped ``t`` covers the true power over
``[t - lag - window, t - lag]``. ``lag`` may change linearly over the run when the meter's clock
drifts against the host's: ``lag(t) = lag_s + drift_ppm * 1e-6 * (t - drift_origin_s)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Lag, averaging window and clock drift of one stream (seconds, run timebase).

    ``lag_s`` is the lag at ``drift_origin_s``; ``drift_ppm`` its rate of change in parts per
    million (a meter whose readings arrive later and later as the run goes on has drift > 0).
    """

    lag_s: float = 0.0
    window_s: float = 0.0
    drift_ppm: float = 0.0
    drift_origin_s: float = 0.0

    def lag_at(self, t_s: float | np.ndarray) -> float | np.ndarray:
        """The lag (s) of a reading stamped ``t_s``."""
        return self.lag_s + self.drift_ppm * 1e-6 * (np.asarray(t_s, dtype=float) - self.drift_origin_s)

    def end_s(self, t_s: np.ndarray) -> np.ndarray:
        """The end of the interval each reading stamped ``t_s`` covers: ``t - lag(t)``."""
        t = np.asarray(t_s, dtype=float)
        b = self.drift_ppm * 1e-6
        return t * (1.0 - b) - (self.lag_s - b * self.drift_origin_s)

    def stamp_s(self, end_s: float | np.ndarray) -> float | np.ndarray:
        """The inverse of :meth:`end_s`: the stamp of a reading whose interval ends at ``end_s``."""
        b = self.drift_ppm * 1e-6
        return (np.asarray(end_s, dtype=float) + self.lag_s - b * self.drift_origin_s) / (1.0 - b)

    @property
    def usable(self) -> bool:
        """Finite lag and window (a stream that never reacted has a NaN lag)."""
        return all(math.isfinite(v) for v in (self.lag_s, self.window_s, self.drift_ppm, self.drift_origin_s))

    def as_dict(self) -> dict[str, float]:
        return {"lag_s": self.lag_s, "window_s": self.window_s, "drift_ppm": self.drift_ppm,
                "drift_origin_s": self.drift_origin_s}
