"""``esphome``: plugs and energy monitors flashed with ESPHome, read from the UART logger.

Spec: ``esphome:/dev/ttyUSB0?power=Power&voltage=Voltage&current=Current&energy=Energy``

Options:
    baudrate (int, 115200) : logger speed (ESPHome's default).
    power, voltage, current, energy, frequency, power_factor (str) : the sensor *names* as
        configured in the YAML (defaults ``Power``, ``Voltage``, ``Current``, ``Energy``,
        ``Frequency``, ``Power Factor``). A name set to an empty string is ignored.
    silence_s (float, 5) : after this long without a parseable logger line, count a
        ``silence`` error ("wrong baud rate?").
    stale_s (float, 5) : no sensor state for this long is a gap (``TransientError``); raise
        it for an ``update_interval`` longer than a few seconds.
    group_s (float, 0.05) : sensor lines closer than this are one reading (a chip frame
        publishes voltage, current, power and energy back to back).

Streaming: one reading per group of sensor lines, stamped at the arrival of its power line
(or its first line). ``power_w`` is the component's own average (``window_mean``; cse7766
since 2024.2 publishes per chip frame, hlw8012/pzemac per ``update_interval``); ``energy_j``
is the energy sensor (Wh/kWh) relative to the first reading. Facts: :mod:`.esphome_codec`.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

import serial

from hwval.sources.base import (
    Key, SourceContext, SourceSpec, StreamInfo, TransientError,
)
from hwval.sources.options import DriverOptions, Option
from hwval.sources.serial import esphome_codec as codec
from hwval.sources.serial.common import RelativeEnergy, require_positive
from hwval.sources.serial.emulator_identity import emulated_identity
from hwval.sources.serial.framing import LineBuffer
from hwval.sources.serial.port import (
    SilenceWatch, close_quietly, line_settings, open_serial, read_available,
)

SENSOR_OPTIONS = {"power": ("power_w", "Power", "W"), "voltage": ("voltage_v", "Voltage", "V"),
                  "current": ("current_a", "Current", "A"), "energy": ("energy_j", "Energy", "J"),
                  "frequency": ("frequency_hz", "Frequency", "Hz"),
                  "power_factor": ("power_factor", "Power Factor", "1")}
OPTIONS = DriverOptions("esphome", "an ESPHome node's serial log (sensor state lines)",
                        "a serial port (/dev/ttyUSB0)", (
    Option("baudrate", int, 115200, "logger speed (ESPHome's default)", "baud", gt=0),
    Option("silence_s", float, 5.0, "nothing parseable for this long is a likely wiring or "
           "baud-rate fault", "s", gt=0),
    Option("group_s", float, 0.05, "states this close together form one reading", "s", gt=0),
    Option("stale_s", float, 5.0, "no sensor state for this long is a gap (raise it for an "
           "update_interval of more than a few seconds)", "s", gt=0),
    *(Option(name, str, default, f"name of the sensor giving {key}, as in the node's YAML "
             "(empty: not read)")
      for name, (key, default, _unit) in SENSOR_OPTIONS.items()),
))
KEY_INFO = {
    "power_w": Key("power_w", "W", "window_mean", None, "ESPHome power sensor state"),
    "voltage_v": Key("voltage_v", "V", "instant"),
    "current_a": Key("current_a", "A", "instant"),
    "energy_j": Key("energy_j", "J", "counter", None, "energy sensor relative to first reading"),
    "frequency_hz": Key("frequency_hz", "Hz", "instant"),
    "power_factor": Key("power_factor", "1", "instant"),
}


class EspHomeSource:
    mode = "streaming"

    def __init__(self, spec: SourceSpec, options: Mapping[str, Any] | None = None) -> None:
        opts = OPTIONS.parse(spec) if options is None else options
        self.name, self.resource = spec.name, spec.resource
        self.period_s = spec.period_s
        self.baudrate = opts["baudrate"]
        #: sensor name on the wire -> (hwval key, SI unit it must convert to)
        self.sensors: dict[str, tuple[str, str]] = {}
        for option, (key, default, si_unit) in SENSOR_OPTIONS.items():
            sensor = opts[option]
            if sensor:
                if sensor in self.sensors:
                    raise ValueError(f"esphome: sensor name {sensor!r} given for two options")
                self.sensors[sensor] = (key, si_unit)
        require_positive("esphome", period_s=spec.period_s)
        self.group_ns = int(opts["group_s"] * 1e9)
        self.silence = SilenceWatch(opts["silence_s"])
        self.stale_s = opts["stale_s"]
        self._last_state_s = 0.0
        self.settings = line_settings(self.baudrate)
        self.port: serial.Serial | None = None
        self.lines = LineBuffer()
        self.energy = RelativeEnergy()
        self.ctx: SourceContext | None = None

    def open(self, ctx: SourceContext) -> list[StreamInfo]:
        self.ctx = ctx
        self.port = open_serial(self.resource, baudrate=self.baudrate, timeout_s=0.02)
        self.lines.clear()
        self.silence.reset()
        self._last_state_s = time.monotonic()
        identity: dict[str, Any] = {"port": self.resource, "settings": self.settings,
                                    "sensors": {k: s for s, (k, _) in self.sensors.items()}}
        # the logger names nothing at open: an emulator is known by the terminal it owns
        emulated, claim = emulated_identity(self.port)
        identity.update(claim)
        keys = tuple(KEY_INFO[key] for key, _ in self.sensors.values())
        return [StreamInfo(name=self.name, kind="hardware", driver="esphome",
                           resource=self.resource, scope="wall", period_s=self.period_s,
                           keys=keys, identity=identity, emulated=emulated,
                           notes=("ESPHome logger lines carry no timestamp: receipt time",))]

    def close(self) -> None:
        close_quietly(self.port)
        self.port = None

    def run(self, ctx: SourceContext) -> None:
        assert self.port is not None
        pending: dict[str, float] = {}
        first_ns = power_ns = last_ns = 0
        while not ctx.stop.is_set():
            data = read_available(self.port, self.resource)
            now = time.monotonic_ns()
            if pending and (not data or now - last_ns > self.group_ns):
                self._emit(ctx, pending, power_ns or first_ns)
                pending, first_ns, power_ns = {}, 0, 0
            for line in self.lines.feed(data):
                state = self._state(line)
                if state is None:
                    continue
                key = self._key(state)
                if key is None:
                    continue
                if key in pending:  # the next frame began: close this reading
                    self._emit(ctx, pending, power_ns or first_ns)
                    pending, first_ns, power_ns = {}, 0, 0
                pending[key] = state.value
                self._last_state_s = time.monotonic()
                first_ns = first_ns or now
                last_ns = now
                if key == "power_w":
                    power_ns = now
            silent = self.silence.check()
            if silent is not None:
                ctx.count_error(self.name, "silence",
                                SilenceWatch.message(self.resource, silent, self.settings))
            waited = time.monotonic() - self._last_state_s
            if waited > self.stale_s:
                self._last_state_s = time.monotonic()  # next gap report after stale_s more
                raise TransientError(f"no sensor state from {self.resource} for {waited:.1f} s")

    def _state(self, line: bytes) -> codec.SensorState | None:
        parsed = codec.parse_line(line)
        if parsed is None:
            if line.strip():
                self._count("garbage", f"not an ESPHome logger line: {line[:40]!r}")
            return None
        self.silence.frame()
        try:
            return codec.decode_state(parsed[2], parsed[1])
        except codec.EspHomeDecodeError as exc:
            if exc.sensor is None or exc.sensor in self.sensors:  # others are not our business
                self._count("bad_value", str(exc))
            return None

    def _key(self, state: codec.SensorState) -> str | None:
        wanted = self.sensors.get(state.name)
        if wanted is None:
            return None  # another sensor (temperature, wifi signal...)
        key, si_unit = wanted
        if state.si_unit != si_unit:
            self._count("wrong_unit", f"sensor {state.name!r} reports {state.unit!r}, "
                                      f"expected a unit convertible to {si_unit}")
            return None
        if math.isnan(state.value):
            return None  # the sensor has no value yet: not an error
        return key

    def _emit(self, ctx: SourceContext, values: dict[str, float], t_ns: int) -> None:
        out = dict(values)
        if "energy_j" in out:
            out["energy_j"], reset = self.energy.update(out["energy_j"])
            if reset:
                self._count("energy_reset", "energy sensor went backwards (device reboot?)")
        ctx.emit(self.name, out, t_ns=t_ns)

    def _count(self, kind: str, message: str) -> None:
        if self.ctx is not None:
            self.ctx.count_error(self.name, kind, message)


def create(spec: SourceSpec) -> EspHomeSource:
    return EspHomeSource(spec, OPTIONS.parse(spec))
