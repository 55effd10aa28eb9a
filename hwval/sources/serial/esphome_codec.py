"""Pure codec of the ESPHome UART logger: sensor state lines.

Facts (docs/protocols/esphome.md; sources: esphome/esphome components logger
(line format and ANSI colours) and sensor (``Sending state`` message), cse7766/hlw8012/pzemac):

* a line is ``[<L>][<tag>:<line>]: <text>`` wrapped in ANSI colour codes (DEBUG ``ESC[0;36m``,
  every line ends ``ESC[0m``), CRLF; levels E W I C D V VV; on ESP32 a task other than the loop
  adds ``[<task>]`` (accepted before or after the ``[tag:line]`` part, which varies by version);
  the source line number varies by version (absent on some);
* a sensor publishes ``'<name>': Sending state %.5f <unit> with %d decimals of accuracy``
  (the unit may be empty, leaving two spaces); ``nan`` when the sensor has no value.

Nothing here touches a port.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

ANSI = re.compile(r"\x1b\[[0-9;]*m")
LOG_LINE = re.compile(
    r"^\[(?P<level>VV|[EWICDV])\]\[(?P<tag>[^\]:]+)(?::(?P<line>\d+))?\]"
    r"(?:\[(?P<task>[^\]]+)\])?: (?P<text>.*)$")
STATE = re.compile(
    r"^'(?P<name>.*)': Sending state (?P<value>\S+) (?P<unit>\S*) ?with (?P<decimals>-?\d+) "
    r"decimals of accuracy$")

#: a sensor state line cut before its value: ``'<name>':`` then at most ``Sending state``
CUT_STATE = re.compile(r"^'(?P<name>[^']*)':\s*(?P<rest>.*)$")
STATE_WORDS = "Sending state"

#: unit on the wire -> (SI unit, factor): what each value is multiplied by
UNITS = {
    "W": ("W", 1.0), "kW": ("W", 1e3), "mW": ("W", 1e-3),
    "V": ("V", 1.0), "mV": ("V", 1e-3), "kV": ("V", 1e3),
    "A": ("A", 1.0), "mA": ("A", 1e-3),
    "Wh": ("J", 3600.0), "kWh": ("J", 3.6e6), "J": ("J", 1.0), "kJ": ("J", 1e3),
    "VA": ("VA", 1.0), "var": ("var", 1.0), "VAR": ("var", 1.0), "Hz": ("Hz", 1.0),
    "%": ("1", 0.01), "": ("1", 1.0),
}
DEBUG_COLOUR = "\x1b[0;36m"
RESET = "\x1b[0m"


class EspHomeDecodeError(ValueError):
    """A sensor state line whose value or unit cannot be used; ``sensor`` names it (``None``
    when the line is too damaged to tell)."""

    def __init__(self, message: str, sensor: str | None = None) -> None:
        super().__init__(message)
        self.sensor = sensor


@dataclass(frozen=True)
class SensorState:
    """One ``Sending state`` line: the sensor ``name``, its ``value`` in SI (``si_unit``), the
    ``unit`` and number as sent, ``decimals`` of accuracy, and the logger ``tag``."""

    name: str
    value: float
    si_unit: str
    unit: str
    raw_value: float
    decimals: int
    tag: str


def strip_ansi(line: str) -> str:
    return ANSI.sub("", line)


def parse_line(line: bytes | str) -> tuple[str, str, str] | None:
    """``(level, tag, text)`` of a logger line, or ``None`` if it is not one."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            return None
    m = LOG_LINE.match(strip_ansi(line).strip())
    if m is None:
        return None
    return m.group("level"), m.group("tag"), m.group("text")


def decode_state(text: str, tag: str = "sensor") -> SensorState | None:
    """The sensor state in a logger line's text, or ``None`` for other messages.

    Raises :class:`EspHomeDecodeError` for a state line with an unreadable number or unit.
    """
    m = STATE.match(text)
    if m is None:
        if "': Sending state " in text:
            raise EspHomeDecodeError(f"damaged sensor state line: {text[:60]!r}")  # name unsure
        cut = CUT_STATE.match(text) if tag == "sensor" else None
        if cut is not None and STATE_WORDS.startswith(cut.group("rest").rstrip()):
            # the sensor component logs nothing else that starts so: a line cut short
            raise EspHomeDecodeError(f"sensor {cut.group('name')!r}: state line cut short: "
                                     f"{text[:60]!r}",
                                     cut.group("name"))
        return None
    unit = m.group("unit")
    if unit not in UNITS:
        raise EspHomeDecodeError(f"sensor {m.group('name')!r}: unknown unit {unit!r} "
                                 f"(known: {', '.join(u for u in UNITS if u)})", m.group("name"))
    try:
        raw = float(m.group("value"))
    except ValueError:
        raise EspHomeDecodeError(
            f"sensor {m.group('name')!r}: value {m.group('value')!r} is not a number",
            m.group("name")) from None
    si_unit, factor = UNITS[unit]
    return SensorState(m.group("name"), raw * factor, si_unit, unit, raw,
                       int(m.group("decimals")), tag)


def decode_line(line: bytes | str) -> SensorState | None:
    """Both steps: ``None`` for non-logger lines and other messages."""
    parsed = parse_line(line)
    if parsed is None:
        return None
    return decode_state(parsed[2], parsed[1])


def is_logger_line(line: bytes | str) -> bool:
    return parse_line(line) is not None


def encode_state(name: str, value: float, unit: str, decimals: int, *, tag: str = "sensor",
                 line_no: int | None = 93, task: str | None = None, colour: bool = True) -> bytes:
    """The exact line the ESPHome logger prints for a published sensor state (CRLF ended)."""
    where = f"{tag}:{line_no:03d}" if line_no is not None else tag
    task_part = f"[{task}]" if task else ""
    number = "nan" if math.isnan(value) else f"{value:.5f}"
    body = f"[D][{where}]{task_part}: '{name}': Sending state {number} {unit} with {decimals} decimals of accuracy"
    if colour:
        body = f"{DEBUG_COLOUR}{body}{RESET}"
    return (body + "\r\n").encode("utf-8")


def encode_log(level: str, tag: str, line_no: int, text: str) -> bytes:
    """Any other logger line (used by the emulator for realistic chatter)."""
    colours = {"E": "\x1b[1;31m", "W": "\x1b[0;33m", "I": "\x1b[0;32m", "C": "\x1b[0;35m",
               "D": DEBUG_COLOUR, "V": "\x1b[0;37m", "VV": "\x1b[0;38m"}
    return f"{colours[level]}[{level}][{tag}:{line_no:03d}]: {text}{RESET}\r\n".encode("utf-8")
