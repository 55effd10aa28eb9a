"""``wattsup``: Watts Up? PRO / .NET meters in external logging mode.

Spec: ``wattsup:/dev/ttyUSB0?interval_s=1``

Options:
    baudrate (int, 115200) : line speed (the meter's fixed 115200 8N1).
    interval_s (int, ``period_s`` or 1) : logging interval sent in ``#L,W,3,E,,<interval>;``
        (whole seconds).
    silence_s (float, 5) : after this long without a parseable packet, count a ``silence``
        error ("wrong baud rate?").
    stale_s (float, 3 intervals, at least 2 s) : no record for this long is a gap
        (``TransientError``): the meter stalled or stopped logging.

At open the driver asks the version (``#V,R,0;``) and the record header (``#H,R,0;``), then
starts external logging; the meter then streams ``#d`` records. ``power_w`` is the meter's
mean over the interval (``window_mean``, window = interval), ``energy_j`` its cumulative WH
(tenths of Wh) relative to the first record. Facts and sources: :mod:`.wattsup_codec`.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import serial

from hwval.sources.base import (
    Key, SourceContext, SourceSpec, StreamInfo, TransientError,
)
from hwval.sources.options import DriverOptions, Option
from hwval.sources.serial import wattsup_codec as codec
from hwval.sources.emulated import says_emulated
from hwval.sources.serial.common import RelativeEnergy, require_positive
from hwval.sources.serial.port import (
    SilenceWatch, close_quietly, line_settings, open_serial, read_available, write_all,
)

OPTIONS = DriverOptions("wattsup", "a Watts Up? PRO/.net meter logging over its serial/USB line",
                        "a serial port (/dev/ttyUSB0)", (
    Option("baudrate", int, 115200, "line speed (the meter's is fixed at 115200 8N1)", "baud", gt=0),
    Option("interval_s", int, None, "logging interval sent in #L,W,3,E,,<interval>; (whole "
           "seconds)", "s", ge=1,
           default_text="period_s, else 1"),
    Option("silence_s", float, 5.0, "nothing parseable for this long is a likely wiring or "
           "baud-rate fault", "s", gt=0),
    Option("stale_s", float, None, "no record for this long is a gap", "s", gt=0,
           default_text="max(2, 3 x interval_s)"),
))
#: the meter answers within 2 s (protocol rev 1.8)
ANSWER_TIMEOUT_S = 2.0


class WattsUpSource:
    mode = "streaming"

    def __init__(self, spec: SourceSpec, options: Mapping[str, Any] | None = None) -> None:
        opts = OPTIONS.parse(spec) if options is None else options
        self.name, self.resource = spec.name, spec.resource
        self.baudrate = opts["baudrate"]
        require_positive("wattsup", period_s=spec.period_s)
        # the meter logs in whole seconds: a configured period_s is the logging interval unless
        # interval_s says otherwise (never silently ignored)
        default_interval = 1
        if spec.period_s is not None:
            if not float(spec.period_s).is_integer():
                raise ValueError(f"wattsup: period_s must be whole seconds (the meter logs at "
                                 f"1 s steps), got {spec.period_s}")
            default_interval = int(spec.period_s)
        self.interval_s = opts["interval_s"] or default_interval
        self.period_s = float(self.interval_s)
        self.stale_s = opts["stale_s"] or max(2.0, 3.0 * self.interval_s)
        self.silence = SilenceWatch(opts["silence_s"])
        self.settings = line_settings(self.baudrate)
        self.port: serial.Serial | None = None
        self.packets = codec.PacketBuffer()
        self.header: tuple[str, ...] = codec.HEADER_FIELDS
        self.energy = RelativeEnergy()
        self.ctx: SourceContext | None = None
        self._last_record_s = 0.0

    def open(self, ctx: SourceContext) -> list[StreamInfo]:
        self.ctx = ctx
        self.port = open_serial(self.resource, baudrate=self.baudrate, timeout_s=0.05)
        self.packets.clear()
        self.silence.reset()
        identity: dict[str, Any] = {"port": self.resource, "settings": self.settings}
        notes = []
        version = self._ask(b"#V,R,0;", "v")
        device_says = codec.decode_version(version) if version is not None else {}
        if version is not None:
            identity.update(device_says)
        else:
            notes.append("no answer to #V,R,0; at open: meter version unknown")
        header = self._ask(b"#H,R,0;", "h")
        if header is not None and len(header.fields) == len(codec.HEADER_FIELDS):
            self.header = codec.decode_header(header)
        banner = self.packets.outside.decode("ascii", "replace").strip()
        if "WattsUp" in banner or "Watts Up" in banner:
            identity["banner"] = banner.splitlines()[-1].strip()
        write_all(self.port, codec.encode_logging_command(self.interval_s), self.resource)
        self._last_record_s = time.monotonic()
        keys = (Key("power_w", "W", "window_mean", float(self.interval_s),
                    "meter's mean over its logging interval"),
                Key("voltage_v", "V", "window_mean", float(self.interval_s)),
                Key("current_a", "A", "window_mean", float(self.interval_s)),
                Key("power_factor", "1", "window_mean", float(self.interval_s)),
                Key("energy_j", "J", "counter", None, "meter's WH relative to first record"),
                # the codec decodes every FIELD_SCALE field the meter logs: each must be declared
                # here or the recorder drops it as undeclared_key
                Key("frequency_hz", "Hz", "window_mean", float(self.interval_s)),
                Key("apparent_power_va", "VA", "window_mean", float(self.interval_s)))
        return [StreamInfo(name=self.name, kind="hardware", driver="wattsup",
                           resource=self.resource, scope="wall", period_s=self.period_s,
                           keys=keys, identity=identity, emulated=says_emulated(device_says.values()),
                           notes=tuple(notes))]

    def close(self) -> None:
        close_quietly(self.port)
        self.port = None

    def _ask(self, request: bytes, answer: str, attempts: int = 3) -> codec.Packet | None:
        """Send ``request`` and wait for the ``#<answer>`` packet; a damaged answer (line
        noise) is asked again, up to ``attempts`` times."""
        assert self.port is not None
        for _ in range(attempts):
            write_all(self.port, request, self.resource)
            deadline = time.monotonic() + ANSWER_TIMEOUT_S
            damaged = False
            while time.monotonic() < deadline and not damaged:
                data = read_available(self.port, self.resource)
                if not data and self.packets.in_packet:
                    damaged = True  # the meter sends a packet at once: the rest was lost
                for text in self.packets.feed(data):
                    packet = self._packet(text)
                    if packet is None:
                        damaged = True
                    elif packet.command == answer:
                        return packet
            if not damaged:
                return None  # silence: asking again would only double the wait
        return None

    def run(self, ctx: SourceContext) -> None:
        assert self.port is not None
        while not ctx.stop.is_set():
            data = read_available(self.port, self.resource)
            t_ns = time.monotonic_ns()
            for text in self.packets.feed(data):
                packet = self._packet(text)
                if packet is None or packet.command != "d":
                    continue
                try:
                    values = codec.decode_record(packet, self.header)
                except codec.WattsupDecodeError as exc:
                    self._count("bad_packet", str(exc))
                    continue
                self._last_record_s = time.monotonic()
                if "energy_j" in values:
                    values["energy_j"], reset = self.energy.update(values["energy_j"])
                    if reset:
                        self._count("energy_reset", "meter WH went backwards (memory cleared?)")
                ctx.emit(self.name, values, t_ns=t_ns)
            silent = self.silence.check()
            if silent is not None:
                self._count("silence", SilenceWatch.message(self.resource, silent, self.settings))
            waited = time.monotonic() - self._last_record_s
            if waited > self.stale_s:
                self._last_record_s = time.monotonic()  # the next gap report after stale_s more
                raise TransientError(f"no record from {self.resource} for {waited:.1f} s "
                                     f"(logging every {self.interval_s} s)")

    def _packet(self, text: str | None) -> codec.Packet | None:
        if text is None:
            self._count("truncated", "packet cut short (a new '#' before its ';')")
            return None
        try:
            packet = codec.parse_packet(text)
        except codec.WattsupDecodeError as exc:
            self._count("bad_packet", str(exc))
            return None
        self.silence.frame()
        return packet

    def _count(self, kind: str, message: str) -> None:
        if self.ctx is not None:
            self.ctx.count_error(self.name, kind, message)


def create(spec: SourceSpec) -> WattsUpSource:
    return WattsUpSource(spec, OPTIONS.parse(spec))
