"""PZEM-004T v3.0 (Peacefair) driver: Modbus-RTU polling over a TTL UART at 9600 8N1.

Transport :mod:`hwval.sources.serial.port`, codec :mod:`.pzem004t_codec`, and this device loop:
every ``period_s`` (default 1 s) the recorder calls :meth:`Pzem004tSource.read`, which sends
``addr 04 0000 000A crc`` and waits up to ``timeout_s`` for the 25-byte reply.

Facts: docs/protocols/pzem004t.md (Peacefair PZEM-004T V3.0 User Manual; Tasmota, ESPurna,
mandulaj/PZEM-004T-v30, esphome ``pzemac``). Semantics of the values:

- ``power_w`` (0.1 W resolution) is the module's own refreshed value. The module recomputes its
  registers about once per second (UNVERIFIED: the manual states no cadence; users observe about
  1 s and client libraries cache for 200 ms, see docs/protocols/pzem004t.md#refresh-cadence),
  and the metering chip reports active power averaged over its update, so it is declared
  ``window_mean`` with ``window_s = 1.0``. Polling faster than 1 s returns repeated values.
- ``energy_j`` comes from the 32-bit Wh counter: 1 Wh = 3600 J steps, relative to the first
  reading of the capture, continued across reconnects, and kept continuous (with an ``error``
  count) if the counter goes backwards (an energy reset by someone else, or the manual's
  9999.99 kWh roll-over).
- ``voltage_v`` (0.1 V), ``current_a`` (1 mA), ``frequency_hz`` (0.1 Hz), ``power_factor``
  (0.01).

Failures: a reply with a bad CRC, truncated, buried in garbage or missing is counted (kinds
``bad_crc``, ``truncated``, ``garbage``, ``no_reply``) and the request is retried ``retries``
times at once, as Modbus masters do; only when every attempt failed does ``read()`` raise
:class:`TransientError` (a gap). A Modbus exception reply is counted as ``modbus_exception``
with its meaning (illegal function/address/data, slave error) and is a gap for that poll.
Options: ``address`` (1..247, or 248 = 0xF8 "general", default 1), ``reset_energy`` (send 0x42
once at the first open), ``timeout_s`` (0.5), ``retries`` (1), ``baudrate`` (9600),
``silence_s`` (5: nothing parseable for that long is reported as a likely wrong baud rate).
"""

from __future__ import annotations

import termios
import time
from typing import Any, Mapping

import serial

from hwval.sources.base import (
    Disconnected, Key, SourceContext, SourceSpec, SourceUnavailable, StreamInfo, TransientError,
)
from hwval.sources.options import DriverOptions, Option
from hwval.sources.serial import pzem004t_codec as codec
from hwval.sources.serial.common import RelativeEnergy, require_positive
from hwval.sources.serial.emulator_identity import emulated_identity
from hwval.sources.serial.framing import FrameScanner
from hwval.sources.serial.port import (
    SilenceWatch, close_quietly, line_settings, open_serial, read_available, write_all,
)

DRIVER = "pzem004t"
DEFAULT_PERIOD_S = 1.0
#: The module's register refresh: the manual states none, users observe about 1 s
#: (docs/protocols/pzem004t.md#refresh-cadence).
MODULE_UPDATE_S = 1.0
WH_TO_J = 3600.0

OPTIONS = DriverOptions(DRIVER, "a PZEM-004T v3.0 module polled over Modbus-RTU (9600 8N1)",
                        "a serial port (/dev/ttyUSB0)", (
    Option("address", int, 1, "Modbus slave address (248 = 0xF8 reaches a single module "
           "whatever its address)", ge=1, le=248),
    Option("reset_energy", bool, False, "reset the module's energy counter once at the first open"),
    Option("timeout_s", float, 0.5, "wait this long for each reply", "s", gt=0),
    Option("retries", int, 1, "failed requests re-sent at once before the poll is a gap", ge=0),
    Option("baudrate", int, 9600, "line speed (the module's is fixed at 9600)", "baud", gt=0),
    Option("silence_s", float, 5.0, "nothing parseable for this long is reported as a likely "
           "wrong baud rate", "s", gt=0),
))


class ExchangeFailed(Exception):
    """One request got no usable reply; ``kind`` is the error-count kind."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class Pzem004tSource:
    """Polled source for one PZEM-004T v3.0 module (see module docstring)."""

    mode = "polled"

    def __init__(self, spec: SourceSpec, options: Mapping[str, Any] | None = None) -> None:
        options = OPTIONS.parse(spec) if options is None else options
        self.spec = spec
        self.resource = spec.resource
        self.stream = spec.name
        self.period_s = spec.period_s if spec.period_s is not None else DEFAULT_PERIOD_S
        self.address = options["address"]
        self.reset_energy = options["reset_energy"]
        self.timeout_s = options["timeout_s"]
        self.retries = options["retries"]
        self.baudrate = options["baudrate"]
        self.silence_s = options["silence_s"]
        require_positive(DRIVER, period_s=self.period_s)
        self.settings = line_settings(self.baudrate)
        self._port = None
        self._ctx: SourceContext | None = None
        self._energy = RelativeEnergy()  # survives reconnects: the module keeps counting
        self._reset_done = False
        self._silence: SilenceWatch | None = None
        self._last_failure = ""

    # ------------------------------------------------------------------------------ lifecycle
    def open(self, ctx: SourceContext) -> list[StreamInfo]:
        self._ctx = ctx
        self._port = open_serial(self.resource, baudrate=self.baudrate, timeout_s=0.05)
        self._silence = SilenceWatch(self.silence_s)
        try:
            identity = self._read_identity()
            if self.reset_energy and not self._reset_done:
                self._reset_energy()
                self._reset_done = True
                identity["energy_reset_at_start"] = True
        except BaseException:
            self.close()
            raise
        return [self._stream_info(identity)]

    def close(self) -> None:
        close_quietly(self._port)
        self._port = None

    def _stream_info(self, identity: dict[str, Any]) -> StreamInfo:
        # the registers say nothing of what answers them: an emulator is known by the terminal
        # it owns
        emulated, claim = emulated_identity(self._port)
        identity = {**identity, **claim}
        keys = (
            Key("power_w", "W", "window_mean", MODULE_UPDATE_S,
                "active power, 0.1 W resolution; the manual states no refresh rate, users "
                "observe about one refresh per second"),
            Key("energy_j", "J", "counter", None,
                "module energy counter since the first reading; 1 Wh = 3600 J resolution"),
            Key("voltage_v", "V", None, None, "RMS voltage, 0.1 V resolution"),
            Key("current_a", "A", None, None, "RMS current, 1 mA resolution"),
            Key("frequency_hz", "Hz", None, None, "line frequency, 0.1 Hz resolution"),
            Key("power_factor", "1", None, None, "power factor, 0.01 resolution"),
        )
        return StreamInfo(
            name=self.stream, kind="hardware", driver=DRIVER, resource=self.resource,
            scope="wall", period_s=self.period_s, keys=keys, identity=identity,
            emulated=emulated,
            notes=("energy_j has 1 Wh (3600 J) steps: use it over long intervals only",),
        )

    # ------------------------------------------------------------------------------ requests
    def _read_identity(self) -> dict[str, Any]:
        """Read holding registers 0x0001 (alarm threshold) and 0x0002 (address): proves the
        module answers before the capture starts, and records who it is. A module silent to
        that optional read is accepted when it answers the measurement read (0x04)."""
        request = codec.read_registers_request(self.address, codec.READ_HOLDING,
                                               codec.HOLDING_ALARM_THRESHOLD, 2)
        failures: list[ExchangeFailed] = []
        reply = self._first_reply(request, codec.READ_HOLDING, failures)
        identity: dict[str, Any] = {"model": "PZEM-004T v3.0", "polled_address": self.address,
                                    "line": self.settings}
        if reply is None and {f.kind for f in failures} <= {"no_reply"}:
            # The holding registers only say who the module is; readings need the measurement
            # read (0x04) alone. Silence to 0x03 refuses the module only if 0x04 is silent too.
            unanswered = len(failures)
            reply = self._first_reply(codec.read_measurement_request(self.address),
                                      codec.READ_INPUT, failures)
            if reply is not None:
                identity["holding_registers"] = (f"no answer to the 0x03 read ({unanswered} "
                                                 "tries); the measurement read 0x04 answers")
                return identity
        if reply is None:
            raise SourceUnavailable(self._no_answer_message(failures))
        if isinstance(reply, codec.ExceptionReply):
            # answered, but not these registers: still a Modbus slave; keep what we know
            identity["holding_registers"] = reply.text
        elif isinstance(reply, codec.RegistersReply) and len(reply.registers) == 2:
            identity["power_alarm_threshold_w"] = reply.registers[0]
            identity["modbus_address"] = reply.registers[1]
        return identity

    def _first_reply(self, request: bytes, function: int,
                     failures: list[ExchangeFailed]) -> codec.Reply | None:
        """The first reply to ``request`` in a few tries (faults at start must not refuse the
        capture); each failed try is appended to ``failures``. ``None``: no try got one."""
        for _ in range(max(3, 1 + self.retries)):
            try:
                return self._exchange(request, function)
            except ExchangeFailed as exc:
                failures.append(exc)
        return None

    def _no_answer_message(self, failures: list[ExchangeFailed]) -> str:
        kinds = {f.kind for f in failures}
        where = f"PZEM-004T at Modbus address {self.address} on {self.resource}"
        if kinds <= {"no_reply"}:
            baud = ("" if self.baudrate == 9600 else
                    f"; baudrate={self.baudrate} differs from the module's fixed 9600 (wrong baud "
                    "rate: it cannot understand the request)")
            return (f"no reply from {where} ({self.settings}, {len(failures)} tries of "
                    f"{self.timeout_s} s): check TX/RX are crossed, the module's 5 V supply, that "
                    "its AC side is live (many modules only answer with mains present) and the "
                    f"address (address=248 reaches a single module whatever its address){baud}")
        if "garbage" in kinds or "bad_crc" in kinds:
            return (f"wrong baud rate? bytes arrive from {where} but none forms a valid reply "
                    f"(expected {self.settings}); check the line settings, wiring and that this "
                    "is a PZEM-004T v3.0 (v1/v2 modules speak another protocol)")
        return f"no valid reply from {where}: {failures[-1].message}"

    def _reset_energy(self) -> None:
        request = codec.reset_energy_request(self.address)
        reply = self._transact(request, codec.RESET_ENERGY)
        if isinstance(reply, codec.ExceptionReply):
            raise SourceUnavailable(f"PZEM-004T on {self.resource} refused the energy reset: "
                                    f"{reply.text}; drop reset_energy=true")

    def _transact(self, request: bytes, function: int) -> codec.Reply:
        """Send ``request`` up to ``1 + retries`` times; count each failed attempt."""
        last: ExchangeFailed | None = None
        for _ in range(1 + self.retries):
            try:
                reply = self._exchange(request, function)
            except ExchangeFailed as exc:
                self._count(exc.kind, exc.message)
                last = exc
                self._last_failure = exc.kind
                continue
            if self._silence is not None:
                self._silence.frame()
            return reply
        assert last is not None
        raise TransientError(f"{self.stream}: {last.message} (after {1 + self.retries} tries)")

    def _exchange(self, request: bytes, function: int) -> codec.Reply:
        """One request/reply. Raises :class:`ExchangeFailed` when no valid reply arrived within
        ``timeout_s``; :class:`Disconnected` (from the port helpers) when the port is gone."""
        port, resource = self._port, self.resource
        if port is None:
            raise ExchangeFailed("no_reply", f"port {resource} is not open")
        # a late reply to the previous request (or noise) must not be taken for this one
        flush_input(port, resource)
        write_all(port, request, resource)
        bad_crc = 0

        def match(buf: bytes) -> int:
            nonlocal bad_crc
            n = codec.match_reply(buf, function, self.address)
            if n < 0:
                length = codec.reply_length(buf, function, self.address)
                if length is not None and len(buf) >= length:
                    bad_crc += 1
            return n

        scanner = FrameScanner(match)
        received = 0
        deadline = time.monotonic() + self.timeout_s
        while True:
            data = read_available(port, resource)
            received += len(data)
            frames = scanner.feed(data) if data else []
            if frames:
                if scanner.skipped_bytes:
                    self._count("garbage", f"{scanner.skipped_bytes} stray bytes around the reply")
                return codec.parse_reply(frames[0])
            if time.monotonic() >= deadline:
                break
        where = f"address {self.address} on {resource}"
        if received == 0:
            raise ExchangeFailed("no_reply", f"no reply from {where} within {self.timeout_s} s")
        if bad_crc:
            raise ExchangeFailed("bad_crc", f"reply from {where} failed its CRC check")
        pending = received - scanner.skipped_bytes
        if pending > 0:
            raise ExchangeFailed("truncated", f"reply from {where} stopped after {pending} bytes")
        raise ExchangeFailed("garbage", f"{received} bytes from {where}, none a valid reply")

    def _count(self, kind: str, message: str) -> None:
        if self._ctx is not None:
            self._ctx.count_error(self.stream, kind, message)

    # ------------------------------------------------------------------------------ polling
    def read(self) -> dict[str, dict[str, float]]:
        try:
            reply = self._transact(codec.read_measurement_request(self.address), codec.READ_INPUT)
        except TransientError:
            if self._last_failure != "no_reply":  # bytes arrive, yet nothing parses
                self._check_silence()
            raise
        if isinstance(reply, codec.ExceptionReply):
            self._count("modbus_exception", reply.text)
            raise TransientError(f"{self.stream}: PZEM-004T answered {reply.text}")
        if not isinstance(reply, codec.RegistersReply) or len(reply.registers) != codec.MEASUREMENT_COUNT:
            self._count("malformed", f"expected {codec.MEASUREMENT_COUNT} registers, got {reply}")
            raise TransientError(f"{self.stream}: malformed measurement reply")
        m = codec.decode_measurement(reply.registers)
        energy_j, was_reset = self._energy.update(m.energy_wh * WH_TO_J)
        if was_reset:
            self._count("energy_counter_reset",
                        "energy counter went backwards (reset or roll-over); energy_j continues")
        return {self.stream: {
            "power_w": m.power_w, "energy_j": energy_j, "voltage_v": m.voltage_v,
            "current_a": m.current_a, "frequency_hz": m.frequency_hz,
            "power_factor": m.power_factor,
        }}

    def _check_silence(self) -> None:
        if self._silence is None:
            return
        silent = self._silence.check()
        if silent is not None:
            self._count("silence", SilenceWatch.message(self.resource, silent, self.settings))


def flush_input(port: serial.Serial, resource: str) -> None:
    """Drop whatever is waiting in the input buffer (``Disconnected`` if the port is gone)."""
    try:
        port.reset_input_buffer()
    except (serial.SerialException, OSError, termios.error) as exc:  # tcflush: EIO when unplugged
        raise Disconnected(f"serial port {resource} disconnected: {exc}") from None


def create(spec: SourceSpec) -> Pzem004tSource:
    return Pzem004tSource(spec, OPTIONS.parse(spec))
