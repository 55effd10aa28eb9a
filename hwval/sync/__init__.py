"""The synchroniser: each stream's lag, averaging window and clock drift, and alignment.

- :mod:`~hwval.sync.timing`: :class:`Timing` (lag, window, drift) and the forward model's time map.
- :mod:`~hwval.sync.resample` and :mod:`~hwval.sync.align`: energy-conserving resampling onto
  bins, :func:`align` (a run's streams, read by blocks) and :func:`align_arrays` (pure arrays).
"""

from hwval.sync.align import Aligned, align
from hwval.sync.resample import align_arrays
from hwval.sync.timing import Timing

__all__ = ["Aligned", "Timing", "align", "align_arrays"]
