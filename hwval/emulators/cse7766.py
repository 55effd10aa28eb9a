"""CSE7766 emulator: the chip's 24-byte frame stream on a pty (4800 8E1), power from the bench.

Every ``frame_period_s`` (100 ms, as the chip) it sends one frame encoded the way the driver
decodes it (:mod:`hwval.sources.serial.cse7766_codec`): the parameters are those of the checked
frame in docs/protocols/cse7766.md#physical-values (Vparam 194400, Iparam 16400, Pparam 5351000)
and the cycles are chosen so that ``param / cycle`` is the bench value, so the quantisation is
the chip's own (a 1 us step of Pcycle: about P**2 / 5.35e6 W, 0.01 W at 250 W). Like the chip:

- P is flagged valid (adj bit 4) only in frames where at least one CF pulse period
  (``Pparam`` uJ / P) has elapsed since the last update: every frame above ~54 W, every few
  frames at low load; below ``--min-power-w`` the state is 0xF2 (P-cycle overflow: no load);
- the CF counter is ``cf_start + floor(metered energy / Pparam uJ)`` modulo 2**16 (adj bit 7 set
  once it has wrapped), so the driver's energy tracks the bench's exact integral;
- ``--uncalibrated`` sends state 0xAA with empty parameter fields, encoded with Tasmota's default
  coefficients (which the driver then uses).

The chip transmits whether or not anyone listens, and never reads: host bytes are ignored.
"""

from __future__ import annotations

import math

import click

from hwval.benchmodel import Bench, MeterModel
from hwval.emulators.options import bench_options
from hwval.emulators.pty import FaultPlan, PtyEmulator, fault_options, run_until_signal
from hwval.sources.serial import cse7766_codec as codec

#: Coefficients of the checked frame (a real POW R2's chip):
#: docs/protocols/cse7766.md#physical-values.
V_PARAM = 0x02F760
I_PARAM = 0x004010
P_PARAM = 0x51A658


class Cse7766Emulator(PtyEmulator):
    """In-process emulator (tests: ``with Cse7766Emulator(bench, model) as emu: emu.path``)."""

    device = "cse7766"
    baudrate = 4800
    tick_period_s = 0.1

    def __init__(self, bench: Bench, model: MeterModel, faults: FaultPlan | None = None, *,
                 frame_period_s: float = 0.1, cf_start: int = 0, uncalibrated: bool = False,
                 min_power_w: float = 0.5) -> None:
        # validate before the base class makes the pty directory, so a refusal leaves nothing
        if not frame_period_s > 0:
            raise ValueError(f"frame_period_s must be > 0 s, got {frame_period_s}")
        if not 0 <= cf_start <= 0xFFFF:
            raise ValueError(f"cf_start must be 0..65535, got {cf_start}")
        super().__init__(bench, model, faults)
        self.tick_period_s = frame_period_s
        self.cf_start = cf_start
        self.uncalibrated = uncalibrated
        self.min_power_w = min_power_w
        if uncalibrated:
            self.coefficients = (codec.UNCALIBRATED_V_PARAM, codec.UNCALIBRATED_I_PARAM,
                                 codec.UNCALIBRATED_P_PARAM)
        else:
            self.coefficients = (V_PARAM, I_PARAM, P_PARAM)
        self._last_p_update_s: float | None = None
        self._p_cycle = codec.MAX_24BIT

    def frame_at(self, t_s: float) -> codec.Frame:
        """The frame the chip sends at bench time ``t_s`` (advances the P-update state)."""
        v_param, i_param, p_param = self.coefficients
        power_w = self.bench.read(self.model, self.bench.t0_ns + int(round(t_s * 1e9)))
        voltage_v = self.bench.voltage_v
        current_a = self.bench.current_a(power_w)
        state = codec.STATE_NOT_CALIBRATED if self.uncalibrated else codec.STATE_OK
        adj = codec.ADJ_V_VALID
        if current_a > 0:
            adj |= codec.ADJ_I_VALID
        if power_w < self.min_power_w:
            if not self.uncalibrated:
                state = 0xF0 | codec.STATE_P_CYCLE_OVERFLOW
            self._p_cycle = codec.MAX_24BIT
            self._last_p_update_s = None
        else:
            pulse_period_s = p_param * 1e-6 / power_w
            due = (self._last_p_update_s is None
                   or t_s - self._last_p_update_s >= pulse_period_s - 1e-6)
            if due:
                adj |= codec.ADJ_P_VALID
                self._p_cycle = codec.cycle_for(p_param, power_w)
                self._last_p_update_s = t_s
        pulses = self.cf_start + int(math.floor(max(self.metered_energy_j(0.0, t_s), 0.0) / (p_param * 1e-6)))
        if pulses > 0xFFFF:
            adj |= codec.ADJ_CF_OVERFLOW
        empty = self.uncalibrated  # an uncalibrated chip has no parameters to send
        return codec.Frame(
            state=state,
            v_param=0 if empty else v_param, v_cycle=codec.cycle_for(v_param, voltage_v),
            i_param=0 if empty else i_param, i_cycle=codec.cycle_for(i_param, current_a),
            p_param=0 if empty else p_param, p_cycle=self._p_cycle,
            adj=adj, cf_pulses=pulses & 0xFFFF,
        )

    def corrupt(self, frame: bytes) -> bytes:
        return frame[:-1] + bytes((frame[-1] ^ 0xFF,))

    def tick(self) -> None:
        self.send_frame(codec.encode_frame(self.frame_at(self.bench.t_s())))


@click.command()
@bench_options(window_s=0.1)
@fault_options
@click.option("--frame-period-s", type=float, default=0.1, show_default=True,
              help="seconds between frames (the chip sends about one per 100 ms)")
@click.option("--cf-start", type=click.IntRange(0, 0xFFFF), default=0, show_default=True,
              help="CF pulse counter at bench time 0 (near 65535 to see the 16-bit wrap soon)")
@click.option("--uncalibrated", is_flag=True,
              help="send state 0xAA (not calibrated) with empty parameter fields")
@click.option("--min-power-w", type=float, default=0.5, show_default=True,
              help="below this the chip reports a P-cycle overflow (state 0xF2, no load)")
def cli(bench: Bench, model: MeterModel, ready_file: str | None, faults: FaultPlan,
        counts_file: str | None, frame_period_s: float, cf_start: int, uncalibrated: bool,
        min_power_w: float) -> None:
    """Emulate a CSE7766 energy chip (Sonoff POW R2) streaming frames on a pty (4800 8E1).

    \b
    Example:
      hwval emulate cse7766 --profile idle-load --cf-start 65000 --ready-file /tmp/cse.json
      hwval capture -m cse7766:/tmp/hwval-emu-cse7766-XXXX/tty --duration 10 -o dry.h5
    """
    try:
        emulator = Cse7766Emulator(bench, model, faults, frame_period_s=frame_period_s,
                                   cf_start=cf_start, uncalibrated=uncalibrated,
                                   min_power_w=min_power_w)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    run_until_signal(emulator, bench, ready_file, counts_file, frame_period_s=frame_period_s)
