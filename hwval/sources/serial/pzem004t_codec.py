"""Pure Modbus-RTU codec for the Peacefair PZEM-004T v3.0 energy monitor (no I/O).

Frames (docs/protocols/pzem004t.md#frames; Peacefair PZEM-004T V3.0 User Manual, 2.2-2.4;
mandulaj/PZEM-004T-v30; esphome ``pzemac``):

- request  ``addr func start_hi start_lo count_hi count_lo crc_lo crc_hi`` (functions 0x03 read
  holding, 0x04 read input, 0x06 write single register);
- reply    ``addr func byte_count data... crc_lo crc_hi`` for 0x03/0x04; the 8-byte echo for 0x06;
- reset    ``addr 0x42 crc_lo crc_hi``, answered by the same 4 bytes;
- error    ``addr func|0x80 code crc_lo crc_hi``.

The CRC is CRC-16/MODBUS (reflected polynomial 0xA001, initial value 0xFFFF) over every byte
before it, sent low byte first. Registers are big-endian 16-bit words; the 32-bit quantities
(current, power, energy) send the *low* word first.

Both sides live here: the driver builds requests and scans replies, the emulator scans requests
and builds replies, so one table of facts serves both and round-trip tests tie them together.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Modbus function codes the PZEM-004T v3.0 implements.
READ_HOLDING = 0x03
READ_INPUT = 0x04
WRITE_SINGLE = 0x06
CALIBRATE = 0x41
RESET_ENERGY = 0x42

#: 0x00 is broadcast (slaves never answer); 0xF8 is the "general" address any single slave on
#: the bus answers, whatever its configured address. Configurable addresses are 0x01..0xF7.
BROADCAST_ADDRESS = 0x00
GENERAL_ADDRESS = 0xF8
MAX_SLAVE_ADDRESS = 0xF7

#: Input registers 0x0000..0x0009 hold one complete measurement.
MEASUREMENT_START = 0x0000
MEASUREMENT_COUNT = 10
#: Holding registers: 0x0001 power alarm threshold (W), 0x0002 Modbus address.
HOLDING_ALARM_THRESHOLD = 0x0001
HOLDING_ADDRESS = 0x0002

#: Modbus exception codes as the Peacefair manual names them.
EXCEPTION_TEXT = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "slave device failure",
}


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS of ``data`` (reflected poly 0xA001, init 0xFFFF, no final XOR).

    >>> crc16_modbus(bytes.fromhex("01040000000A")) == 0x0D70
    True
    """
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def append_crc(body: bytes) -> bytes:
    """``body`` followed by its CRC, low byte first (the order on the wire)."""
    crc = crc16_modbus(body)
    return bytes(body) + bytes((crc & 0xFF, crc >> 8))


def crc_ok(frame: bytes) -> bool:
    """True when the last two bytes of ``frame`` are the CRC of the bytes before them."""
    if len(frame) < 3:
        return False
    return crc16_modbus(frame[:-2]) == frame[-2] | (frame[-1] << 8)


def check_address(address: int) -> int:
    """Validate a slave address the driver may poll: 1..247 or 0xF8 (general)."""
    if not (1 <= address <= MAX_SLAVE_ADDRESS or address == GENERAL_ADDRESS):
        raise ValueError(
            f"Modbus address must be 1..247 or 248 (0xF8, 'general': any single module), "
            f"got {address}; 0 is broadcast and never answered"
        )
    return address


# --------------------------------------------------------------------------- requests (master)

def read_registers_request(address: int, function: int, start: int, count: int) -> bytes:
    """``addr func start count crc``: read ``count`` registers from ``start`` (0x03 or 0x04)."""
    if function not in (READ_HOLDING, READ_INPUT):
        raise ValueError(f"read function must be 0x03 or 0x04, got {function:#04x}")
    if not 1 <= count <= 125:
        raise ValueError(f"register count must be 1..125, got {count}")
    return append_crc(bytes((address, function, start >> 8, start & 0xFF, count >> 8, count & 0xFF)))


def read_measurement_request(address: int) -> bytes:
    """The poll every PZEM client sends: 10 input registers from 0x0000."""
    return read_registers_request(address, READ_INPUT, MEASUREMENT_START, MEASUREMENT_COUNT)


def reset_energy_request(address: int) -> bytes:
    """``addr 0x42 crc``: zero the energy counter (answered by the same 4 bytes)."""
    return append_crc(bytes((address, RESET_ENERGY)))


def write_register_request(address: int, register: int, value: int) -> bytes:
    """``addr 0x06 reg value crc`` (answered by the same 8 bytes)."""
    return append_crc(bytes((address, WRITE_SINGLE, register >> 8, register & 0xFF,
                             (value >> 8) & 0xFF, value & 0xFF)))


# --------------------------------------------------------------------------- replies (slave)

@dataclass(frozen=True)
class RegistersReply:
    """Answer to 0x03/0x04: the 16-bit register values in order."""

    address: int
    function: int
    registers: tuple[int, ...]


@dataclass(frozen=True)
class EchoReply:
    """Answer to 0x06 / 0x41 / 0x42: the request echoed (``payload`` = bytes after ``func``)."""

    address: int
    function: int
    payload: bytes


@dataclass(frozen=True)
class ExceptionReply:
    """``addr func|0x80 code``: the slave refused the request."""

    address: int
    function: int  # the function that was refused (without the 0x80 bit)
    code: int

    @property
    def text(self) -> str:
        name = EXCEPTION_TEXT.get(self.code, "unknown exception code")
        return f"Modbus exception {self.code:#04x} ({name}) for function {self.function:#04x}"


Reply = RegistersReply | EchoReply | ExceptionReply


def _echo_length(function: int) -> int | None:
    # 0x06 echoes addr func reg(2) value(2); 0x42 echoes addr func; 0x41 echoes addr func pw(2)
    return {WRITE_SINGLE: 8, RESET_ENERGY: 4, CALIBRATE: 6}.get(function)


def _address_matches(byte: int, address: int) -> bool:
    # A module polled at the general address answers with 0xF8 as the reply's address (Tasmota
    # quotes such a reply; docs/protocols/pzem004t.md#reply-address-at-0xf8). Any unicast address
    # is accepted too: on the single-module bus 0xF8 requires nothing else can answer, and a
    # module revision that answers with its own address keeps working.
    if address == GENERAL_ADDRESS:
        return 1 <= byte <= MAX_SLAVE_ADDRESS or byte == GENERAL_ADDRESS
    return byte == address


def reply_length(buf: bytes, function: int, address: int) -> int | None:
    """Expected length of the reply that would start at ``buf[0]``, or ``None`` when ``buf``
    cannot start a reply to ``function`` from ``address``. The length may exceed ``len(buf)``
    (more bytes needed); with fewer than 3 bytes the minimum possible length is returned."""
    n = len(buf)
    if n == 0:
        return 5
    if not _address_matches(buf[0], address):
        return None
    if n == 1:
        return 5
    func = buf[1]
    if func == function | 0x80:
        return 5
    if func != function:
        return None
    if function in (READ_HOLDING, READ_INPUT):
        if n == 2:
            return 5
        count = buf[2]
        if count == 0 or count % 2 or count > 250:
            return None
        return 5 + count
    echo = _echo_length(function)
    return echo if echo is not None else None


def match_reply(buf: bytes, function: int, address: int) -> int:
    """Frame matcher (see :class:`~hwval.sources.serial.framing.FrameScanner`): the length of
    a CRC-valid reply at offset 0, ``0`` when more bytes are needed, ``-1`` when none starts
    here (wrong address/function, impossible length or bad CRC)."""
    length = reply_length(buf, function, address)
    if length is None:
        return -1
    if len(buf) < length:
        return 0
    return length if crc_ok(buf[:length]) else -1


def parse_reply(frame: bytes) -> Reply:
    """Decode a complete, CRC-checked reply frame (as returned by :func:`match_reply`)."""
    if not crc_ok(frame):
        raise ValueError(f"bad CRC in Modbus frame {frame.hex(' ')}")
    address, func = frame[0], frame[1]
    if func & 0x80:
        return ExceptionReply(address, func & 0x7F, frame[2])
    if func in (READ_HOLDING, READ_INPUT):
        data = frame[3:-2]
        if len(data) != frame[2] or len(data) % 2:
            raise ValueError(f"byte count {frame[2]} does not match {len(data)} data bytes")
        regs = tuple((data[i] << 8) | data[i + 1] for i in range(0, len(data), 2))
        return RegistersReply(address, func, regs)
    return EchoReply(address, func, bytes(frame[2:-2]))


def registers_reply(address: int, function: int, registers: tuple[int, ...] | list[int]) -> bytes:
    """Build ``addr func byte_count data crc`` (the emulator's answer to 0x03/0x04)."""
    data = b"".join(bytes(((r >> 8) & 0xFF, r & 0xFF)) for r in registers)
    return append_crc(bytes((address, function, len(data))) + data)


def exception_reply(address: int, function: int, code: int) -> bytes:
    return append_crc(bytes((address, function | 0x80, code)))


# --------------------------------------------------------------------------- requests (slave side)

@dataclass(frozen=True)
class Request:
    """A request as the slave sees it: ``payload`` is everything between ``func`` and the CRC."""

    address: int
    function: int
    payload: bytes

    @property
    def start(self) -> int:
        return (self.payload[0] << 8) | self.payload[1]

    @property
    def count(self) -> int:
        return (self.payload[2] << 8) | self.payload[3]


#: Request length by function (the PZEM implements only these).
_REQUEST_LENGTH = {READ_HOLDING: 8, READ_INPUT: 8, WRITE_SINGLE: 8, CALIBRATE: 6, RESET_ENERGY: 4}


def match_request(buf: bytes) -> int:
    """Frame matcher for the slave: length of a CRC-valid request at offset 0, ``0`` if more
    bytes are needed, ``-1`` if none starts here. A CRC-valid frame with a function the PZEM
    does not implement is matched by trying every length up to 8 (Modbus-RTU delimits frames by
    line silence, which a byte stream does not show), so it can be answered 'illegal function'."""
    n = len(buf)
    if n == 0:
        return 0
    if not (buf[0] <= MAX_SLAVE_ADDRESS or buf[0] == GENERAL_ADDRESS):
        return -1
    if n < 2:
        return 0
    length = _REQUEST_LENGTH.get(buf[1])
    if length is not None:
        if n < length:
            return 0
        return length if crc_ok(buf[:length]) else -1
    for length in range(4, min(n, 8) + 1):
        if crc_ok(buf[:length]):
            return length
    return 0 if n < 8 else -1


def parse_request(frame: bytes) -> Request:
    if not crc_ok(frame):
        raise ValueError(f"bad CRC in Modbus request {frame.hex(' ')}")
    return Request(frame[0], frame[1], bytes(frame[2:-2]))


# --------------------------------------------------------------------------- measurement

@dataclass(frozen=True)
class Measurement:
    """One PZEM-004T reading in SI units (energy kept in the module's own Wh)."""

    voltage_v: float
    current_a: float
    power_w: float
    energy_wh: int
    frequency_hz: float
    power_factor: float
    alarm: bool = False


def _u32(low: int, high: int) -> int:
    return (high << 16) | low


def decode_measurement(registers: tuple[int, ...] | list[int]) -> Measurement:
    """Input registers 0x0000..0x0009 -> :class:`Measurement`.

    Scales (docs/protocols/pzem004t.md#input-registers): voltage 0.1 V, current 0.001 A (32-bit),
    power 0.1 W (32-bit), energy 1 Wh (32-bit), frequency 0.1 Hz, power factor 0.01, alarm
    0xFFFF/0x0000.
    """
    if len(registers) != MEASUREMENT_COUNT:
        raise ValueError(f"a PZEM measurement is {MEASUREMENT_COUNT} registers, got {len(registers)}")
    r = registers
    return Measurement(
        voltage_v=r[0] / 10.0,
        current_a=_u32(r[1], r[2]) / 1000.0,
        power_w=_u32(r[3], r[4]) / 10.0,
        energy_wh=_u32(r[5], r[6]),
        frequency_hz=r[7] / 10.0,
        power_factor=r[8] / 100.0,
        alarm=r[9] == 0xFFFF,
    )


def encode_measurement(m: Measurement) -> tuple[int, ...]:
    """Inverse of :func:`decode_measurement`: values are rounded to the register resolution and
    clamped to what the registers can hold."""

    def scaled(value: float, scale: float, bits: int) -> int:
        return min(max(int(round(value / scale)), 0), (1 << bits) - 1)

    current = scaled(m.current_a, 0.001, 32)
    power = scaled(m.power_w, 0.1, 32)
    energy = min(max(int(m.energy_wh), 0), 0xFFFFFFFF)
    return (
        scaled(m.voltage_v, 0.1, 16),
        current & 0xFFFF, current >> 16,
        power & 0xFFFF, power >> 16,
        energy & 0xFFFF, energy >> 16,
        scaled(m.frequency_hz, 0.1, 16),
        scaled(m.power_factor, 0.01, 16),
        0xFFFF if m.alarm else 0x0000,
    )
