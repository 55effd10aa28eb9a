"""Yokogawa WT300E family (WT310/WT310E/WT310HC/WT332/WT333) over VISA: the MLPerf / SPEC
reference analyzer, driven the way the MLPerf tooling drives it.

``-m 'wt300:TCPIP::10.0.0.5::INSTR?update_s=0.25&ranging=pass&integrate=true'``

Sequence at open: ``*IDN?`` (must match a ``wt300`` profile in ``hwval/sources/visa/profiles``), the
profile's setup (``*CLS``, ``:STAT:QMES ON``, ``:COMM:HEAD OFF``, ``:COMM:VERB ON``,
``:SYST:COMM:COMM WT300``, ``:NUM:FORM ASCII``), ``:NUM:NORM:NUM n`` and
``:NUM:NORM:ITEM<x> <func>,<elem>`` for U, I, P (and WH when integrating), the update rate
(``:SAMP:RATE``, falling back to ``:RATE``), ranges, integration, the profile's ``after_setup``
(the UPD transition filter), then ``:STAT:ERR?`` until empty; every SCPI message is recorded.

Reading: polled at a quarter of the update interval. With the transition filter on the falling
edge of UPD (``:STAT:FILT1 FALL``: UPD is high *while* the numeric data are being updated, so
its fall means new data are ready; yoko-tool waits on the same edge) ``:STAT:EESR?`` bit 0 says
whether an update completed since the last poll; only then ``:NUM:NORM:VAL?`` is read, so each
update is read once and ``read()`` returns ``{}`` in between. One race is left: an update that
completes between ``:STAT:EESR?`` and ``:NUM:NORM:VAL?`` is read early and flagged again at the
next poll. A poll that answered 0 after the last read proves the flag is for a newer update;
without one (the first poll after a read already flagged) the values are read again and kept
only if the reply differs from the previous one. ``power_w`` is the mean over the update
interval ending at the update (``window_mean``, ``window_s`` = interval).

Options (besides ``backend``, ``profile``, ``timeout_s``):

- ``update_s`` update interval (one of the profile's, default its ``default_s``);
- ``element`` input element (1..3) or ``SIGMA`` (default 1);
- ``ranging`` ``auto`` (default), ``fixed`` (with ``voltage_range_v`` and ``current_range_a``) or
  ``pass``: MLPerf-style ranging pass, auto ranges for ``ranging_s`` seconds (default 10), then
  fixed V range = smallest range >= max voltage seen, I range = smallest range >= 1.1 x max
  current seen (a ``ranging`` event records the choice);
- ``integrate`` (bool): reset and start the instrument's integrator (after a ranging pass, if
  any), report ``energy_j`` from its WH, and at the end of the capture stop it and record the
  instrument's own energy in an ``integration`` event (``energy_j``, ``started_ns``,
  ``stopped_ns``).

``NAN``/``9.91E+37`` (no data) and ``INF``/``9.9E+37`` (over-range) become NaN in the reading and
are counted (``no_data``, ``overload``); the error queue is read after each anomaly.
``power_uncertainty_w`` = profile accuracy (% of reading + % of range, range = V range x I range).

Sources: Yokogawa WT310E/WT310HC/WT330 user's manual (communication commands); intel/yoko-tool
``yokolibs/_wt310.py``; mlcommons/power-dev (``power_meter_sampling``, ranging practice).
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

from hwval.sources.base import (Key, SourceContext, SourceError, SourceSpec, SourceUnavailable,
                                StreamInfo)
from hwval.sources.options import DriverOptions, Option
from hwval.sources.visa.codec import (MalformedReply, format_number, parse_number, parse_numbers,
                                      pick_range, power_uncertainty_w)
from hwval.sources.visa.scpi import COMMON_OPTIONS, ScpiSession
from hwval.runfile.schema import EventName

RANGING_MODES = ("auto", "fixed", "pass")
OPTIONS = DriverOptions("wt300", "a Yokogawa WT300/WT300E power analyzer over VISA (SCPI)",
                        "a VISA resource (TCPIP::10.0.0.5::INSTR, USB0::...)", (
    *COMMON_OPTIONS,
    Option("update_s", float, None, "update interval to set (one of the profile's)", "s", gt=0,
           default_text="the profile's"),
    Option("element", str, "1", "input element to read (SIGMA: the sum)",
           choices=("1", "2", "3", "SIGMA")),
    Option("integrate", bool, False, "reset and start the instrument's integrator, report "
           "energy_j from it, and record its own total at the end"),
    Option("ranging", str, "auto", "auto: autorange; fixed: the given ranges; pass: autorange for "
           "ranging_s, then fix the smallest ranges above the peaks seen (current x 1.1)",
           choices=RANGING_MODES),
    Option("ranging_s", float, 10.0, "ranging=pass: length of the ranging run", "s", gt=0),
    Option("voltage_range_v", float, None, "ranging=fixed: voltage range", "V", gt=0),
    Option("current_range_a", float, None, "ranging=fixed: current range", "A", gt=0),
))
#: MLPerf practice: current range at least 1.1 x the largest current seen in the ranging run.
CURRENT_HEADROOM = 1.1


class Wt300Source:
    mode = "polled"

    def __init__(self, spec: SourceSpec, options: Mapping[str, Any] | None = None) -> None:
        opts = OPTIONS.parse(spec) if options is None else options
        self.spec = spec
        self.name = spec.name
        self.session = ScpiSession("wt300", spec.resource, opts)
        self.update_s: float | None = opts["update_s"]
        self.element = opts["element"]
        self.integrate = opts["integrate"]
        self.ranging = opts["ranging"]
        self.fixed_v = opts["voltage_range_v"]
        self.fixed_a = opts["current_range_a"]
        if self.ranging == "fixed" and (self.fixed_v is None or self.fixed_a is None):
            raise ValueError("wt300: ranging=fixed needs voltage_range_v=V and current_range_a=A")
        if self.ranging != "fixed" and (self.fixed_v is not None or self.fixed_a is not None):
            raise ValueError("wt300: voltage_range_v/current_range_a need ranging=fixed")
        self.ranging_s = opts["ranging_s"]
        self.period_s = spec.period_s
        self.ctx: SourceContext | None = None
        # State that survives a reconnect (the instrument keeps integrating meanwhile).
        self.energy_origin_j: float | None = None
        self.integ_started_ns: int | None = None
        self.integ_start_halfwidth_ns = 0
        self.ranges: tuple[float, float] | None = None  # fixed (V, A) once known
        self.pass_started_ns: int | None = None
        self.pass_max = [0.0, 0.0]
        self.items: list[tuple[str, str]] = []
        #: The last :NUM:NORM:VAL? reply, and whether a poll answered "no new update" since.
        self.last_reply: str | None = None
        self.clear_seen = True
        #: Energy of earlier integrator runs (the instrument lost its integrator across a
        #: reconnect and was restarted): added so that energy_j stays one cumulative counter.
        self.energy_carry_j = 0.0
        self.last_energy_j = 0.0

    # -- open ---------------------------------------------------------------------------------
    def open(self, ctx: SourceContext) -> list[StreamInfo]:
        self.ctx = ctx
        session = self.session
        profile = session.connect(ctx, self.name)
        update_s = self.update_s if self.update_s is not None else profile.default_update_s
        if not any(math.isclose(update_s, r, rel_tol=1e-6) for r in profile.update_intervals_s):
            session.close()
            raise SourceUnavailable(
                f"wt300: update_s={update_s:g} is not one of {profile.name}'s update intervals "
                f"({', '.join(f'{r:g}' for r in profile.update_intervals_s)} s)")
        self.update_s = update_s
        if self.period_s is None:
            self.period_s = max(update_s / 4.0, 0.02)
        if self.ranging == "fixed":
            self._check_range(self.fixed_v, profile.voltage_ranges_v, "voltage_range_v", "V")
            self._check_range(self.fixed_a, profile.current_ranges_a, "current_range_a", "A")
        try:
            self._configure(profile)
        except SourceUnavailable:
            session.close()
            raise
        functions = profile.extra.get("functions", {})
        keys = [
            Key("power_w", "W", "window_mean", update_s, f"active power ({functions.get('power_w', 'P')})"),
            Key("voltage_v", "V", "window_mean", update_s, "true RMS voltage"),
            Key("current_a", "A", "window_mean", update_s, "true RMS current"),
            Key("power_uncertainty_w", "W", None, None,
                f"±({profile.power_pct_reading}% of reading + {profile.power_pct_range}% of range)"),
        ]
        if self.integrate:
            keys.append(Key("energy_j", "J", "counter", None, "instrument integrator (WH), 0 at first sample"))
        assert session.identity is not None
        identity = {**session.identity.as_dict(), "profile": profile.path.name, "element": self.element,
                    "update_s": update_s, "ranging": self.ranging}
        return [StreamInfo(name=self.name, kind="hardware", driver="wt300", resource=self.spec.resource,
                           scope=profile.scope, period_s=update_s, keys=tuple(keys), identity=identity,
                           emulated=session.emulated)]

    @staticmethod
    def _check_range(value: float, ranges: tuple[float, ...], option: str, unit: str) -> None:
        if not any(math.isclose(value, r, rel_tol=1e-6) for r in ranges):
            raise SourceUnavailable(f"wt300: {option}={value:g} is not a range of this instrument "
                                    f"({', '.join(f'{r:g}' for r in ranges)} {unit})")

    def _configure(self, profile: Any) -> None:
        session = self.session
        functions = profile.extra.get("functions", {})
        elem = self.element
        self.items = [(functions.get("voltage_v", "U"), elem), (functions.get("current_a", "I"), elem),
                      (functions.get("power_w", "P"), elem)]
        if self.integrate:
            self.items.append((functions.get("energy_wh", "WH"), elem))
        session.send(profile.setup)
        session.send([f":NUM:NORM:NUM {len(self.items)}"] +
                     [f":NUM:NORM:ITEM{x} {func},{e}" for x, (func, e) in enumerate(self.items, 1)])
        session.surface_errors("setup")
        assert self.update_s is not None
        if profile.rate_commands and not session.first_accepted(profile.rate_commands,
                                                                format_number(self.update_s)):
            raise SourceUnavailable(f"wt300: {self.spec.resource} accepted none of "
                                    f"{', '.join(profile.rate_commands)} for update_s={self.update_s:g}")
        integrating = False
        if self.integrate and self.integ_started_ns is not None:
            # a reconnect: the integrator kept running on the instrument; do not reset it
            integrating = session.query(":INTEG:STAT?").strip().upper().startswith("STAR")
        if not integrating:
            self._set_ranges()
        if self.integrate and not integrating and self.integ_started_ns is not None:
            # the instrument lost its integrator while we were away (power cycle, *RST by
            # someone else): restart it and keep energy_j counting from where it was
            assert self.ctx is not None
            self.ctx.event(EventName.ERROR, self.name, kind="integration_restarted",
                           message="the integrator was not running after a reconnect; restarted, "
                           "energy_j continues from its last value (the time away is not counted)")
            self.energy_carry_j = self.last_energy_j
            self._start_integration()
        elif self.integrate and not integrating and self.ranging != "pass":
            self._start_integration()
        if self.ranging == "pass" and self.ranges is None and self.pass_started_ns is None:
            self.pass_started_ns = time.monotonic_ns()
            assert self.ctx is not None
            self.ctx.event("ranging", self.name, phase="start", duration_s=self.ranging_s)
        session.send(profile.extra.get("after_setup", ()))
        if profile.update_query:
            session.query(profile.update_query)  # clear UPD so the first update counts as new
            self.clear_seen, self.last_reply = True, None
        session.surface_errors("setup")

    def _set_ranges(self) -> None:
        if self.ranging == "fixed":
            self.ranges = (float(self.fixed_v), float(self.fixed_a))
        if self.ranges is not None:
            v, a = self.ranges
            self.session.send([f":INP:VOLT:RANG {format_number(v)}", f":INP:CURR:RANG {format_number(a)}"])
        else:
            self.session.send([":INP:VOLT:AUTO ON", ":INP:CURR:AUTO ON"])

    def _bracketed(self, command: str) -> tuple[int, int]:
        """Send ``command`` and confirm it with a query: it took effect between the two host
        times returned (midpoint and half-width)."""
        before = time.monotonic_ns()
        self.session.send([command])
        self.session.query(":INTEG:STAT?")
        after = time.monotonic_ns()
        return (before + after) // 2, (after - before) // 2

    def _start_integration(self) -> None:
        self.session.send([":INTEG:MODE NORM", ":INTEG:TIM 0,0,0", ":INTEG:RES"])
        self.integ_started_ns, self.integ_start_halfwidth_ns = self._bracketed(":INTEG:STAR")
        self.energy_origin_j = None

    # -- read ---------------------------------------------------------------------------------
    def read(self) -> Mapping[str, Mapping[str, float]]:
        session, profile = self.session, self.session.profile
        assert profile is not None and self.update_s is not None and self.ctx is not None
        if profile.update_query:
            try:
                status = int(parse_number(session.query(profile.update_query)))
            except (MalformedReply, ValueError, OverflowError) as exc:
                session.malformed(f"{profile.update_query} reply: {exc}")
                return {}
            if not status & 1:
                self.clear_seen = True
                return {}
        reply = session.query(":NUM:NORM:VAL?")
        try:
            values = parse_numbers(reply, expected=len(self.items))
        except MalformedReply as exc:
            session.malformed(f":NUM:NORM:VAL? reply: {exc}")
            return {}
        session.decoded()
        if profile.update_query and not self.clear_seen and reply == self.last_reply:
            # flagged at the first poll after a read and answered the same: the update that
            # completed between the last status query and value query, already read
            return {}
        self.last_reply, self.clear_seen = reply, False
        now = time.monotonic_ns()
        voltage, current, power = values[:3]
        anomalies = [k for k, v in zip(("voltage", "current", "power"), values[:3]) if not math.isfinite(v)]
        if anomalies:
            kind = "overload" if any(math.isinf(v) for v in values[:3]) else "no_data"
            self.ctx.count_error(self.name, kind, f"{', '.join(anomalies)} {kind.replace('_', ' ')} "
                                 f"(reply {values[:3]})")
            session.surface_errors(kind)
        v_range, i_range = self._ranges_in_use()
        elements = profile.extra.get("elements", 1) if self.element == "SIGMA" else 1
        out = {
            "power_w": _finite(power),
            "voltage_v": _finite(voltage),
            "current_a": _finite(current),
            "power_uncertainty_w": power_uncertainty_w(_finite(power), v_range * i_range * elements,
                                                       profile.power_pct_reading, profile.power_pct_range),
        }
        if self.integrate:
            out["energy_j"] = self._energy(values[3])
        if self.pass_started_ns is not None and self.ranges is None:
            self._ranging_step(voltage, current, now)
        return {self.name: out}

    def _energy(self, wh: float) -> float:
        if self.integ_started_ns is None or not math.isfinite(wh):
            return math.nan
        energy_j = wh * 3600.0
        if self.energy_origin_j is None:
            self.energy_origin_j = energy_j
        # carry + (e - origin), not (carry + e) - origin: rounding is monotone in each step, so
        # the counter can never step back by an ulp at a restart (CI saw -7e-15 J)
        self.last_energy_j = self.energy_carry_j + (energy_j - self.energy_origin_j)
        return self.last_energy_j

    def _ranges_in_use(self) -> tuple[float, float]:
        if self.ranges is not None:
            return self.ranges
        # auto ranging: ask which ranges the instrument chose for this update
        try:
            return (parse_number(self.session.query(":INP:VOLT:RANG?")),
                    parse_number(self.session.query(":INP:CURR:RANG?")))
        except MalformedReply:
            return math.nan, math.nan

    def _ranging_step(self, voltage: float, current: float, now: int) -> None:
        """Ranging pass: track maxima under auto range, then fix the ranges (MLPerf practice)."""
        profile = self.session.profile
        assert profile is not None and self.pass_started_ns is not None and self.ctx is not None
        if math.isfinite(voltage):
            self.pass_max[0] = max(self.pass_max[0], voltage)
        if math.isfinite(current):
            self.pass_max[1] = max(self.pass_max[1], current)
        if now - self.pass_started_ns < self.ranging_s * 1e9:
            return
        v_range, v_fits = pick_range(self.pass_max[0], profile.voltage_ranges_v)
        i_range, i_fits = pick_range(self.pass_max[1], profile.current_ranges_a, CURRENT_HEADROOM)
        self.ranges = (v_range, i_range)
        self._set_ranges()
        detail: dict[str, Any] = dict(phase="fixed", max_voltage_v=self.pass_max[0],
                                      max_current_a=self.pass_max[1], voltage_range_v=v_range,
                                      current_range_a=i_range)
        if not (v_fits and i_fits):
            detail["warning"] = "maximum exceeds the largest range: readings may be over-range"
        self.ctx.event("ranging", self.name, **detail)
        if self.integrate:
            self._start_integration()
        self.session.surface_errors("ranging")

    # -- close --------------------------------------------------------------------------------
    def close(self) -> None:
        final = self.ctx is not None and self.ctx.stop.is_set()
        try:
            if final and self.integrate and self.integ_started_ns is not None:
                self._finish_integration()
        finally:
            self.session.close()

    def _finish_integration(self) -> None:
        """Stop the integrator and record its own energy (the end-of-capture value)."""
        assert self.ctx is not None and self.update_s is not None
        session = self.session
        try:
            stopped_ns, stop_halfwidth_ns = self._bracketed(":INTEG:STOP")
            # the held WH shows the stop value from the next update on
            deadline = time.monotonic() + 2 * self.update_s
            profile = session.profile
            while profile is not None and profile.update_query and time.monotonic() < deadline:
                if int(parse_number(session.query(profile.update_query))) & 1:
                    break
                time.sleep(min(0.02, self.update_s / 4))
            values = parse_numbers(session.query(":NUM:NORM:VAL?"), expected=len(self.items))
            session.surface_errors("integration stop")
        except (SourceError, ValueError) as exc:
            self.ctx.event(EventName.ERROR, self.name, kind="integration",
                           message=f"could not read the integrator at the end: {exc}")
            return
        wh = values[3]
        self.ctx.event("integration", self.name, energy_j=wh * 3600.0, energy_wh=wh,
                       # energy of integrator runs lost to a restart (0 when it ran throughout)
                       earlier_runs_j=self.energy_carry_j,
                       started_ns=self.integ_started_ns, stopped_ns=stopped_ns,
                       # the commands took effect within these host-time half-widths
                       time_uncertainty_s=(self.integ_start_halfwidth_ns + stop_halfwidth_ns) / 1e9,
                       duration_s=(stopped_ns - (self.integ_started_ns or stopped_ns)) / 1e9)
        self.integ_started_ns = None


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.nan


def create(spec: SourceSpec) -> Wt300Source:
    return Wt300Source(spec, OPTIONS.parse(spec))
