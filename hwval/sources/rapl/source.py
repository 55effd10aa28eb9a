"""``rapl``: CPU package / core / uncore / DRAM / platform energy from the Linux powercap tree.

Spec: ``rapl:[ROOT][?period_s=0.01&domains=rapl_package_0,dram&max_power_w=500]``. ROOT is the
powercap folder (default ``/sys/class/powercap``; ``hwval emulate powercap`` prints a fake one).
One stream per domain (see :mod:`hwval.sources.rapl.zones` for the names), each with:

``energy_j``
    Cumulative energy since this stream's first reading, unwrapped: the counter difference of
    every read is taken in integer microjoules modulo ``max_energy_range_uj + 1`` (the counter
    holds 0..max) and summed exactly; joules are computed only when a value is reported.
``power_w``
    Mean power over the *measured* interval between this read and the previous one of the same
    domain (both instants taken on CLOCK_MONOTONIC right after each counter read), never over
    the nominal period: a late read would otherwise inflate the power by its lateness.
    ``semantics = window_mean``; ``window_s`` is the nominal period; the true window of every
    sample is in ``interval_s``. The first reading has no interval, so its power is NaN, and so
    is the power over an interval shorter than ``MIN_POWER_INTERVAL_S`` (2 ms: a catch-up read
    right after a late one, over which the counter moved by none or one ~1 ms update).
``interval_s``
    That measured interval in seconds.

Faults: a counter that steps backwards by more than a wrap could explain (the increment a wrap
would imply exceeds the domain's plausible power over the elapsed time) is recorded as an
``error`` event and the baseline restarts there: the step adds no phantom wrap (a counter that
really restarted lower loses nothing more), while a one-read dip (the next value back above the
old one) adds the dip's size, at most a few updates' energy. A read interval
longer than the time the counter takes to wrap at the domain's maximum power is counted in the
stream's ``error_counts`` (whole wraps may be lost); a nominal period too slow for the wrap time
is warned about at open (an ``error`` event with ``severity = warning`` and a stream note).
A domain whose read fails is skipped for that read (counted in ``error_counts``); when every
domain fails the read raises :class:`TransientError` (a gap).

On real hardware the kernel reports ``max_energy_range_uj`` = (2^32 - 1) energy units, so the
true modulus exceeds ``max + 1`` by up to one unit (~61 uJ): at most that much per wrap is lost,
about 2e-10 of the energy of one wrap.

Sources: Linux drivers/powercap/intel_rapl_common.c, Documentation/power/powercap/powercap.rst;
Intel SDM vol. 3B 15.10 (RAPL energy status, 32-bit counters); docs/measurement.md#rapl.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Mapping

from hwval.runfile.schema import EventName
from hwval.sources.base import (Key, SourceContext, SourceSpec, SourceUnavailable, StreamInfo,
                                TransientError)
from hwval.sources.options import DriverOptions, Option
from hwval.sources.rapl.counter import DomainState, fold, pread_int
from hwval.sources.rapl.permissions import check_readable, unreadable_fix
from hwval.sources.rapl.zones import DEFAULT_POWERCAP_ROOT, EMULATOR_MARKER, PowercapError, discover

DEFAULT_PERIOD_S = 0.01
#: Maximum power assumed for a domain whose zone has no ``constraint_*_max_power_uw``.
DEFAULT_MAX_POWER_W = 500.0

OPTIONS = DriverOptions("rapl", "Intel/AMD RAPL energy counters of a powercap tree (one stream per domain)",
                        "a powercap root (default /sys/class/powercap)", (
    Option("domains", str, "", "comma-separated stream names or domain kinds (package, core, dram...) to keep (empty: all)"),
    Option("max_power_w", float, DEFAULT_MAX_POWER_W,
           "largest plausible domain power: bounds wrap detection (an increment implying more is "
           "not taken for a wrap)", "W", gt=0),
))


class RaplSource:
    """Polled source over every RAPL domain of one powercap tree."""

    mode = "polled"

    def __init__(self, spec: SourceSpec, options: Mapping[str, Any] | None = None,
                 clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        opts = OPTIONS.parse(spec) if options is None else options
        self.spec = spec
        self.root = spec.resource or DEFAULT_POWERCAP_ROOT
        self.period_s = DEFAULT_PERIOD_S if spec.period_s is None else spec.period_s
        if not self.period_s > 0:
            raise ValueError(f"rapl: period_s must be > 0, got {self.period_s!r}")
        self.prefix = spec.name if spec.name and spec.name != "rapl" else "rapl"
        self.max_power_w = opts["max_power_w"]
        wanted = opts["domains"]
        self.wanted = {w.strip() for w in wanted.split(",") if w.strip()}
        self._clock = clock_ns
        self._states: list[DomainState] = []
        self.ctx: SourceContext | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self, ctx: SourceContext) -> list[StreamInfo]:
        self.close()
        self.ctx = ctx
        try:
            domains = discover(self.root, self.prefix)
        except PowercapError as exc:
            raise SourceUnavailable(f"malformed powercap tree under {self.root}: {exc}") from None
        if not domains:
            raise SourceUnavailable(
                f"RAPL is absent: no intel-rapl zones under {self.root} (not an Intel/AMD "
                "CPU with the intel_rapl_msr/intel_rapl_common driver, or a VM without RAPL); "
                "try 'sudo modprobe intel_rapl_msr', or capture without RAPL (--no-rapl)")
        if self.wanted:
            known = {d.stream for d in domains} | {d.kind for d in domains}
            unknown = sorted(self.wanted - known)
            if unknown:
                raise SourceUnavailable(
                    f"option 'domains' names {', '.join(unknown)}, not found under "
                    f"{self.root} (available: {', '.join(d.stream for d in domains)})")
            domains = [d for d in domains if d.stream in self.wanted or d.kind in self.wanted]
        unreadable = [(d, why) for d in domains if (why := check_readable(d)) is not None]
        if len(unreadable) == len(domains):
            raise SourceUnavailable(unreadable_fix(self.root, [why for _, why in unreadable]))
        skipped = {d.stream for d, _ in unreadable}
        infos = []
        for domain in domains:
            if domain.stream in skipped:
                continue
            try:
                fd = os.open(domain.energy_path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                self.close()
                raise SourceUnavailable(
                    unreadable_fix(self.root, [f"{domain.energy_path}: {exc}"])) from None
            state = DomainState(domain, fd, domain.max_energy_range_uj + 1,
                                 domain.max_power_w or self.max_power_w)
            self._states.append(state)
            infos.append(self._info(state, [why for d, why in unreadable]))
        for state in self._states:
            if self.period_s > state.wrap_time_s / 2:
                message = (f"period {self.period_s} s is too slow for {state.domain.zone}: the "
                           f"counter wraps every {state.wrap_time_s:.3g} s at "
                           f"{state.max_power_w:g} W; poll at least every "
                           f"{state.wrap_time_s / 2:.3g} s or wraps may be lost")
                ctx.event(EventName.ERROR, state.domain.stream, kind="period_too_slow", severity="warning",
                          message=message)
        return infos

    def _info(self, state: DomainState, unreadable: list[str]) -> StreamInfo:
        d = state.domain
        notes = list(d.notes)
        if self.period_s > state.wrap_time_s / 2:
            notes.append(f"warning: period {self.period_s} s vs wrap time {state.wrap_time_s:.3g} s "
                         f"at {state.max_power_w:g} W: wraps may be lost")
        if unreadable:
            notes.append("other domains were skipped as unreadable: " + "; ".join(unreadable))
        if d.parent_stream:
            notes.append(f"{d.kind} energy is part of {d.parent_stream}: do not add them up")
        if d.kind == "psys":
            notes.append("psys covers the whole platform (packages, DRAM and more): do not add "
                         "it to the other RAPL streams")
        identity = {
            "zone": d.zone, "domain": d.name, "package": d.package, "path": str(d.path),
            "max_energy_range_uj": d.max_energy_range_uj,
            "max_power_w": state.max_power_w,
            "max_power_source": "constraint_max_power_uw" if d.max_power_w else "default",
            "wrap_time_s_at_max_power": state.wrap_time_s,
            "part_of": d.parent_stream,
        }
        keys = (
            Key("power_w", "W", "window_mean", self.period_s,
                "mean power over the measured interval since the previous read (see interval_s); "
                "window_s is the nominal period"),
            Key("energy_j", "J", "counter", None,
                "energy since the first reading, unwrapped at max_energy_range_uj"),
            Key("interval_s", "s", None, None, "measured interval the power_w value covers"),
        )
        return StreamInfo(name=d.stream, kind="software", driver="rapl", resource=str(self.root),
                          scope=d.scope, period_s=self.period_s, keys=keys, identity=identity,
                          notes=tuple(notes), emulated=os.path.exists(os.path.join(self.root, EMULATOR_MARKER)))

    def close(self) -> None:
        states, self._states = self._states, []
        for state in states:
            try:
                os.close(state.fd)
            except OSError:
                pass  # already closed: nothing left to release

    # -- reading -----------------------------------------------------------------------------
    def read(self) -> Mapping[str, Mapping[str, float]]:
        out: dict[str, dict[str, float]] = {}
        failed: list[str] = []
        clock = self._clock
        for state in self._states:
            try:
                raw_uj = pread_int(state.fd)
            except (OSError, ValueError) as exc:
                # A torn or failed read of one domain: skip it this time, keep the baseline.
                failed.append(f"{state.domain.zone}: {exc}")
                if self.ctx is not None:
                    self.ctx.count_error(state.domain.stream, "read_failed", str(exc))
                continue
            out[state.domain.stream] = fold(state, raw_uj, clock(), self.ctx)
        if failed and len(failed) == len(self._states):
            raise TransientError("rapl: every domain failed to read: " + "; ".join(failed))
        return out

    @property
    def states(self) -> list[DomainState]:
        """Per-domain unwrapping state (for tests and diagnostics)."""
        return list(self._states)


def create(spec: SourceSpec) -> RaplSource:
    return RaplSource(spec, OPTIONS.parse(spec))
