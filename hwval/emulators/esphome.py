"""``hwval emulate esphome``: the UART logger of a plug running ESPHome (cse7766 component).

Every ``--interval-s`` it prints the states a power monitor publishes, in the component's order
(voltage, current, power, energy, then frequency and power factor as a pzemac config publishes
them; ``--no-frequency`` / ``--no-power-factor`` leave them out as a cse7766 or hlw8012 plug
without those sensors does), as ANSI-coloured DEBUG lines exactly as the logger formats them, plus occasional other lines (wifi signal, an info message) a driver must skip. Power comes
from the bench model; the energy sensor accumulates the metered bench energy (exact integral, model gain and
offset applied) in Wh. The quantities are one consistent set: current = P / (V PF), power factor
the bench's, frequency :data:`LINE_FREQUENCY_HZ`.
See :mod:`hwval.sources.serial.esphome_codec` for the facts and sources.
"""

from __future__ import annotations

import click

from hwval.benchmodel import Bench, MeterModel
from hwval.emulators.options import bench_options
from hwval.emulators.pty import FaultPlan, PtyEmulator, fault_options, run_until_signal
from hwval.sources.serial import esphome_codec as codec

#: mains frequency the frequency sensor reports (a 50 Hz grid)
LINE_FREQUENCY_HZ = 50.0


class EspHomeEmulator(PtyEmulator):
    device = "esphome"

    def __init__(self, bench: Bench, model: MeterModel, faults: FaultPlan | None = None, *,
                 baudrate: int = 115200, interval_s: float = 0.2, power_unit: str = "W",
                 energy_unit: str = "Wh", task: str | None = None, line_no: int | None = 93,
                 names: dict[str, str] | None = None, frequency: bool = True,
                 power_factor: bool = True) -> None:
        # checked before the base class makes the link folder, which a refused option would leak
        if interval_s <= 0:
            raise ValueError(f"interval must be > 0 s, got {interval_s}")
        if power_unit not in ("W", "kW") or energy_unit not in ("Wh", "kWh"):
            raise ValueError("power unit must be W or kW, energy unit Wh or kWh")
        self.baudrate = baudrate
        super().__init__(bench, model, faults)
        self.tick_period_s = interval_s
        self.power_unit, self.energy_unit = power_unit, energy_unit
        self.task, self.line_no = task, line_no
        self.names = {"power": "Power", "voltage": "Voltage", "current": "Current",
                      "energy": "Energy", "frequency": "Frequency",
                      "power_factor": "Power Factor", **(names or {})}
        self.frequency, self.power_factor = frequency, power_factor
        self.ticks = 0

    def _state(self, sensor: str, value: float, unit: str, decimals: int) -> None:
        self.send_frame(codec.encode_state(self.names[sensor], value, unit, decimals,
                                           tag="sensor", line_no=self.line_no, task=self.task))

    def tick(self) -> None:
        self.ticks += 1
        power_w = self.bench.read(self.model)
        energy_wh = self.metered_energy_j(0.0, self.bench.t_s()) / 3600.0
        self._state("voltage", self.bench.voltage_v, "V", 1)
        self._state("current", self.bench.current_a(power_w), "A", 2)
        if self.power_unit == "kW":
            self._state("power", power_w / 1000.0, "kW", 4)
        else:
            self._state("power", power_w, "W", 1)
        if self.energy_unit == "kWh":
            self._state("energy", energy_wh / 1000.0, "kWh", 6)
        else:
            self._state("energy", energy_wh, "Wh", 3)
        if self.frequency:
            self._state("frequency", LINE_FREQUENCY_HZ, "Hz", 1)
        if self.power_factor:  # a unitless sensor: the unit is empty (two spaces on the line)
            self._state("power_factor", self.bench.power_factor, "", 2)
        if self.ticks % 10 == 0:  # other sensors and components log too
            self.write_raw(codec.encode_state("WiFi Signal", -61.0, "dBm", 0, line_no=self.line_no))
            self.write_raw(codec.encode_log("I", "app", 29, "Running through setup()..."))

    def garbage(self) -> bytes:
        # non-UTF-8 noise ending the line: exactly one unparseable line per injection
        return bytes(0x80 | self.rng.randrange(64) for _ in range(self.rng.randint(1, 12))) + b"\r\n"

    def truncate(self, frame: bytes) -> bytes:
        # cut before the state's number ends, keeping the line end: one damaged line per fault
        cut = frame.index(b"Sending state") + self.rng.randint(0, 13)
        return frame[:cut] + b"\r\n"

    def corrupt(self, frame: bytes) -> bytes:
        # no checksum in the logger: a damaged digit makes the number unreadable
        i = frame.index(b"Sending state ") + len(b"Sending state ")
        return frame[:i] + b"x" + frame[i + 1:]


@click.command()
@bench_options(window_s=0.1)
@fault_options
@click.option("--baudrate", type=int, default=115200, show_default=True,
              help="logger line speed; a driver opening the port at another speed sees garbage")
@click.option("--interval-s", type=float, default=0.2, show_default=True,
              help="seconds between published states (cse7766: one chip frame ~0.1-0.2 s)")
@click.option("--power-unit", type=click.Choice(["W", "kW"]), default="W", show_default=True,
              help="unit the power sensor publishes in (the driver converts to W)")
@click.option("--energy-unit", type=click.Choice(["Wh", "kWh"]), default="Wh", show_default=True,
              help="unit the energy sensor publishes in (the driver converts to J)")
@click.option("--task", default=None, help="ESP32 task tag added to each line, e.g. 'loopTask'")
@click.option("--frequency/--no-frequency", default=True, show_default=True,
              help="publish a 'Frequency' sensor (Hz), as a pzemac config does")
@click.option("--power-factor/--no-power-factor", default=True, show_default=True,
              help="publish a 'Power Factor' sensor (unitless), as pzemac and cse7766 configs do")
def cli(bench: Bench, model: MeterModel, ready_file: str | None, faults: FaultPlan,
        counts_file: str | None, baudrate: int, interval_s: float, power_unit: str,
        energy_unit: str, task: str | None, frequency: bool, power_factor: bool) -> None:
    """Emulate an ESPHome plug's UART logger.

    \b
    Example:
      hwval emulate esphome --profile bursty --interval-s 0.1
      hwval capture -m 'esphome:/tmp/hwval-emu-esphome-XXXX/tty' --duration 10 -o dry.h5
    """
    try:
        emulator = EspHomeEmulator(bench, model, faults, baudrate=baudrate, interval_s=interval_s,
                                   power_unit=power_unit, energy_unit=energy_unit, task=task,
                                   frequency=frequency, power_factor=power_factor)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    run_until_signal(emulator, bench, ready_file, counts_file)
