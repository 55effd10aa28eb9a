"""Read lateness is kept in constant memory and its quantiles stay within one bin of the truth."""

from __future__ import annotations

import math

import numpy as np

from hwval.capture.lateness import LatenessStats


def test_quantiles_within_one_bin_and_memory_constant():
    rng = np.random.default_rng(7)
    late_ns = rng.lognormal(mean=np.log(200_000), sigma=1.0, size=50_000).astype(int)  # ~0.2 ms
    stats = LatenessStats()
    bins_before = len(stats._bins)
    for x in late_ns:
        stats.add(int(x))
    assert len(stats._bins) == bins_before  # nothing grows with the reads
    assert stats.count == late_ns.size and stats.max_ns == late_ns.max()
    for q in (0.5, 0.99):
        truth = float(np.quantile(late_ns, q))
        got = stats.quantile_ns(q)
        assert truth <= got <= truth * 10 ** (1 / 27) * 1.0001, (q, truth, got)  # one bin up, at most
    assert stats.quantile_ns(1.0) == late_ns.max()


def test_empty_and_pooled():
    assert math.isnan(LatenessStats().quantile_ns(0.5))
    a, b = LatenessStats(), LatenessStats()
    for x in (1_000_000,) * 3:
        a.add(x)
    b.add(50_000_000)
    both = LatenessStats.pooled([a, b])
    assert both.count == 4 and both.max_ns == 50_000_000
    assert 1_000_000 <= both.quantile_ns(0.5) < 1_100_000
