"""Rohde & Schwarz HMC8015 power analyzer over VISA (raw socket ``TCPIP::ip::5025::SOCKET``).

``-m 'hmc8015:TCPIP::10.0.0.7::5025::SOCKET?ranging=fixed&voltage_range_v=300&current_range_a=2'``

At open: ``*IDN?`` (must match an ``hmc8015`` profile), the profile's setup, then
``CHAN1:MEAS:FUNC P,URMS,IRMS,LAMBda,URANge,IRANge``: the functions ``CHAN1:MEAS:DATA?``
returns, in that order (the range functions give the uncertainty its range, also under auto
ranging). Page 1 of the numeric view is set to the same functions (``VIEW:NUM:PAGE1:SIZE 6``,
``VIEW:NUM:PAGE1:CELL<m>:FUNC <f>``) so the operator sees what is recorded. Ranging: ``auto``
(default, ``CHAN1:ACQ:VOLT:RANG:AUTO ON`` and ``CHAN1:ACQ:CURR:RANG:AUTO ON``) or ``fixed``
with ``voltage_range_v`` and ``current_range_a`` (``CHAN1:ACQ:VOLT:RANG <V>``,
``CHAN1:ACQ:CURR:RANG <A>``). Then ``SYST:ERR?`` until empty; every SCPI message is recorded.

Reading: ``CHAN1:MEAS:DATA?`` every ``period_s`` (default: the profile's 0.1 s refresh);
``power_w`` is the mean over that refresh interval. Over-range (``INF``) and no-data values
become NaN and are counted. The HMC8015 offers no "new data" flag that the driver knows of
(unlike the Yokogawa's ``:STAT:EESR?``), so a refresh can be read twice or skipped when the
poll and the refresh drift in phase: the stream's notes say so, and at the end of the capture
a ``repeated_replies`` event gives how many replies were identical to the one before (a hint,
not proof: a steady load can repeat to the last digit too, so they are kept, not dropped).
Options: ``backend``, ``profile``, ``timeout_s``, ``ranging``, ``voltage_range_v``,
``current_range_a``.

Sources: R&S HMC8015 SCPI programmers manual; Rohde-Schwarz/Examples (HMC8015);
UniStuttgart-VISUS/power-overwhelming ``hmc8015_instrument.cpp`` (``CHAN1:MEAS:FUNC`` defines
what ``CHAN1:MEAS:DATA?`` returns; ranges under ``CHAN<n>:ACQ:VOLT|CURR:RANG[:AUTO]``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from hwval.sources.base import (Key, SourceContext, SourceSpec, SourceUnavailable,
                                StreamInfo)
from hwval.sources.options import DriverOptions, Option
from hwval.sources.visa.codec import MalformedReply, format_number, parse_numbers, power_uncertainty_w
from hwval.sources.visa.scpi import COMMON_OPTIONS, ScpiSession

OPTIONS = DriverOptions("hmc8015", "a Rohde & Schwarz HMC8015 power analyzer over VISA (SCPI)",
                        "a VISA resource (TCPIP::10.0.0.6::5025::SOCKET, USB0::...)", (
    *COMMON_OPTIONS,
    Option("ranging", str, "auto", "auto: autorange; fixed: the given ranges",
           choices=("auto", "fixed")),
    Option("voltage_range_v", float, None, "ranging=fixed: voltage range", "V", gt=0),
    Option("current_range_a", float, None, "ranging=fixed: current range", "A", gt=0),
))
#: Stream keys in cell order; the functions come from the profile's [hmc8015] table.
CELL_KEYS = ("power_w", "voltage_v", "current_a", "power_factor", "voltage_range_v", "current_range_a")
DEFAULT_FUNCTIONS = {"power_w": "P", "voltage_v": "URMS", "current_a": "IRMS", "power_factor": "LAMBda",
                     "voltage_range_v": "URANge", "current_range_a": "IRANge"}


class Hmc8015Source:
    mode = "polled"

    def __init__(self, spec: SourceSpec, options: Mapping[str, Any] | None = None) -> None:
        opts = OPTIONS.parse(spec) if options is None else options
        self.spec, self.name = spec, spec.name
        self.session = ScpiSession("hmc8015", spec.resource, opts)
        self.ranging = opts["ranging"]
        self.fixed = (opts["voltage_range_v"], opts["current_range_a"])
        if (self.ranging == "fixed") != (None not in self.fixed):
            raise ValueError("hmc8015: ranging=fixed needs voltage_range_v=V and current_range_a=A "
                             "(and those two need ranging=fixed)")
        self.period_s = spec.period_s
        self.ctx: SourceContext | None = None
        self.last_reply: str | None = None
        self.replies = 0
        self.repeated_replies = 0

    def open(self, ctx: SourceContext) -> list[StreamInfo]:
        self.ctx = ctx
        session = self.session
        profile = session.connect(ctx, self.name)
        if self.period_s is None:
            self.period_s = profile.default_update_s
        functions = {**DEFAULT_FUNCTIONS, **profile.extra.get("functions", {})}
        cell_functions = [functions[key] for key in CELL_KEYS]
        commands = list(profile.setup) + [f"CHAN1:MEAS:FUNC {','.join(cell_functions)}",
                                          f"VIEW:NUM:PAGE1:SIZE {len(CELL_KEYS)}"]
        commands += [f"VIEW:NUM:PAGE1:CELL{m}:FUNC {f}" for m, f in enumerate(cell_functions, 1)]
        if self.ranging == "fixed":
            v, a = self.fixed
            for value, ranges, what in ((v, profile.voltage_ranges_v, "voltage_range_v"),
                                        (a, profile.current_ranges_a, "current_range_a")):
                if not any(math.isclose(float(value), r, rel_tol=1e-6) for r in ranges):
                    session.close()
                    raise SourceUnavailable(f"hmc8015: {what}={value:g} is not a range of this "
                                            f"instrument ({', '.join(f'{r:g}' for r in ranges)})")
            commands += [f"CHAN1:ACQ:VOLT:RANG {format_number(float(v))}",
                         f"CHAN1:ACQ:CURR:RANG {format_number(float(a))}"]
        else:
            commands += ["CHAN1:ACQ:VOLT:RANG:AUTO ON", "CHAN1:ACQ:CURR:RANG:AUTO ON"]
        session.send(commands)
        session.surface_errors("setup")
        window = profile.default_update_s
        keys = (
            Key("power_w", "W", "window_mean", window, f"active power ({functions['power_w']})"),
            Key("voltage_v", "V", "window_mean", window, "true RMS voltage"),
            Key("current_a", "A", "window_mean", window, "true RMS current"),
            Key("power_factor", "1", None, None, "power factor (LAMBda)"),
            Key("power_uncertainty_w", "W", None, None,
                f"±({profile.power_pct_reading}% of reading + {profile.power_pct_range}% of range)"),
        )
        assert session.identity is not None
        identity = {**session.identity.as_dict(), "profile": profile.path.name, "ranging": self.ranging}
        self.last_reply = None
        notes = (f"no new-data flag: polled every {self.period_s:g} s against a {window:g} s refresh, "
                 "so a refresh may be read twice or skipped; see the 'repeated_replies' event",)
        return [StreamInfo(name=self.name, kind="hardware", driver="hmc8015", resource=self.spec.resource,
                           scope=profile.scope, period_s=self.period_s, keys=keys, identity=identity,
                           emulated=session.emulated, notes=notes)]

    def read(self) -> Mapping[str, Mapping[str, float]]:
        assert self.ctx is not None and self.session.profile is not None
        profile = self.session.profile
        reply = self.session.query("CHAN1:MEAS:DATA?")
        try:
            values = parse_numbers(reply, expected=len(CELL_KEYS))
        except MalformedReply as exc:
            self.session.malformed(f"CHAN1:MEAS:DATA? reply: {exc}")
            return {}
        self.session.decoded()
        self.replies += 1
        if reply == self.last_reply:
            self.repeated_replies += 1
        self.last_reply = reply
        cells = dict(zip(CELL_KEYS, values))
        bad = [k for k in CELL_KEYS[:3] if not math.isfinite(cells[k])]
        if bad:
            kind = "overload" if any(math.isinf(cells[k]) for k in bad) else "no_data"
            self.ctx.count_error(self.name, kind, f"{', '.join(bad)}: {kind.replace('_', ' ')}")
            self.session.surface_errors(kind)
        out = {k: (cells[k] if math.isfinite(cells[k]) else math.nan) for k in CELL_KEYS[:4]}
        out["power_uncertainty_w"] = power_uncertainty_w(
            out["power_w"], cells["voltage_range_v"] * cells["current_range_a"],
            profile.power_pct_reading, profile.power_pct_range)
        return {self.name: out}

    def close(self) -> None:
        if self.ctx is not None and self.ctx.stop.is_set() and self.replies:
            # the final close (not a reconnect): one line on how often the same values came back
            self.ctx.event("repeated_replies", self.name, repeated=self.repeated_replies,
                           replies=self.replies, note="identical to the previous reply: the same "
                           "refresh read twice, or a load steady to the last digit")
            self.replies = 0
        self.session.close()


def create(spec: SourceSpec) -> Hmc8015Source:
    return Hmc8015Source(spec, OPTIONS.parse(spec))
