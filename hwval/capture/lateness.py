"""How late polled reads start against their deadlines, in constant memory.

A capture may run for days at kHz rates, so lateness is not kept per read: a histogram over
log-spaced bins (1 us to 100 s, 8.5 % wide) gives the median and tail to within one bin, and the
exact count and maximum are kept beside it. The overhead benchmark reads it; nothing else pays.
"""

from __future__ import annotations

import bisect
import math

#: Upper edges of the bins in ns: 1 us * 10**(k/27), k = 0..216 (27 bins a decade, 8 decades).
_EDGES_NS = [1_000.0 * 10 ** (k / 27) for k in range(217)]


class LatenessStats:
    """Count, maximum and a log-binned histogram of read lateness in ns."""

    __slots__ = ("count", "max_ns", "_bins")

    def __init__(self) -> None:
        self.count = 0
        self.max_ns = 0
        self._bins = [0] * (len(_EDGES_NS) + 1)   # the last bin: beyond 100 s

    def add(self, late_ns: int) -> None:
        self.count += 1
        if late_ns > self.max_ns:
            self.max_ns = late_ns
        self._bins[bisect.bisect_left(_EDGES_NS, late_ns)] += 1

    def quantile_ns(self, q: float) -> float:
        """The upper edge of the bin holding quantile ``q`` (NaN without reads); never above the max."""
        if not self.count:
            return math.nan
        rank, seen = q * self.count, 0
        for i, n in enumerate(self._bins):
            seen += n
            if seen >= rank and n:
                edge = _EDGES_NS[i] if i < len(_EDGES_NS) else math.inf
                return float(min(edge, self.max_ns))
        return float(self.max_ns)

    @classmethod
    def pooled(cls, parts: list["LatenessStats"]) -> "LatenessStats":
        """One histogram of several sources' reads."""
        out = cls()
        for p in parts:
            out.count += p.count
            out.max_ns = max(out.max_ns, p.max_ns)
            out._bins = [a + b for a, b in zip(out._bins, p._bins)]
        return out
