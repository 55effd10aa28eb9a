"""Rohde & Schwarz HMC8015 power analyzer over VISA (raw socket ``TCPIP::ip::5025::SOCKET``).

``-m 'hmc8015:TCPIP::10.0.0.7::5025::SOCKET?ranging=fixed&voltage_range_v=300&current_range_a=2'``

At open: ``*IDN?`` (must match an ``hmc8015`` profile), the profile's setup, then page 1 of the
numeric view is configured so that ``CHAN1:MEAS:DATA?`` returns exactly what the driver needs,
in cell order: ``VIEW:NUM:PAGE1:SIZE 6`` and ``VIEW:NUM:PAGE1:CELL<m>:FUNC <f>`` for P, URMS,
IRMS, LAMBda, URANge, IRANge (the range cells give the uncertainty its range, also under auto
ranging). Ranging: ``auto`` (default) or ``fixed`` with ``voltage_range_v`` and
``current_range_a``. Then ``SYST:ERR?`` until empty; every SCPI message is recorded.

Reading: ``CHAN1:MEAS:DATA?`` every ``period_s`` (default: the profile's 0.1 s refresh);
``power_w`` is the mean over that refresh interval. Over-range (``INF``) and no-data values
become NaN and are counted. Options: ``backend``, ``profile``, ``timeout_s``, ``ranging``,
``voltage_range_v``, ``current_range_a``.

Sources: R&S HMC8015 SCPI programmers manual; Rohde-Schwarz/Examples (HMC8015).
"""

from __future__ import annotations

import math
from typing import Mapping

from hwval.sources.base import (Disconnected, Key, SourceContext, SourceSpec, SourceUnavailable,
                                StreamInfo, check_options)
from hwval.sources.visa.codec import MalformedReply, format_number, parse_numbers, power_uncertainty_w
from hwval.sources.visa.scpi import COMMON_OPTIONS, ScpiSession

OPTIONS: dict[str, type | tuple[type, ...]] = {
    **COMMON_OPTIONS, "ranging": str, "voltage_range_v": float, "current_range_a": float,
}
#: Stream keys in cell order; the functions come from the profile's [hmc8015] table.
CELL_KEYS = ("power_w", "voltage_v", "current_a", "power_factor", "voltage_range_v", "current_range_a")
DEFAULT_FUNCTIONS = {"power_w": "P", "voltage_v": "URMS", "current_a": "IRMS", "power_factor": "LAMBda",
                     "voltage_range_v": "URANge", "current_range_a": "IRANge"}
MAX_MALFORMED = 3


class Hmc8015Source:
    mode = "polled"

    def __init__(self, spec: SourceSpec) -> None:
        opts = check_options(spec, OPTIONS)
        self.spec, self.name = spec, spec.name
        self.session = ScpiSession("hmc8015", spec.resource, opts)
        self.ranging = str(opts.get("ranging", "auto")).lower()
        if self.ranging not in ("auto", "fixed"):
            raise ValueError(f"hmc8015: ranging must be auto or fixed, got {self.ranging!r}")
        self.fixed = (opts.get("voltage_range_v"), opts.get("current_range_a"))
        if (self.ranging == "fixed") != (None not in self.fixed):
            raise ValueError("hmc8015: ranging=fixed needs voltage_range_v=V and current_range_a=A "
                             "(and those two need ranging=fixed)")
        self.period_s = spec.period_s
        self.ctx: SourceContext | None = None
        self.malformed_in_row = 0

    def open(self, ctx: SourceContext) -> list[StreamInfo]:
        self.ctx = ctx
        session = self.session
        profile = session.connect(ctx, self.name)
        if self.period_s is None:
            self.period_s = profile.default_update_s
        functions = {**DEFAULT_FUNCTIONS, **profile.extra.get("functions", {})}
        commands = list(profile.setup) + [f"VIEW:NUM:PAGE1:SIZE {len(CELL_KEYS)}"]
        commands += [f"VIEW:NUM:PAGE1:CELL{m}:FUNC {functions[key]}" for m, key in enumerate(CELL_KEYS, 1)]
        if self.ranging == "fixed":
            v, a = self.fixed
            for value, ranges, what in ((v, profile.voltage_ranges_v, "voltage_range_v"),
                                        (a, profile.current_ranges_a, "current_range_a")):
                if not any(math.isclose(float(value), r, rel_tol=1e-6) for r in ranges):
                    session.close()
                    raise SourceUnavailable(f"hmc8015: {what}={value:g} is not a range of this "
                                            f"instrument ({', '.join(f'{r:g}' for r in ranges)})")
            commands += [f"VOLT:RANG {format_number(float(v))}", f"CURR:RANG {format_number(float(a))}"]
        else:
            commands += ["VOLT:RANG:AUTO ON", "CURR:RANG:AUTO ON"]
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
        return [StreamInfo(name=self.name, kind="hardware", driver="hmc8015", resource=self.spec.resource,
                           scope=profile.scope, period_s=self.period_s, keys=keys, identity=identity,
                           emulated=session.emulated)]

    def read(self) -> Mapping[str, Mapping[str, float]]:
        assert self.ctx is not None and self.session.profile is not None
        profile = self.session.profile
        try:
            values = parse_numbers(self.session.query("CHAN1:MEAS:DATA?"), expected=len(CELL_KEYS))
        except MalformedReply as exc:
            self.malformed_in_row += 1
            self.ctx.count_error(self.name, "malformed", f"CHAN1:MEAS:DATA? reply: {exc}")
            if self.malformed_in_row >= MAX_MALFORMED:
                self.malformed_in_row = 0
                raise Disconnected(f"{self.spec.resource}: {MAX_MALFORMED} undecodable replies in a "
                                   "row; reconnecting to get back in step") from None
            return {}
        self.malformed_in_row = 0
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
        self.session.close()


def create(spec: SourceSpec) -> Hmc8015Source:
    return Hmc8015Source(spec)
