"""PZEM-004T v3.0 emulator: a Modbus-RTU slave on a pty, 9600 8N1, power from the bench.

It answers what the module implements (docs/protocols/pzem004t.md; Peacefair PZEM-004T V3.0
User Manual):
0x04 read input registers 0x0000..0x0009, 0x03 read holding 0x0001 (alarm threshold, W) and
0x0002 (address), 0x06 write those two, 0x42 reset energy (4-byte echo), 0x41 calibration (echo,
general address only). A request to the general address 0xF8 is answered from 0xF8, not from
the module's own address (docs/protocols/pzem004t.md#reply-address-at-0xf8). Requests to another
address are ignored, broadcasts (0x00) are executed
without reply, and anything else gets the Modbus exception the module would send (illegal
function / illegal data address / illegal data value).

Like the module, the registers are refreshed every ``update_s`` (1 s): a reading served at bench
time t comes from the last refresh at ``k * update_s <= t`` and holds the bench meter model's
value there (default: mean over the preceding 1 s window, 0.1 W quantum). The energy register
is the exact integral of that meter's power, floored to whole Wh, from ``--energy-start-wh``.

Faults (``fault_options``) apply to replies: garbage before them, dropped (no answer),
truncated, bad CRC; ``--exception-rate`` answers a fraction of reads with a Modbus exception
(``--exception-code``, default 4: slave device failure).
"""

from __future__ import annotations

import math

import click

from hwval.benchmodel import Bench, MeterModel
from hwval.emulators.options import bench_options
from hwval.emulators.pty import FaultPlan, PtyEmulator, fault_options, run_until_signal
from hwval.sources.serial import pzem004t_codec as codec
from hwval.sources.serial.framing import FrameScanner

LINE_FREQUENCY_HZ = 50.0


class Pzem004tEmulator(PtyEmulator):
    """In-process emulator (tests: ``with Pzem004tEmulator(bench, model) as emu: emu.path``)."""

    device = "pzem004t"
    baudrate = 9600
    tick_period_s = None

    def __init__(self, bench: Bench, model: MeterModel, faults: FaultPlan | None = None, *,
                 address: int = 1, update_s: float = 1.0, energy_start_wh: int = 0,
                 alarm_threshold_w: int = 2300, exception_rate: float = 0.0,
                 exception_code: int = 0x04, holding_registers: bool = True) -> None:
        # validate before the base class makes the pty directory, so a refusal leaves nothing
        if not (1 <= address <= codec.MAX_SLAVE_ADDRESS):
            raise ValueError(f"emulated module address must be 1..247, got {address}")
        if not update_s > 0:
            raise ValueError(f"update_s must be > 0 s, got {update_s}")
        if not 0.0 <= exception_rate <= 1.0:
            raise ValueError(f"exception_rate must be a probability in [0, 1], got {exception_rate}")
        if exception_code not in codec.EXCEPTION_TEXT:
            raise ValueError(f"exception_code must be one of 1..4, got {exception_code}")
        super().__init__(bench, model, faults)
        self.address = address
        self.update_s = update_s
        self.alarm_threshold_w = alarm_threshold_w
        self.exception_rate = exception_rate
        self.exception_code = exception_code
        #: False: a module that never answers the (optional) holding-register read 0x03
        self.holding_registers = holding_registers
        self._scanner = FrameScanner(codec.match_request)
        #: energy register = floor(offset_j + metered energy since bench time ``_energy_from_s``)
        self._energy_offset_j = energy_start_wh * 3600.0
        self._energy_from_s = 0.0
        self._snapshot_k: int | None = None
        self._snapshot: tuple[int, ...] = ()

    # ------------------------------------------------------------------------------ registers
    def registers_at(self, t_s: float) -> tuple[int, ...]:
        """The input registers as served at bench time ``t_s`` (from the last refresh)."""
        k = math.floor(t_s / self.update_s)
        if k != self._snapshot_k:
            refresh_s = k * self.update_s
            t_ns = self.bench.t0_ns + int(round(refresh_s * 1e9))
            power_w = self.bench.read(self.model, t_ns)
            voltage_v = self.bench.voltage_v
            pf = self.bench.power_factor if power_w > 0 else 1.0
            energy_j = self._energy_offset_j + self.metered_energy_j(self._energy_from_s,
                                                                     max(refresh_s, self._energy_from_s))
            m = codec.Measurement(
                voltage_v=voltage_v,
                current_a=power_w / (voltage_v * pf) if voltage_v > 0 else 0.0,
                power_w=power_w,
                energy_wh=int(math.floor(energy_j / 3600.0 + 1e-9)),
                frequency_hz=LINE_FREQUENCY_HZ,
                power_factor=pf,
                alarm=power_w > self.alarm_threshold_w,
            )
            self._snapshot_k, self._snapshot = k, codec.encode_measurement(m)
        return self._snapshot

    def reset_energy(self) -> None:
        self._energy_offset_j = 0.0
        self._energy_from_s = self.bench.t_s()
        self._snapshot_k = None  # the next read shows the zeroed counter, as the module does

    # ------------------------------------------------------------------------------ protocol
    def corrupt(self, frame: bytes) -> bytes:
        # damage the CRC itself so the frame still looks like a reply from this module
        return frame[:-1] + bytes((frame[-1] ^ 0xA5,))

    def on_host_bytes(self, data: bytes) -> None:
        for frame in self._scanner.feed(data):
            reply = self.answer(codec.parse_request(frame))
            if reply:
                self.send_frame(reply)

    def answer(self, req: codec.Request) -> bytes:
        """The reply to one request (``b""``: no reply, e.g. another slave's address)."""
        if req.address not in (self.address, codec.GENERAL_ADDRESS, codec.BROADCAST_ADDRESS):
            return b""
        reply = self._execute(req)
        if req.address == codec.BROADCAST_ADDRESS:
            return b""  # broadcasts are executed, never answered
        return reply

    def _execute(self, req: codec.Request) -> bytes:
        # A module polled at the general address answers from 0xF8, not from its own address
        # (docs/protocols/pzem004t.md#reply-address-at-0xf8); broadcasts get no reply anyway.
        f = req.function
        addr = codec.GENERAL_ADDRESS if req.address == codec.GENERAL_ADDRESS else self.address
        if f == codec.READ_INPUT:
            if len(req.payload) != 4 or req.count == 0 or req.start + req.count > codec.MEASUREMENT_COUNT:
                return codec.exception_reply(addr, f, 0x02)
            if self.exception_rate and self.rng.random() < self.exception_rate:
                self.injected["exception"] += 1
                return codec.exception_reply(addr, f, self.exception_code)
            regs = self.registers_at(self.bench.t_s())
            return codec.registers_reply(addr, f, regs[req.start:req.start + req.count])
        if f == codec.READ_HOLDING:
            if not self.holding_registers:
                return b""
            holding = {codec.HOLDING_ALARM_THRESHOLD: self.alarm_threshold_w,
                       codec.HOLDING_ADDRESS: self.address}
            wanted = range(req.start, req.start + req.count)
            if req.count == 0 or any(r not in holding for r in wanted):
                return codec.exception_reply(addr, f, 0x02)
            return codec.registers_reply(addr, f, [holding[r] for r in wanted])
        if f == codec.WRITE_SINGLE:
            register, value = req.start, req.count
            if register == codec.HOLDING_ADDRESS:
                if not 1 <= value <= codec.MAX_SLAVE_ADDRESS:
                    return codec.exception_reply(addr, f, 0x03)
                reply = codec.append_crc(bytes((addr, f)) + req.payload)
                self.address = value  # the echo still comes from the address asked (old or 0xF8)
                return reply
            if register == codec.HOLDING_ALARM_THRESHOLD:
                self.alarm_threshold_w = value
                self._snapshot_k = None
                return codec.append_crc(bytes((addr, f)) + req.payload)
            return codec.exception_reply(addr, f, 0x02)
        if f == codec.RESET_ENERGY:
            self.reset_energy()
            return codec.append_crc(bytes((addr, f)))
        if f == codec.CALIBRATE:
            if req.address != codec.GENERAL_ADDRESS or req.payload != b"\x37\x21":
                return codec.exception_reply(addr, f, 0x03)
            return codec.append_crc(bytes((addr, f)) + req.payload)
        return codec.exception_reply(addr, f, 0x01)


@click.command()
@bench_options(window_s=1.0, quantum_w=0.1)
@fault_options
@click.option("--address", type=click.IntRange(1, 247), default=1, show_default=True,
              help="the module's Modbus address (it also answers the general address 0xF8)")
@click.option("--update-s", type=float, default=1.0, show_default=True,
              help="seconds between register refreshes (the module's own update cadence)")
@click.option("--energy-start-wh", type=click.IntRange(0, 0xFFFFFFFF), default=0, show_default=True,
              help="energy register value at bench time 0 (Wh)")
@click.option("--alarm-threshold-w", type=click.IntRange(0, 0xFFFF), default=2300, show_default=True,
              help="power alarm threshold holding register (W)")
@click.option("--exception-rate", type=float, default=0.0, show_default=True,
              help="probability that a measurement read is answered with a Modbus exception")
@click.option("--exception-code", type=click.IntRange(1, 4), default=4, show_default=True,
              help="exception code sent: 1 illegal function, 2 illegal address, 3 illegal data, "
                   "4 slave device failure")
@click.option("--holding/--no-holding", "holding_registers", default=True, show_default=True,
              help="answer the holding-register read 0x03 (--no-holding: a module that answers "
                   "only the measurement read 0x04)")
def cli(bench: Bench, model: MeterModel, ready_file: str | None, faults: FaultPlan,
        counts_file: str | None, address: int, update_s: float, energy_start_wh: int,
        alarm_threshold_w: int, exception_rate: float, exception_code: int,
        holding_registers: bool) -> None:
    """Emulate a PZEM-004T v3.0 energy monitor (Modbus-RTU, 9600 8N1) on a pty.

    \b
    Example:
      hwval emulate pzem004t --profile steps --ready-file /tmp/pzem.json
      hwval capture -m 'pzem004t:/tmp/hwval-emu-pzem004t-XXXX/tty?address=1' --duration 10 -o dry.h5
    """
    try:
        emulator = Pzem004tEmulator(bench, model, faults, address=address, update_s=update_s,
                                    energy_start_wh=energy_start_wh,
                                    alarm_threshold_w=alarm_threshold_w,
                                    exception_rate=exception_rate, exception_code=exception_code,
                                    holding_registers=holding_registers)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    run_until_signal(emulator, bench, ready_file, counts_file, address=address, update_s=update_s)
