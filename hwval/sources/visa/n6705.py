"""Keysight N6705C DC power analyzer over VISA: high-rate array measurements of one DC rail
(a GPU's 12 V input, a board), as a streaming source.

``-m 'n6705:TCPIP::10.0.0.9::5025::SOCKET?channel=1&points=1000&interval_s=0.001&format=real'``

At open: ``*IDN?`` (must match an ``n6705`` profile), the profile's setup,
``SENS:SWE:POIN n,(@ch)``, ``SENS:SWE:TINT t,(@ch)``, ``FORM:BORD NORM`` and ``FORM REAL`` or
``FORM ASC``, ``SYST:ERR?`` until empty; then ``SENS:SWE:TINT? (@ch)`` tells the interval the
module really uses (it rounds to its time base).

Loop: ``MEAS:ARR:POW? (@ch)`` acquires ``points`` samples ``interval_s`` apart and answers when
done; with ``vi=true`` ``FETC:ARR:VOLT?``/``FETC:ARR:CURR?`` add the same acquisition's voltage
and current. Each sample is emitted with its own time, reconstructed back from the receipt of
the reply: sample ``i`` of ``n`` at ``t_receipt - (n - 1 - i) * interval`` (so the last sample
sits at receipt; the transfer time is a lag that ``hwval sync`` estimates). Between
acquisitions the rail is not sampled (the query round trip), which the timestamps show.

Options: ``backend``, ``profile``, ``timeout_s`` (on top of the acquisition time), ``channel``
(1..4, default 1), ``points`` (default 1000), ``interval_s`` (default the profile's),
``format`` (``ascii`` default, or ``real``: IEEE 754 binary blocks), ``vi`` (bool).

Sources: Keysight N6705C user's guide and programming guide (array measurements, FORMat).
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np

from hwval.sources.base import (Key, SourceContext, SourceSpec, SourceUnavailable,
                                StreamInfo)
from hwval.sources.options import DriverOptions, Option
from hwval.sources.visa.codec import (MalformedReply, decode_real32, format_number, parse_definite_block,
                                      parse_number, parse_numbers)
from hwval.sources.visa.scpi import COMMON_OPTIONS, ScpiSession

OPTIONS = DriverOptions("n6705", "a Keysight N6705C DC power analyzer's array measurements over VISA",
                        "a VISA resource (TCPIP::10.0.0.9::5025::SOCKET)", (
    *COMMON_OPTIONS,
    Option("channel", int, 1, "module channel to digitize", ge=1, le=4),
    Option("points", int, 1000, "samples per acquisition", ge=1),
    Option("interval_s", float, None, "sample interval (the module rounds it to its time base)",
           "s", gt=0, default_text="the profile's"),
    Option("format", str, "ascii", "reply format: ascii, or real (IEEE 754 binary blocks)",
           choices=("ascii", "real")),
    Option("vi", bool, False, "also fetch the same acquisition's voltage and current"),
))


def sample_times_ns(receipt_ns: int, n: int, interval_s: float) -> np.ndarray:
    """Times of ``n`` samples ``interval_s`` apart whose last one arrived at ``receipt_ns``."""
    return receipt_ns - np.round((n - 1 - np.arange(n)) * interval_s * 1e9).astype(np.int64)


def _uncertainty_w(power_w: np.ndarray, power_range_w: float, pct_reading: float,
                   pct_range: float) -> np.ndarray:
    """:func:`hwval.sources.visa.codec.power_uncertainty_w` over an array, bit for bit (the same float operations in the
    same order; NaN where the power is not finite)."""
    out = np.abs(power_w) * pct_reading / 100.0 + power_range_w * pct_range / 100.0
    return np.where(np.isfinite(power_w), out, np.nan)


class N6705Source:
    mode = "streaming"

    def __init__(self, spec: SourceSpec, options: Mapping[str, Any] | None = None) -> None:
        opts = OPTIONS.parse(spec) if options is None else options
        self.spec, self.name = spec, spec.name
        self.session = ScpiSession("n6705", spec.resource, opts)
        self.channel = opts["channel"]
        self.points = opts["points"]
        self.interval_s: float | None = opts["interval_s"]
        self.format = opts["format"]
        self.vi = opts["vi"]
        self.period_s = self.interval_s
        self.ctx: SourceContext | None = None
        #: Acquisitions emitted since creation (for benchmarks).
        self.acquisitions = 0

    def open(self, ctx: SourceContext) -> list[StreamInfo]:
        self.ctx = ctx
        session = self.session
        profile = session.connect(ctx, self.name)
        ch = f"(@{self.channel})"
        interval = self.interval_s if self.interval_s is not None else profile.default_update_s
        max_points = int(profile.extra.get("max_points", 512000))
        if self.points > max_points:
            session.close()
            raise SourceUnavailable(f"n6705: points={self.points} exceeds {profile.name}'s {max_points}")
        session.send(list(profile.setup) + [
            f"SENS:SWE:POIN {self.points},{ch}", f"SENS:SWE:TINT {format_number(interval)},{ch}",
            "FORM:BORD NORM", "FORM REAL" if self.format == "real" else "FORM ASC"])
        session.surface_errors("setup")
        try:
            self.interval_s = parse_number(session.query(f"SENS:SWE:TINT? {ch}"))
        except MalformedReply as exc:
            session.close()
            raise SourceUnavailable(f"n6705: {self.spec.resource}: cannot read back the sample "
                                    f"interval: {exc}") from None
        self.period_s = self.interval_s
        # the reply comes only after the whole acquisition: the timeout must cover it
        session.transport.set_timeout(session.timeout_s + self.points * self.interval_s)
        keys = [Key("power_w", "W", "instant", None, f"digitized rail power, channel {self.channel}"),
                Key("power_uncertainty_w", "W", None, None,
                    f"±({profile.power_pct_reading}% of reading + {profile.power_pct_range}% of range)")]
        if self.vi:
            keys += [Key("voltage_v", "V", "instant", None, "rail voltage"),
                     Key("current_a", "A", "instant", None, "rail current")]
        assert session.identity is not None
        identity = {**session.identity.as_dict(), "profile": profile.path.name, "channel": self.channel,
                    "points": self.points, "interval_s": self.interval_s, "format": self.format}
        return [StreamInfo(name=self.name, kind="hardware", driver="n6705", resource=self.spec.resource,
                           scope=profile.scope, period_s=self.interval_s, keys=tuple(keys),
                           identity=identity, emulated=session.emulated)]

    def _array(self, command: str) -> np.ndarray:
        if self.format == "real":
            return decode_real32(parse_definite_block(self.session.transport.query_block(command)))
        return np.asarray(parse_numbers(self.session.query(command), expected=self.points), dtype=float)

    def acquire(self) -> tuple[int, dict[str, np.ndarray]]:
        """One acquisition: (receipt ns of the power array, arrays by key)."""
        ch = f"(@{self.channel})"
        power = self._array(f"MEAS:ARR:POW? {ch}")
        receipt_ns = time.monotonic_ns()
        arrays = {"power_w": power}
        if self.vi:
            arrays["voltage_v"] = self._array(f"FETC:ARR:VOLT? {ch}")
            arrays["current_a"] = self._array(f"FETC:ARR:CURR? {ch}")
        if any(len(a) != self.points for a in arrays.values()):
            raise MalformedReply(f"expected {self.points} samples, got "
                                 f"{', '.join(str(len(a)) for a in arrays.values())}")
        return receipt_ns, arrays

    def run(self, ctx: SourceContext) -> None:
        profile = self.session.profile
        assert profile is not None and self.interval_s is not None
        power_range_w = max(profile.voltage_ranges_v) * max(profile.current_ranges_a)
        while not ctx.stop.is_set():
            try:
                receipt_ns, arrays = self.acquire()
            except MalformedReply as exc:
                self.session.malformed(f"array reply: {exc}")
                continue
            self.session.decoded()
            self.acquisitions += 1
            power = arrays["power_w"]
            bad = ~np.isfinite(power)
            if bad.any():
                ctx.count_error(self.name, "overload", f"{int(bad.sum())} sample(s) over range or without data")
                arrays = {k: np.where(np.isfinite(a), a, np.nan) for k, a in arrays.items()}
            times = sample_times_ns(receipt_ns, self.points, self.interval_s)
            # one block per acquisition: the arrays as they came, no dict per sample
            arrays["power_uncertainty_w"] = _uncertainty_w(
                arrays["power_w"], power_range_w, profile.power_pct_reading, profile.power_pct_range)
            ctx.emit_block(self.name, times, arrays)
            if bad.any():
                self.session.surface_errors("overload")

    def close(self) -> None:
        self.session.close()


def create(spec: SourceSpec) -> N6705Source:
    return N6705Source(spec, OPTIONS.parse(spec))

