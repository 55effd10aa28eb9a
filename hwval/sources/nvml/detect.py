"""How often a GPU's driver refreshes a reading: a burst of back-to-back reads at open, and the
smallest interval between two neighbouring well-timed value changes.

Sources: docs/measurement.md#nvml (update period detection, as Zeus does it).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import pynvml

#: The update-period burst lasts at most this many times ``detect_s`` (it stops as soon as
#: every GPU has two neighbouring well-timed changes): room for a loaded machine, a bound for
#: a GPU whose value does not change (an idle counter at 0 W).
DETECT_LIMIT_FACTOR = 8


def smallest_change_interval_s(changes: list[tuple[int, int]], widths_ns: list[int]) -> float | None:
    """Smallest interval between two neighbouring well-timed changes, in seconds (None when no
    two neighbouring changes are well-timed).

    ``changes`` are ``(start of the read before, end of the read that saw the change)`` in ns: the
    change happened inside. It counts as well-timed when that bracket is at most three times the
    median bracket (+50 us); its time is the bracket's middle.

    Each update changes the value, so no update falls between two neighbouring changes, and a
    well-timed bracket, far shorter than a period, holds one update: two neighbouring well-timed
    changes are exactly one period apart. Changes further apart give no more than an upper
    bound: on a loaded machine a held-back read between them (a wide bracket) may have seen two
    updates as one change (20 ms updates read as 3 in 2 changes would give 30 ms).
    """
    if len(changes) < 2 or not widths_ns:
        return None
    tight_ns = 3 * statistics.median(widths_ns) + 50_000
    tight = [(i, (lo + hi) // 2) for i, (lo, hi) in enumerate(changes) if hi - lo <= tight_ns]
    intervals = [b - a for (i, a), (j, b) in zip(tight, tight[1:]) if j == i + 1]
    return min(intervals) / 1e9 if intervals else None


@dataclass
class _Probe:
    """What the burst has seen of one reading."""

    read: Callable[[], Any]
    #: ``(start of the read before, end of the read that saw the change)`` per change, in ns.
    changes: list[tuple[int, int]] = field(default_factory=list)
    #: Width of every read bracket (start of the read before to end of this read), in ns.
    widths_ns: list[int] = field(default_factory=list)
    last_value: Any = None
    last_start_ns: int | None = None

    def period_s(self) -> float | None:
        return smallest_change_interval_s(self.changes, self.widths_ns)


@dataclass(frozen=True)
class Detected:
    """The update period of one reading (``None`` when not pinned down) and what it rests on."""

    period_s: float | None
    changes: int


def detect_update_periods(reads: Mapping[str, Callable[[], Any]], detect_s: float,
                          clock_ns: Callable[[], int]) -> tuple[dict[str, Detected], float]:
    """Read every ``reads[name]()`` back to back for ``detect_s``; per name the update period.

    A change happened between the start of the read before it and the end of the read that
    saw it. Only changes pinned down that tightly (within a few typical read gaps) are used:
    a read the scheduler delayed by milliseconds would otherwise make an interval look short.
    On a loaded machine most changes can fall in such delayed reads, leaving no two
    neighbouring well-timed ones after ``detect_s``: the burst then goes on, ``detect_s`` at a
    time, until every reading has them or :data:`DETECT_LIMIT_FACTOR` times ``detect_s`` have
    passed (then the period is not detected, rather than guessed). Returns the periods and the
    burst's length in seconds.
    """
    probes = {name: _Probe(read) for name, read in reads.items()}
    detect_ns = int(detect_s * 1e9)
    start = clock_ns()
    for burst in range(1, DETECT_LIMIT_FACTOR + 1):
        _burst(probes.values(), start + burst * detect_ns, clock_ns)
        if all(p.period_s() is not None for p in probes.values()):
            break
    burst_s = (clock_ns() - start) / 1e9
    return {name: Detected(p.period_s(), len(p.changes)) for name, p in probes.items()}, burst_s


def _burst(probes: Iterable[_Probe], until_ns: int, clock_ns: Callable[[], int]) -> None:
    """Read every probe back to back until ``until_ns``, adding to each probe's changes."""
    while clock_ns() < until_ns:
        for probe in probes:
            # The value was sampled somewhere between these two instants; a change happened
            # between the start of the previous read and the end of this one.
            before = clock_ns()
            try:
                value = probe.read()
            except pynvml.NVMLError:
                continue  # a failed read during detection only costs one sample
            after = clock_ns()
            if probe.last_start_ns is not None:
                probe.widths_ns.append(after - probe.last_start_ns)
                if value != probe.last_value:
                    probe.changes.append((probe.last_start_ns, after))
            probe.last_value, probe.last_start_ns = value, before
