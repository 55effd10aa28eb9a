"""The timebase: host CLOCK_MONOTONIC in integer nanoseconds, and a periodic scheduler with
absolute deadlines.

Deadlines are ``start_ns + k * period_ns``: a late wake-up never shifts later deadlines, so the
schedule does not drift however long the capture runs (sleeping ``period`` after each read would
accumulate every read's duration and every wake-up's latency).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

now_ns = time.monotonic_ns

#: Longest single sleep, so a stop request is noticed within this time.
STOP_CHECK_S = 0.05


@dataclass
class ScheduleStats:
    """Counts kept by :class:`PeriodicSchedule` (read them after the loop)."""

    ticks: int = 0
    #: Deadlines skipped because the previous read ran past them.
    missed: int = 0


class PeriodicSchedule:
    """Yield absolute deadlines every ``period_s`` from ``start_ns`` until ``stop`` is set.

    ``wait()`` sleeps until the next deadline and returns it (ns), or ``None`` once ``stop`` is
    set. When a caller is late by one or more whole periods, the deadlines that already passed
    are skipped (counted in ``stats.missed``) instead of being served in a burst, because a burst
    of back-to-back reads would give a meter's update no time to change.
    """

    def __init__(self, period_s: float, stop: threading.Event, start_ns: int | None = None) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s must be > 0, got {period_s!r}")
        self.period_ns = max(1, round(period_s * 1e9))
        self.stop = stop
        self._next_ns = now_ns() if start_ns is None else start_ns
        self.stats = ScheduleStats()

    def wait(self) -> int | None:
        deadline = self._next_ns
        now = now_ns()
        if now > deadline + self.period_ns:
            behind = (now - deadline) // self.period_ns
            self.stats.missed += behind
            deadline += behind * self.period_ns
        # time.sleep is clock_nanosleep on CLOCK_MONOTONIC: far cheaper per wake-up than
        # Event.wait (a lock and a condition each time), which matters at kHz rates. Sleeping in
        # slices of at most STOP_CHECK_S keeps stop responsive.
        while True:
            if self.stop.is_set():
                return None
            remaining_s = (deadline - now_ns()) / 1e9
            if remaining_s <= 0:
                break
            time.sleep(min(remaining_s, STOP_CHECK_S))
        self._next_ns = deadline + self.period_ns
        self.stats.ticks += 1
        return deadline
