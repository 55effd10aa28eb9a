"""Pure codec for the CSE7766 energy-metering chip's 24-byte UART frames (no I/O).

The chip (Sonoff POW R2/R3, S31) transmits one frame about every 100 ms at 4800 baud 8E1 and
never listens. Layout (docs/protocols/cse7766.md#frame-layout; ChipSea CSE7766 datasheet; Tasmota
``xnrg_02_cse7766.ino``; esphome ``cse7766``), all fields big-endian:

====== =====================================================================================
bytes  content
====== =====================================================================================
0      state: 0x55 ok, 0xAA not calibrated, 0xFx abnormal (bit3 V-cycle overflow, bit2 I-cycle
       overflow, bit1 P-cycle overflow = no load, bit0 coefficient storage error)
1      0x5A
2-4    V parameter (coefficient)        5-7    V cycle
8-10   I parameter                      11-13  I cycle
14-16  P parameter                      17-19  P cycle (microseconds)
20     adj: bit6 V updated/valid, bit5 I valid, bit4 P valid, bit7 CF counter overflowed
21-22  CF pulse counter (16 bit, wraps)
23     checksum = sum(bytes 2..22) & 0xFF
====== =====================================================================================

Physical values: V = Vparam / Vcycle, I = Iparam / Icycle, P = Pparam / Pcycle. The chip's
parameters are its factory calibration, so these ratios are already volts, amperes and watts
(the checked frame gives 226.6 V); firmware such as Tasmota applies the operator's own
calibration on top, which the driver exposes as gains. One CF pulse is ``Pparam`` microjoules
(P * Pcycle with Pcycle in us), hence energy = delta(CF) * Pparam / 3.6e9 Wh.
"""

from __future__ import annotations

from dataclasses import dataclass

FRAME_LENGTH = 24
HEADER = 0x5A

STATE_OK = 0x55
STATE_NOT_CALIBRATED = 0xAA
#: Abnormal state bits (valid only when the high nibble is 0xF).
STATE_V_CYCLE_OVERFLOW = 0x08
STATE_I_CYCLE_OVERFLOW = 0x04
STATE_P_CYCLE_OVERFLOW = 0x02
STATE_COEFFICIENT_ERROR = 0x01

ADJ_CF_OVERFLOW = 0x80
ADJ_V_VALID = 0x40
ADJ_I_VALID = 0x20
ADJ_P_VALID = 0x10

#: Coefficients Tasmota uses when the chip says "not calibrated" (0xAA): its fields then carry
#: no usable parameters. Values in the chip's units (us-scaled), from xnrg_02_cse7766.ino.
UNCALIBRATED_V_PARAM = 191200
UNCALIBRATED_I_PARAM = 16140
UNCALIBRATED_P_PARAM = 5364000

MAX_24BIT = 0xFFFFFF


def is_state_byte(byte: int) -> bool:
    """A byte that may open a frame: 0x55, 0xAA or 0xF0..0xFF."""
    return byte == STATE_OK or byte == STATE_NOT_CALIBRATED or (byte & 0xF0) == 0xF0


def checksum(frame: bytes) -> int:
    """Sum of bytes 2..22, modulo 256."""
    return sum(frame[2:23]) & 0xFF


def match_frame(buf: bytes) -> int:
    """Frame matcher (see :class:`~hwval.sources.serial.framing.FrameScanner`): 24 when a frame
    with a plausible state byte, the 0x5A header and a correct checksum starts at offset 0;
    0 when ``buf`` is a plausible but incomplete start; -1 otherwise (slide one byte on)."""
    n = len(buf)
    if n == 0:
        return 0
    if not is_state_byte(buf[0]):
        return -1
    if n == 1:
        return 0
    if buf[1] != HEADER:
        return -1
    if n < FRAME_LENGTH:
        return 0
    return FRAME_LENGTH if checksum(buf) == buf[23] else -1


def _u24(buf: bytes, i: int) -> int:
    return (buf[i] << 16) | (buf[i + 1] << 8) | buf[i + 2]


@dataclass(frozen=True)
class Frame:
    """The raw fields of one frame (integers exactly as transmitted)."""

    state: int
    v_param: int
    v_cycle: int
    i_param: int
    i_cycle: int
    p_param: int
    p_cycle: int
    adj: int
    cf_pulses: int

    # -- flags -----------------------------------------------------------------------------
    @property
    def is_abnormal(self) -> bool:
        """State 0xFx with a bit that makes V/I unusable (V or I cycle overflow, bad
        coefficients). A P-cycle overflow alone is normal: it means no load."""
        return (self.state & 0xF0) == 0xF0 and bool(
            self.state & (STATE_V_CYCLE_OVERFLOW | STATE_I_CYCLE_OVERFLOW | STATE_COEFFICIENT_ERROR))

    @property
    def is_calibrated(self) -> bool:
        return self.state != STATE_NOT_CALIBRATED

    @property
    def p_cycle_overflow(self) -> bool:
        return (self.state & 0xF0) == 0xF0 and bool(self.state & STATE_P_CYCLE_OVERFLOW)

    @property
    def v_valid(self) -> bool:
        return bool(self.adj & ADJ_V_VALID)

    @property
    def i_valid(self) -> bool:
        return bool(self.adj & ADJ_I_VALID)

    @property
    def p_valid(self) -> bool:
        return bool(self.adj & ADJ_P_VALID)

    def state_text(self) -> str:
        """Human description of the state byte, for error messages."""
        if self.state == STATE_OK:
            return "ok"
        if self.state == STATE_NOT_CALIBRATED:
            return "not calibrated"
        if (self.state & 0xF0) != 0xF0:
            return f"unknown state {self.state:#04x}"
        parts = [name for bit, name in ((STATE_V_CYCLE_OVERFLOW, "voltage cycle overflow"),
                                        (STATE_I_CYCLE_OVERFLOW, "current cycle overflow"),
                                        (STATE_P_CYCLE_OVERFLOW, "power cycle overflow (no load)"),
                                        (STATE_COEFFICIENT_ERROR, "coefficient storage error"))
                 if self.state & bit]
        return ", ".join(parts) or "abnormal"

    # -- coefficients (Tasmota's defaults when uncalibrated) ---------------------------------
    def coefficients(self) -> tuple[int, int, int]:
        """``(Vparam, Iparam, Pparam)`` to compute with."""
        if self.is_calibrated:
            return self.v_param, self.i_param, self.p_param
        return UNCALIBRATED_V_PARAM, UNCALIBRATED_I_PARAM, UNCALIBRATED_P_PARAM

    # -- chip-level physical values (before any operator calibration gain) --------------------
    def voltage_v(self) -> float | None:
        """Vparam / Vcycle, or ``None`` when the frame carries no valid voltage."""
        if not self.v_valid or self.v_cycle == 0 or self.is_abnormal:
            return None
        return self.coefficients()[0] / self.v_cycle

    def current_a(self) -> float | None:
        """Iparam / Icycle, or ``None`` when the frame carries no valid current."""
        if not self.i_valid or self.i_cycle == 0 or self.is_abnormal:
            return None
        return self.coefficients()[1] / self.i_cycle

    def power_w(self) -> float | None:
        """Pparam / Pcycle when the P-valid bit is set; 0.0 on a P-cycle overflow (the chip's
        way of saying "no load"); ``None`` when this frame carries no new power value."""
        if self.is_abnormal:
            return None
        if self.p_cycle_overflow:
            return 0.0
        if not self.p_valid or self.p_cycle == 0:
            return None
        return self.coefficients()[2] / self.p_cycle

    def joules_per_pulse(self) -> float:
        """Energy of one CF pulse: Pparam microjoules."""
        return self.coefficients()[2] * 1e-6


def decode_frame(raw: bytes) -> Frame:
    """Decode one 24-byte frame; ``ValueError`` says what is wrong (length, header, state,
    checksum) so fixtures and tests read clearly."""
    if len(raw) != FRAME_LENGTH:
        raise ValueError(f"a CSE7766 frame is {FRAME_LENGTH} bytes, got {len(raw)}")
    if not is_state_byte(raw[0]):
        raise ValueError(f"bad CSE7766 state byte {raw[0]:#04x} (expected 0x55, 0xAA or 0xFx)")
    if raw[1] != HEADER:
        raise ValueError(f"bad CSE7766 header byte {raw[1]:#04x} (expected 0x5A)")
    expected = checksum(raw)
    if raw[23] != expected:
        raise ValueError(f"bad CSE7766 checksum {raw[23]:#04x} (computed {expected:#04x})")
    return Frame(
        state=raw[0],
        v_param=_u24(raw, 2), v_cycle=_u24(raw, 5),
        i_param=_u24(raw, 8), i_cycle=_u24(raw, 11),
        p_param=_u24(raw, 14), p_cycle=_u24(raw, 17),
        adj=raw[20],
        cf_pulses=(raw[21] << 8) | raw[22],
    )


def encode_frame(frame: Frame) -> bytes:
    """Inverse of :func:`decode_frame` (the emulator's transmitter)."""
    for name in ("v_param", "v_cycle", "i_param", "i_cycle", "p_param", "p_cycle"):
        value = getattr(frame, name)
        if not 0 <= value <= MAX_24BIT:
            raise ValueError(f"{name} must fit 24 bits, got {value}")
    if not is_state_byte(frame.state):
        raise ValueError(f"state byte must be 0x55, 0xAA or 0xFx, got {frame.state:#04x}")
    body = bytearray((frame.state, HEADER))
    for value in (frame.v_param, frame.v_cycle, frame.i_param, frame.i_cycle,
                  frame.p_param, frame.p_cycle):
        body += value.to_bytes(3, "big")
    body.append(frame.adj & 0xFF)
    body += (frame.cf_pulses & 0xFFFF).to_bytes(2, "big")
    body.append(sum(body[2:23]) & 0xFF)
    return bytes(body)


def cf_delta(previous: int, current: int) -> int:
    """Pulses between two readings of the 16-bit CF counter (one wrap at most)."""
    return (current - previous) & 0xFFFF


def cycle_for(param: int, value: float) -> int:
    """The cycle field that makes ``param / cycle`` closest to ``value`` (for the emulator),
    clamped to 1..0xFFFFFF."""
    if value <= 0:
        return MAX_24BIT
    return min(max(int(round(param / value)), 1), MAX_24BIT)
