"""One RAPL domain's counter, unwrapped: every read's difference taken in integer microjoules
modulo ``max_energy_range_uj + 1`` and summed exactly; power over the measured interval.

A counter that steps backwards by more than a wrap could explain (the increment a wrap would
imply exceeds the domain's plausible power over the elapsed time) is an ``error`` event and the
baseline restarts there; a read interval longer than the wrap time at maximum power is counted.

Sources: Intel SDM vol. 3B 15.10 (RAPL energy status, 32-bit counters, ~1 ms updates);
docs/measurement.md#rapl.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from hwval.runfile.schema import EventName
from hwval.sources.base import SourceContext
from hwval.sources.rapl.zones import RaplDomain

#: A wrap is plausible when the increment it implies is below this multiple of max power...
PLAUSIBLE_POWER_FACTOR = 2.0
#: ...over the elapsed interval plus this much: RAPL updates every ~1 ms, so two reads close
#: together may see one whole update's energy in a few microseconds.
UPDATE_SLACK_S = 0.002
#: Shortest read interval a power value is given for: two of RAPL's ~1 ms updates (Intel SDM
#: vol. 3B 15.10: the energy status counter updates about every 1 ms).
MIN_POWER_INTERVAL_S = 0.002
#: Reads of ``energy_uj`` are at most this long ("18446744073709551615\n" is 21 bytes).
READ_BYTES = 64


@dataclass
class DomainState:
    """Per-domain unwrapping state: all energy arithmetic in integer microjoules."""

    domain: RaplDomain
    fd: int
    modulus_uj: int
    max_power_w: float
    last_raw_uj: int | None = None
    last_t_ns: int = 0
    total_uj: int = 0
    wraps: int = 0

    @property
    def wrap_time_s(self) -> float:
        """Seconds the counter takes to wrap once at the domain's maximum power."""
        return self.modulus_uj / 1e6 / self.max_power_w


def pread_int(fd: int) -> int:
    # pread at offset 0 regenerates a sysfs attribute on every call, so one descriptor per
    # domain is kept open: a read costs one syscall instead of open + read + close.
    return int(os.pread(fd, READ_BYTES, 0))


def fold(state: DomainState, raw_uj: int, t_ns: int, ctx: SourceContext | None) -> dict[str, float]:
    """Fold one counter value read at ``t_ns`` into ``state``; return the reading."""
    if state.last_raw_uj is None:
        state.last_raw_uj, state.last_t_ns = raw_uj, t_ns
        return {"energy_j": state.total_uj / 1e6, "power_w": math.nan, "interval_s": math.nan}
    dt_ns = t_ns - state.last_t_ns
    dt_s = dt_ns / 1e9
    delta_uj = raw_uj - state.last_raw_uj
    if delta_uj < 0:
        wrapped_uj = delta_uj + state.modulus_uj
        limit_uj = PLAUSIBLE_POWER_FACTOR * state.max_power_w * (dt_s + UPDATE_SLACK_S) * 1e6
        if wrapped_uj > limit_uj:
            if ctx is not None:
                ctx.event(EventName.ERROR, state.domain.stream, kind="counter_backwards",
                          message=f"{state.domain.energy_path} went from {state.last_raw_uj} to "
                                  f"{raw_uj} uJ in {dt_s:.6f} s, which no wrap explains; baseline restarted",
                          previous_uj=state.last_raw_uj, value_uj=raw_uj)
            state.last_raw_uj, state.last_t_ns = raw_uj, t_ns
            return {"energy_j": state.total_uj / 1e6, "power_w": math.nan,
                    "interval_s": dt_s}
        delta_uj = wrapped_uj
        state.wraps += 1
    if dt_s > state.wrap_time_s and ctx is not None:
        # Counted (one event per second at most): a too-slow schedule would repeat it every read.
        ctx.count_error(
            state.domain.stream, "interval_exceeds_wrap_time",
            f"{dt_s:.3f} s between reads of {state.domain.zone} exceeds its wrap time "
            f"{state.wrap_time_s:.3g} s at {state.max_power_w:g} W: whole wraps may be lost")
    state.total_uj += delta_uj
    state.last_raw_uj, state.last_t_ns = raw_uj, t_ns
    # Over less than MIN_POWER_INTERVAL_S (a late read and the catch-up read right after it)
    # the counter moved by none or one of its ~1 ms updates: the quotient would read 0 W
    # or kilowatts. The energy is exact either way; that power is not reported.
    power_w = delta_uj / 1e6 / dt_s if dt_s >= MIN_POWER_INTERVAL_S else math.nan
    return {"energy_j": state.total_uj / 1e6, "power_w": power_w, "interval_s": dt_s}
