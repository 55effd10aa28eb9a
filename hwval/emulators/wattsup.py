"""``hwval emulate wattsup``: a Watts Up? PRO / .NET meter on a pty (protocol rev 1.8).

Answers ``#V,R,0;`` (version), ``#H,R,0;`` (record header), ``#L,W,3,E,<r>,<interval>;``
(start external logging: a ``#d`` record every interval), ``#R,W,0;`` (clear memory: WH back
to 0) and Ctrl-X (abort logging); prints its banner at power-on and after a re-plug. Records
use the meter's scaling (W, V, WH in tenths, A in thousandths, PF in percent); W is the bench
model over the interval, WH the metered bench energy (exact integral, model gain and offset
applied) since power-on or the last clear. A US meter:
120 V, 60 Hz. Facts and sources: :mod:`hwval.sources.serial.wattsup_codec`.
"""

from __future__ import annotations

import time

import click

from hwval.sources.emulated import EMULATOR_MARK
from hwval.benchmodel import Bench, MeterModel
from hwval.emulators.options import bench_options
from hwval.emulators.pty import FaultPlan, PtyEmulator, fault_options, run_until_signal
from hwval.sources.serial import wattsup_codec as codec

BANNER = b"WattsUp.NET $ Version: 3.23 $ 200712212301 60Hz 120V\r\n"
#: the documented eight fields, then one a real meter never sends: the emulator says it is one
#: (hwval.sources.emulated)
VERSION_FIELDS = ("3", "131072", "1", "2", "3", "23", "200712212301", "42", EMULATOR_MARK)
LINE_VOLTAGE_V = 120.0
LINE_FREQUENCY_HZ = 60.0


class WattsUpEmulator(PtyEmulator):
    device = "wattsup"
    baudrate = 115200
    tick_period_s = 0.05

    def __init__(self, bench: Bench, model: MeterModel, faults: FaultPlan | None = None) -> None:
        super().__init__(bench, model, faults)
        self.packets = codec.PacketBuffer()
        self.interval_s: int | None = None
        self._next_record = 0.0
        self._energy_origin_s = 0.0  # bench time WH counts from (power-on or #R,W,0;)

    def start(self) -> str:
        path = super().start()
        self.write_raw(BANNER)  # printed at power-on (lost unless someone listens, as on a UART)
        return path

    def on_replug(self) -> None:
        # a re-plugged meter has rebooted: logging stopped, banner printed
        self.interval_s = None
        self.packets.clear()
        self.write_raw(BANNER)

    def on_host_bytes(self, data: bytes) -> None:
        if codec.CTRL_X in data:
            self.interval_s = None
            data = data.replace(codec.CTRL_X, b"")
        for text in self.packets.feed(data):
            if text is None:
                continue
            try:
                packet = codec.parse_packet(text)
            except codec.WattsupDecodeError:
                continue  # the meter ignores malformed requests
            self.handle(packet)

    def handle(self, packet: codec.Packet) -> None:
        key = (packet.command.upper(), packet.sub.upper())
        if key == ("V", "R"):
            self.send_frame(codec.encode_packet("v", "-", VERSION_FIELDS) + b"\r\n")
        elif key == ("H", "R"):
            self.send_frame(codec.encode_packet("h", "-", codec.HEADER_FIELDS) + b"\r\n")
        elif key == ("L", "W") and len(packet.fields) == 3 and packet.fields[0].upper() == "E":
            try:
                interval = int(packet.fields[2])
            except ValueError:
                return
            self.interval_s = max(1, interval)
            self._next_record = time.monotonic() + self.interval_s
        elif key == ("R", "W"):
            self._energy_origin_s = self.bench.t_s()

    def tick(self) -> None:
        now = time.monotonic()
        if self.interval_s is None or now < self._next_record:
            return
        # the meter's interval timer keeps running through a stall: records it could not send
        # are lost, not sent in a burst afterwards
        while self._next_record <= now:
            self._next_record += self.interval_s
        power_w = self.bench.read(self.model)
        pf = self.bench.power_factor
        energy_wh = self.metered_energy_j(self._energy_origin_s, self.bench.t_s()) / 3600.0
        self.send_frame(codec.encode_record(
            power_w, LINE_VOLTAGE_V, power_w / (LINE_VOLTAGE_V * pf), energy_wh, pf,
            LINE_FREQUENCY_HZ, power_w / pf) + b"\r\n")

    def garbage(self) -> bytes:
        # noise outside packets: the protocol says to ignore it, so no '#' or ';'
        return bytes(self.rng.choice([b for b in range(256) if b not in (0x23, 0x3B)])
                     for _ in range(self.rng.randint(1, 16)))

    def truncate(self, frame: bytes) -> bytes:
        return frame[: self.rng.randint(1, frame.index(b";") - 1)]

    def corrupt(self, frame: bytes) -> bytes:
        # no checksum: a damaged W digit makes the record unreadable
        start = frame.index(b",", frame.index(b",", frame.index(b",") + 1) + 1) + 1
        return frame[:start] + b"x" + frame[start + 1:]


@click.command()
@bench_options(window_s=1.0)
@fault_options
def cli(bench: Bench, model: MeterModel, ready_file: str | None, faults: FaultPlan,
        counts_file: str | None) -> None:
    """Emulate a Watts Up? PRO meter (external logging mode).

    \b
    Example:
      hwval emulate wattsup --profile idle-load
      hwval capture -m 'wattsup:/tmp/hwval-emu-wattsup-XXXX/tty?interval_s=1' --duration 10 -o dry.h5
    """
    try:
        emulator = WattsUpEmulator(bench, model, faults)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    run_until_signal(emulator, bench, ready_file, counts_file)
