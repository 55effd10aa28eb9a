"""``hwval emulate tasmota``: a power-monitoring plug's Tasmota serial console on a pty.

Speaks the console as the firmware does (see :mod:`hwval.sources.serial.tasmota_codec` for the
facts and sources): input is buffered as printable ASCII, LF executes, CR is dropped, a byte
above 0x7F discards the buffer; every command is echoed ``CMD: <text>``; answers are log lines
``HH:MM:SS.mmm RSL: STATUS10 = {...}`` (``--mqtt`` selects the MQT/RSL topic forms).

Power comes from the bench model rounded to WattRes decimals (default 0: integer watts);
``Total`` accumulates the metered energy (the bench's exact integral through the model's gain
and offset) from a starting value and is shown at EnergyRes decimals (default 3). Supported commands: ``Status [0|2|8|10]``, ``WattRes``,
``VoltRes``, ``AmpRes``, ``EnergyRes``, ``FreqRes`` (query or set), ``TelePeriod`` (query, set
10..3600, or no argument = publish now), ``SerialLog``; anything else answers
``{"Command":"Unknown"}``.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timedelta

import click

from hwval.benchmodel import Bench, MeterModel
from hwval.emulators.options import bench_options
from hwval.emulators.pty import FaultPlan, PtyEmulator, fault_options, run_until_signal
from hwval.sources.emulated import EMULATOR_MARK
from hwval.sources.serial import tasmota_codec as codec

RES_LIMITS = {"WattRes": 3, "VoltRes": 3, "AmpRes": 3, "FreqRes": 3, "EnergyRes": 5}
NEW_VERSION = "13.1.0(tasmota)"
OLD_VERSION = "5.14.0"
#: extra channels of a multi-channel plug carry a constant load each (a lamp on relay 2...)
EXTRA_CHANNEL_W = 10.0
#: mains frequency the chip reports with --frequency (a 50 Hz grid)
LINE_FREQUENCY_HZ = 50.0


DEFAULT_RES = {"WattRes": 0, "VoltRes": 0, "AmpRes": 3, "EnergyRes": 3, "FreqRes": 0}


def initial_resolution(resolution: dict[str, int]) -> dict[str, int]:
    """The resolutions the plug starts with: the defaults overridden by ``resolution``. An
    unknown name or a value out of the firmware's range is refused (``ValueError``): a console
    command is clamped as the firmware does, but a configured value that would be clamped is a
    mistake the operator should hear about."""
    res = dict(DEFAULT_RES)
    for setting, value in resolution.items():
        if setting not in RES_LIMITS:
            raise ValueError(f"unknown resolution {setting!r} (known: {', '.join(RES_LIMITS)})")
        limit = RES_LIMITS[setting]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
            raise ValueError(f"{setting} must be a whole number of decimals 0..{limit}, "
                             f"got {value!r}")
        res[setting] = value
    return res


class TasmotaEmulator(PtyEmulator):
    device = "tasmota"

    def __init__(self, bench: Bench, model: MeterModel, faults: FaultPlan | None = None, *,
                 baudrate: int = 115200, mqtt: str = "off", topic: str = "tasmota_5A9AE8",
                 heap: bool = False, channels: int = 1, old_firmware: bool = False,
                 tele_period_s: int = 300, total_start_kwh: float = 6.404,
                 resolution: dict[str, int] | None = None, frequency: bool = False) -> None:
        # checked before the base class makes the link folder, which a refused option would leak
        if mqtt not in ("connected", "disconnected", "off"):
            raise ValueError(f"mqtt must be connected, disconnected or off, got {mqtt!r}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        res = initial_resolution(resolution or {})
        self.baudrate = baudrate
        super().__init__(bench, model, faults)
        self.mqtt, self.topic, self.heap, self.channels = mqtt, topic, heap, channels
        self.old_firmware = old_firmware
        self.res = res
        self.tele_period_s = tele_period_s
        self.serial_log = 2
        self.frequency = frequency
        self.total_start_kwh = total_start_kwh
        self.tick_period_s = 0.2  # the firmware's energy tick (200 ms)
        self._inbuf = bytearray()
        self._next_tele_s = time.monotonic() + tele_period_s if tele_period_s else None
        self._last_tele_energy_j = 0.0
        self._wall0 = datetime.now() - timedelta(seconds=bench.t_s())

    # ---- console input --------------------------------------------------------------------
    def on_host_bytes(self, data: bytes) -> None:
        for byte in data:
            if byte == 0x0A:
                command = self._inbuf.decode("ascii").strip()
                self._inbuf.clear()
                if command:
                    self.execute(command)
            elif byte == 0x0D:
                continue
            elif byte > 0x7F:
                self._inbuf.clear()  # the firmware discards the whole buffer
            elif byte >= 0x20:
                self._inbuf.append(byte)

    def execute(self, command: str) -> None:
        self.log(f"CMD: {command}")
        name, _, arg = command.partition(" ")
        arg = arg.strip()
        # "Status10" == "Status 10": the firmware reads trailing digits as the index
        stripped = name.rstrip("0123456789")
        if stripped != name and not arg:
            name, arg = stripped, name[len(stripped):]
        key = name.lower()
        if key == "status":
            self.status(arg or "0")
        elif key in (k.lower() for k in RES_LIMITS):
            setting = next(k for k in RES_LIMITS if k.lower() == key)
            if arg.isdigit():  # a non-numeric argument is ignored, as the firmware does
                self._set_res(setting, int(arg))
            self.publish("RESULT", json.dumps({setting: self.res[setting]}, separators=(",", ":")))
        elif key == "teleperiod":
            if not arg:
                self.publish_sensor()
            elif arg.isdigit():
                value = int(arg)
                self.tele_period_s = 0 if value == 0 else min(3600, max(10, value))
                self._next_tele_s = (time.monotonic() + self.tele_period_s
                                     if self.tele_period_s else None)
            self.publish("RESULT", f'{{"TelePeriod":{self.tele_period_s}}}')
        elif key == "seriallog":
            if arg.isdigit():
                self.serial_log = min(4, int(arg))
            self.publish("RESULT", f'{{"SerialLog":{self.serial_log}}}')
        else:
            self.publish("RESULT", '{"Command":"Unknown"}')

    def _set_res(self, setting: str, value: int) -> None:
        # a console value out of range is clamped, as the firmware does (the start values were
        # checked strictly by initial_resolution)
        self.res[setting] = min(RES_LIMITS[setting], max(0, value))

    # ---- answers --------------------------------------------------------------------------
    def status(self, index: str) -> None:
        now = self.clock_text()
        if index == "2":
            version = OLD_VERSION if self.old_firmware else NEW_VERSION
            payload = (f'{{"StatusFWR":{{"Version":"{version}","BuildDateTime":"2023-08-14T12:00:00",'
                       f'"Boot":31,"Core":"2_7_4_9","SDK":"2.2.2-dev(38a443e)","CpuFrequency":80,'
                       # the identity says it is an emulator (hwval.sources.emulated)
                       f'"Hardware":"ESP8266EX {EMULATOR_MARK}","CR":"369/699"}}}}')
            self.publish("STATUS2", payload, stat=True)
        elif index in ("8", "10"):
            if self.old_firmware:
                if index == "10":  # old firmware: sensors only, no energy here
                    self.publish("STATUS10", f'{{"StatusSNS":{{"Time":"{now}"}}}}', stat=True)
                else:
                    self.publish("STATUS8", f'{{"StatusPWR":{self.energy_json()}}}', stat=True)
            else:
                payload = f'{{"StatusSNS":{{"Time":"{now}","ENERGY":{self.energy_json(True)}}}}}'
                self.publish(f"STATUS{index}", payload, stat=True)
        elif index == "0":
            self.publish("STATUS", f'{{"Status":{{"Module":43,"DeviceName":"Tasmota",'
                                   f'"Topic":"{self.topic}","TelePeriod":{self.tele_period_s}}}}}',
                         stat=True)
        else:
            self.publish("RESULT", '{"Command":"Unknown"}')

    def publish_sensor(self) -> None:
        """What ``TelePeriod`` (and the telemetry timer) publishes: ``tele/<topic>/SENSOR``."""
        energy_j = self.metered_energy_j(0.0, self.bench.t_s())
        period_wh = (energy_j - self._last_tele_energy_j) / 3600.0
        self._last_tele_energy_j = energy_j
        body = self.energy_json(True, period_wh=period_wh)
        self.publish("SENSOR", f'{{"Time":"{self.clock_text()}","ENERGY":{body}}}', stat=False)

    def energy_json(self, with_start: bool = False, period_wh: float | None = None) -> str:
        power_w = self.bench.read(self.model)
        powers = [power_w] + [EXTRA_CHANNEL_W] * (self.channels - 1)
        pf = self.bench.power_factor
        voltage_v = self.bench.voltage_v
        # one consistent set: I = P / (V PF), S = V I, Q = sqrt(S^2 - P^2). The firmware keeps
        # its measurements as floats and derives S, Q and PF from them; only printing the ENERGY
        # JSON rounds each to its resolution (docs/protocols/tasmota.md#resolution), which
        # encode_energy does
        w = list(powers)
        current = [p / (voltage_v * pf) for p in w]
        apparent = [voltage_v * i for i in current]
        reactive = [math.sqrt(max(s * s - p * p, 0.0)) for p, s in zip(w, apparent)]
        energy_j = self.metered_energy_j(0.0, self.bench.t_s())
        total_kwh = self.total_start_kwh + energy_j / codec.J_PER_KWH
        one = self.channels == 1
        values = {
            "total_kwh": total_kwh, "yesterday_kwh": 5.340, "today_kwh": energy_j / codec.J_PER_KWH,
            "power_w": w[0] if one else w, "apparent_power_va": apparent[0] if one else apparent,
            "reactive_power_var": reactive[0] if one else reactive,
            "power_factor": pf if one else [pf] * self.channels,
            "voltage_v": voltage_v, "current_a": current[0] if one else current,
            "frequency_hz": LINE_FREQUENCY_HZ,
        }
        start = "2024-01-01T00:00:00" if with_start else None
        return codec.encode_energy(values, self.res, period_wh=period_wh, total_start=start,
                                   with_frequency=self.frequency)

    def publish(self, name: str, payload: str, stat: bool = True) -> None:
        if self.mqtt == "off":
            topic = name
        else:
            topic = f"{'stat' if stat else 'tele'}/{self.topic}/{name}"
        kind = "MQT" if self.mqtt == "connected" else "RSL"
        self.send_frame(self._line(codec.format_message(kind, topic, payload)))

    def log(self, text: str) -> None:
        self.write_raw(self._line(text))

    def clock_text(self) -> str:
        return (self._wall0 + timedelta(seconds=self.bench.t_s())).strftime("%Y-%m-%dT%H:%M:%S")

    def _line(self, text: str) -> bytes:
        now = self._wall0 + timedelta(seconds=self.bench.t_s())
        midnight_s = now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6
        return codec.format_log_line(midnight_s, text, heap_kb=25 if self.heap else None,
                                     with_ms=not self.old_firmware)

    # ---- periodic telemetry ---------------------------------------------------------------
    def tick(self) -> None:
        if self._next_tele_s is not None and time.monotonic() >= self._next_tele_s:
            self._next_tele_s += self.tele_period_s
            self.publish_sensor()

    # ---- faults in Tasmota's own terms ----------------------------------------------------
    def garbage(self) -> bytes:
        # line noise / boot chatter at another speed: high bytes, then a line end, so each
        # injection damages exactly one console line
        return bytes(0x80 | self.rng.randrange(128) for _ in range(self.rng.randint(1, 12))) + b"\r\n"

    def truncate(self, frame: bytes) -> bytes:
        # cut inside the JSON payload (keeping the line end): one damaged message per fault
        start = frame.index(b" = {") + 4
        end = len(frame) - 3
        return frame[: self.rng.randint(start, end)] + b"\r\n"

    def corrupt(self, frame: bytes) -> bytes:
        # no checksum on the console: a damaged byte makes the JSON invalid instead
        start = frame.index(b" = {") + 3
        i = self.rng.randint(start, len(frame) - 3)
        return frame[:i] + b"\x01" + frame[i + 1:]


@click.command()
@bench_options(window_s=0.2, latency_s=0.2)
@fault_options
@click.option("--baudrate", type=int, default=115200, show_default=True,
              help="console line speed; a driver opening the port at another speed sees garbage")
@click.option("--mqtt", type=click.Choice(["off", "connected", "disconnected"]), default="off",
              show_default=True, help="MQTT state: topic form of published messages")
@click.option("--topic", default="tasmota_5A9AE8", show_default=True, help="device topic")
@click.option("--heap/--no-heap", default=False, help="SetOption130: heap after the time")
@click.option("--channels", type=int, default=1, show_default=True,
              help="relay channels (extra ones carry 10 W each)")
@click.option("--old-firmware", is_flag=True, help="pre-6.x: StatusPWR in Status 8, no ms")
@click.option("--tele-period", type=click.IntRange(0, 3600), default=300, show_default=True,
              help="TelePeriod in s (0 off; firmware clamps 1..9 to 10)")
@click.option("--watt-res", type=click.IntRange(0, 3), default=0, show_default=True,
              help="WattRes: decimals of the reported power")
@click.option("--volt-res", type=click.IntRange(0, 3), default=0, show_default=True,
              help="VoltRes: decimals of the reported voltage")
@click.option("--amp-res", type=click.IntRange(0, 3), default=3, show_default=True,
              help="AmpRes: decimals of the reported current")
@click.option("--energy-res", type=click.IntRange(0, 5), default=3, show_default=True,
              help="EnergyRes: decimals of the reported kWh totals")
@click.option("--frequency/--no-frequency", default=False, help="chip reports Frequency")
def cli(bench: Bench, model: MeterModel, ready_file: str | None, faults: FaultPlan,
        counts_file: str | None, baudrate: int, mqtt: str, topic: str, heap: bool, channels: int,
        old_firmware: bool, tele_period: int, watt_res: int, volt_res: int, amp_res: int,
        energy_res: int, frequency: bool) -> None:
    """Emulate a Tasmota plug's serial console.

    \b
    Example:
      hwval emulate tasmota --profile steps --energy-res 5
      hwval capture -m 'tasmota:/tmp/hwval-emu-tasmota-XXXX/tty' --duration 10 -o dry.h5
    """
    if 0 < tele_period < 10:
        tele_period = 10
    try:
        emulator = TasmotaEmulator(
            bench, model, faults, baudrate=baudrate, mqtt=mqtt, topic=topic, heap=heap,
            channels=channels, old_firmware=old_firmware, tele_period_s=tele_period,
            resolution={"WattRes": watt_res, "VoltRes": volt_res, "AmpRes": amp_res,
                        "EnergyRes": energy_res}, frequency=frequency)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    run_until_signal(emulator, bench, ready_file, counts_file)
