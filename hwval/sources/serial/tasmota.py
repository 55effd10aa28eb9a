"""``tasmota``: power-monitoring plugs running Tasmota, read on their serial console.

Spec: ``tasmota:/dev/ttyUSB0?baudrate=115200&command=status10&channel=0&period_s=1``

Options:
    baudrate (int, 115200) : console speed.
    command (str, ``status10``) : what to poll: ``status10`` or ``status8`` (both answer
        ``StatusSNS``; very old firmware answers ``Status 8`` with ``StatusPWR``). When a
        ``Status 10`` answer carries no ENERGY (old firmware), the driver switches to
        ``Status 8`` by itself and records an event.
    mode (str, ``poll``) : ``poll`` sends the command every ``period_s`` (default 1 s);
        ``sensor`` sends nothing and records the periodic ``tele/.../SENSOR`` messages
        (``TelePeriod``, at least 10 s on real firmware); ``period_s`` is then the expected
        telemetry period.
    channel (int, 0) : 1..N picks one channel of a multi-channel plug; 0 sums power, current
        and energy over channels.
    reply_timeout_s (float) : how long a poll waits for its answer (default min(1, 0.8 period)).
    silence_s (float) : after this long without a parseable line, count a ``silence`` error
        ("wrong baud rate?"); default 5 s (poll) or 3 telemetry periods (sensor).
    stale_s (float, 2.5 telemetry periods) : ``mode=sensor`` only: no SENSOR message for this
        long is a gap (``TransientError``), as a failed poll is in ``poll`` mode.

Records ``power_w`` (W, the chip's short average: ``window_mean`` of unknown window),
``voltage_v``, ``current_a``, ``power_factor``, ``apparent_power_va``, ``reactive_power_var``,
``frequency_hz`` where the plug reports them, and ``energy_j`` from ``Total`` (kWh, at the
plug's EnergyRes) relative to the first reading. Identity: ``Status 2`` firmware version,
``WattRes``/``EnergyRes``. Protocol facts and sources: :mod:`.tasmota_codec`.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import serial

from hwval.runfile.schema import EventName
from hwval.sources.base import (
    Key, SourceContext, SourceSpec, StreamInfo, TransientError,
)
from hwval.sources.options import DriverOptions, Option
from hwval.sources.serial import tasmota_codec as codec
from hwval.sources.emulated import says_emulated
from hwval.sources.serial.common import RelativeEnergy, require_positive
from hwval.sources.serial.framing import LineBuffer
from hwval.sources.serial.port import (
    SilenceWatch, bytes_waiting, close_quietly, line_settings, open_serial, read_available, write_all,
)

COMMANDS = {"status10": ("Status 10", "STATUS10"), "status8": ("Status 8", "STATUS8")}
OPTIONS = DriverOptions("tasmota", "a Tasmota plug's serial console (Status 10 polls or SENSOR telemetry)",
                        "a serial port (/dev/ttyUSB0)", (
    Option("baudrate", int, 115200, "console speed", "baud", gt=0),
    Option("command", str, "status10", "the poll command (status10 falls back to status8 by "
           "itself on firmware whose answer has no ENERGY)", choices=tuple(COMMANDS)),
    Option("mode", str, "poll", "poll: send the command every period_s; sensor: listen to "
           "tele/SENSOR messages", choices=("poll", "sensor")),
    Option("channel", int, 0, "1..N reads one channel of a multi-channel plug; 0 sums power, "
           "current and energy over channels", ge=0),
    Option("reply_timeout_s", float, None, "wait this long for a poll's answer", "s", gt=0,
           default_text="min(1, 0.8 x period_s)"),
    Option("silence_s", float, None, "nothing parseable for this long is a likely wiring or "
           "baud-rate fault", "s", gt=0, default_text="5 (poll), 3 x period_s (sensor)"),
    Option("stale_s", float, None, "mode=sensor: no telemetry for this long is a gap", "s", gt=0,
           default_text="2.5 x period_s"),
))
#: keys always declared; others are declared when the plug's first answer has them
BASE_KEYS = ("power_w", "voltage_v", "current_a", "power_factor")
KEY_INFO = {
    "power_w": Key("power_w", "W", "window_mean", None,
                   "active power as the plug's chip averages it (HLW8012/CSE7766/BL0937 period)"),
    "voltage_v": Key("voltage_v", "V", "instant"),
    "current_a": Key("current_a", "A", "instant"),
    "power_factor": Key("power_factor", "1", "instant"),
    "apparent_power_va": Key("apparent_power_va", "VA", "window_mean"),
    "reactive_power_var": Key("reactive_power_var", "var", "window_mean"),
    "frequency_hz": Key("frequency_hz", "Hz", "instant"),
    "energy_j": Key("energy_j", "J", "counter", None,
                    "plug's Total (kWh at its EnergyRes) relative to the first reading"),
}


class TasmotaSource:
    def __init__(self, spec: SourceSpec, options: Mapping[str, Any] | None = None) -> None:
        opts = OPTIONS.parse(spec) if options is None else options
        self.spec = spec
        self.name = spec.name
        self.resource = spec.resource
        self.baudrate = opts["baudrate"]
        self.command, self.reply_name = COMMANDS[opts["command"]]
        self.listen_sensor = opts["mode"] == "sensor"
        self.mode = "streaming" if self.listen_sensor else "polled"
        self.period_s = (spec.period_s if spec.period_s is not None
                         else 10.0 if self.listen_sensor else 1.0)
        self.channel = opts["channel"]
        require_positive("tasmota", period_s=self.period_s)
        if opts["stale_s"] is not None and not self.listen_sensor:
            raise ValueError("tasmota: option 'stale_s' applies to mode=sensor only (in poll "
                             "mode every unanswered poll is already a gap)")
        # a missed telemetry message is late by a whole period: wait for 2.5 of them
        self.stale_s = opts["stale_s"] or 2.5 * self.period_s
        self._last_sensor_s = 0.0
        self.reply_timeout_s = opts["reply_timeout_s"] or min(1.0, 0.8 * self.period_s)
        default_silence = 3 * self.period_s if self.listen_sensor else 5.0
        self.silence = SilenceWatch(opts["silence_s"] or default_silence)
        self.settings = line_settings(self.baudrate)
        self.port: serial.Serial | None = None
        self.lines = LineBuffer()
        self.energy = RelativeEnergy()
        self.ctx: SourceContext | None = None
        self.keys: tuple[str, ...] = ()

    # ---- lifecycle ------------------------------------------------------------------------
    def open(self, ctx: SourceContext) -> list[StreamInfo]:
        self.ctx = ctx
        self.port = open_serial(self.resource, baudrate=self.baudrate, timeout_s=0.05)
        self.lines.clear()
        self.silence.reset()
        self._last_sensor_s = time.monotonic()
        identity: dict[str, Any] = {"port": self.resource, "settings": self.settings}
        notes: list[str] = []
        fw = self._query("Status 2", lambda m: m.name == "STATUS2")
        firmware = codec.firmware_identity(fw.payload) if fw is not None else {}
        if fw is not None:
            identity.update(firmware)
        else:
            notes.append("no answer to 'Status 2' at open: firmware version unknown")
        for setting in ("WattRes", "EnergyRes"):
            answer = self._query(setting, lambda m, s=setting: isinstance(m.payload, dict)
                                 and s in m.payload)
            if answer is not None:
                identity[setting.lower()] = answer.payload[setting]
        if identity.get("energyres", 3) < 3:
            notes.append(f"EnergyRes {identity['energyres']}: energy resolution is coarse; "
                         "set EnergyRes 5 (see firmware_configs/tasmota)")
        keys = list(BASE_KEYS)
        if not self.listen_sensor:
            probe = self._poll_once()
            if probe is not None:
                keys = [k for k in KEY_INFO if k in probe or k in BASE_KEYS]
        if "energy_j" not in keys:
            keys.append("energy_j")
        self.keys = tuple(keys)
        return [StreamInfo(
            name=self.name, kind="hardware", driver="tasmota", resource=self.resource,
            scope="wall", period_s=self.period_s, keys=tuple(KEY_INFO[k] for k in self.keys),
            identity=identity, emulated=says_emulated(firmware.values()), notes=tuple(notes))]

    def close(self) -> None:
        close_quietly(self.port)
        self.port = None

    # ---- polled ---------------------------------------------------------------------------
    def read(self) -> Mapping[str, Mapping[str, float]]:
        values = self._poll_once()
        if values is None:
            raise TransientError(f"no valid answer to '{self.command}' from {self.resource} "
                                 f"within {self.reply_timeout_s:.2f} s")
        return {self.name: self._finish(values)}

    def _poll_once(self) -> dict[str, float] | None:
        """Send the command, return the decoded ENERGY of its answer (or ``None``)."""
        message = self._query(self.command, lambda m: m.name == self.reply_name)
        if message is None:
            return None
        energy = codec.energy_object(message.payload)
        if energy is None:
            if self.command == "Status 10":
                # old firmware: Status 10 lists sensors only, energy lives in Status 8 (StatusPWR)
                self.command, self.reply_name = COMMANDS["status8"]
                self._event(EventName.ERROR, kind="fallback",
                            message="'Status 10' answer has no ENERGY (old firmware?): "
                                    "polling 'Status 8' from now on")
            return None
        return self._decode(energy)

    def _query(self, command: str, wanted: Callable[[codec.Message], bool]) -> codec.Message | None:
        """Send ``command`` and wait up to ``reply_timeout_s`` for a message ``wanted``.

        A damaged answer ends the wait at once (the firmware will not repeat it)."""
        assert self.port is not None
        self._drain()
        write_all(self.port, command.encode("ascii") + b"\n", self.resource)
        deadline = time.monotonic() + self.reply_timeout_s
        while time.monotonic() < deadline:
            data = read_available(self.port, self.resource)
            for line in self.lines.feed(data):
                try:
                    message = self._message(line)
                except codec.TasmotaDecodeError:
                    return None
                if message is not None and wanted(message):
                    return message
        self._check_silence()
        return None

    def _drain(self) -> None:
        """Consume lines that arrived since the last poll (late answers, info logs): they must
        not be taken for the answer to the next command."""
        assert self.port is not None
        while bytes_waiting(self.port, self.resource):
            for line in self.lines.feed(read_available(self.port, self.resource)):
                try:
                    self._message(line)
                except codec.TasmotaDecodeError:
                    continue  # already counted as bad_payload

    # ---- streaming (mode=sensor) ----------------------------------------------------------
    def run(self, ctx: SourceContext) -> None:
        assert self.port is not None
        while not ctx.stop.is_set():
            data = read_available(self.port, self.resource)
            t_ns = time.monotonic_ns()
            for line in self.lines.feed(data):
                try:
                    message = self._message(line)
                except codec.TasmotaDecodeError:
                    continue
                if message is None or message.name != "SENSOR":
                    continue
                energy = codec.energy_object(message.payload)
                if energy is None:
                    continue  # a SENSOR message of other sensors (temperature...) only
                values = self._decode(energy)
                if values is not None:
                    self._last_sensor_s = time.monotonic()
                    ctx.emit(self.name, self._finish(values), t_ns=t_ns)
            self._check_silence()
            waited = time.monotonic() - self._last_sensor_s
            if waited > self.stale_s:
                self._last_sensor_s = time.monotonic()  # the next gap report after stale_s more
                raise TransientError(f"no SENSOR telemetry from {self.resource} for "
                                     f"{waited:.1f} s (TelePeriod {self.period_s:g} s expected)")

    # ---- shared ---------------------------------------------------------------------------
    def _message(self, line: bytes) -> codec.Message | None:
        """Classify one console line; counts garbage and damaged messages."""
        log = codec.parse_log_line(line)
        if log is None:
            if line.strip():
                self._count("garbage", f"not a console log line: {line[:40]!r}")
            return None
        try:
            message = codec.parse_message(log.text)
        except codec.TasmotaDecodeError as exc:
            self._count("bad_payload", str(exc))
            raise
        self.silence.frame()
        return message

    def _decode(self, energy: Mapping[str, Any]) -> dict[str, float] | None:
        try:
            return codec.decode_energy(energy, self.channel)
        except codec.TasmotaDecodeError as exc:
            self._count("bad_payload", str(exc))
            return None

    def _finish(self, values: dict[str, float]) -> dict[str, float]:
        out = {k: v for k, v in values.items() if k in self.keys}
        total_kwh = values.get("total_kwh")
        if total_kwh is not None:
            energy_j, reset = self.energy.update(total_kwh * codec.J_PER_KWH)
            if reset:
                self._count("energy_reset", "plug energy counter went backwards (reset?)")
            out["energy_j"] = energy_j
        return out

    def _check_silence(self) -> None:
        silent = self.silence.check()
        if silent is not None:
            self._count("silence", SilenceWatch.message(self.resource, silent, self.settings))

    def _count(self, kind: str, message: str) -> None:
        if self.ctx is not None:
            self.ctx.count_error(self.name, kind, message)

    def _event(self, name: str, **detail: Any) -> None:
        if self.ctx is not None:
            self.ctx.event(name, self.name, **detail)


def create(spec: SourceSpec) -> TasmotaSource:
    return TasmotaSource(spec, OPTIONS.parse(spec))
