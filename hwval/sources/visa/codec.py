"""Pure SCPI codecs shared by the analyzer drivers: numbers, identities, error queue entries,
definite-length binary blocks, range selection and the accuracy-spec uncertainty.

Nothing here touches a transport; every function is tested with byte/string fixtures.

Facts (sources: Yokogawa WT310E user's manual,
communication commands; intel/yoko-tool ``yokolibs/_wt310.py``; mlcommons/power-dev
``power_meter_sampling``; Keysight N6705C programming guide; IEEE 488.2 definite-length blocks):

- numeric replies are NR1/NR2/NR3 tokens separated by commas (``104.75E+00,0.4568E+00``);
- a Yokogawa value with no data is ``NAN`` in ASCII or ``9.91E+37``; an over-range value is
  ``INF`` or ``9.9E+37`` (the display's ``-OL-``). Both forms are accepted;
- ``*IDN?`` answers ``manufacturer,model,serial,firmware``;
- the error queue answers ``<code>,"<message>"`` with code 0 meaning empty;
- binary data comes as ``#<d><len><payload>`` (``d`` digits of ``len``), optionally followed by LF.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: IEEE 488.2 / Yokogawa "no data" and "over-range" sentinels.
NO_DATA_VALUE = 9.91e37
OVERRANGE_VALUE = 9.9e37
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class MalformedReply(ValueError):
    """A reply that does not follow the protocol (garbage, truncation, wrong field count)."""


def parse_number(token: str) -> float:
    """One numeric token -> float; ``nan`` for no data, ``+/-inf`` for over-range.

    >>> parse_number(" 104.75E+00"), parse_number("NAN"), parse_number("9.9E+37")
    (104.75, nan, inf)
    """
    text = token.strip()
    upper = text.upper()
    if upper in ("NAN", "+NAN", "-NAN"):
        return math.nan
    if upper in ("INF", "+INF", "-INF", "-OL-", "OL"):
        return -math.inf if upper.startswith("-I") else math.inf
    if not _NUMBER.match(text):
        raise MalformedReply(f"not a number: {token!r}")
    value = float(text)
    # The sentinels are sent as numbers too; compare with a tolerance for formatting.
    if math.isclose(abs(value), NO_DATA_VALUE, rel_tol=1e-3):
        return math.nan
    if math.isclose(abs(value), OVERRANGE_VALUE, rel_tol=1e-3):
        return math.copysign(math.inf, value)
    return value


def parse_numbers(text: str, expected: int | None = None) -> list[float]:
    """A comma-separated reply -> floats, checking the field count when ``expected`` is given."""
    body = text.strip()
    if not body:
        raise MalformedReply("empty reply")
    values = [parse_number(tok) for tok in body.split(",")]
    if expected is not None and len(values) != expected:
        raise MalformedReply(f"expected {expected} values, got {len(values)}: {text.strip()[:80]!r}")
    return values


@dataclass(frozen=True)
class Identity:
    """The four ``*IDN?`` fields."""

    manufacturer: str
    model: str
    serial: str
    firmware: str
    raw: str

    def as_dict(self) -> dict[str, str]:
        return {"idn": self.raw, "manufacturer": self.manufacturer, "model": self.model,
                "serial": self.serial, "firmware": self.firmware}


def parse_idn(text: str) -> Identity:
    """``YOKOGAWA,WT310,C2PH13047V,F1.03`` -> :class:`Identity` (exactly four fields)."""
    raw = text.strip()
    fields = [f.strip() for f in raw.split(",")]
    if len(fields) != 4 or not fields[0] or not fields[1]:
        raise MalformedReply(f"*IDN? reply is not 'manufacturer,model,serial,firmware': {raw[:80]!r}")
    return Identity(fields[0], fields[1], fields[2], fields[3], raw)


def parse_error(text: str) -> tuple[int, str]:
    """An error-queue entry ``-113,"Undefined header"`` -> ``(-113, "Undefined header")``.

    A header echo (``:STATUS:ERROR -113,...`` when ``:COMM:HEAD ON``) is tolerated.
    """
    raw = text.strip()
    match = re.match(r'^(?:[:A-Za-z]+\s+)?([+-]?\d+)\s*(?:,\s*"?(.*?)"?)?$', raw)
    if not match:
        raise MalformedReply(f"error queue reply is not '<code>,\"<message>\"': {raw[:80]!r}")
    return int(match.group(1)), (match.group(2) or "").strip()


def parse_definite_block(data: bytes) -> bytes:
    """Payload of an IEEE 488.2 definite-length block ``#<d><len><payload>[\\n]``."""
    if len(data) < 2 or data[:1] != b"#" or not data[1:2].isdigit():
        raise MalformedReply(f"binary block must start with '#<digit>': {data[:12]!r}")
    ndigits = int(data[1:2])
    if ndigits == 0:
        raise MalformedReply("indefinite-length blocks (#0) are not supported; use a definite length")
    header_end = 2 + ndigits
    length_text = data[2:header_end]
    if len(length_text) != ndigits or not length_text.isdigit():
        raise MalformedReply(f"binary block length field is truncated or not digits: {data[:12]!r}")
    length = int(length_text)
    payload = data[header_end:header_end + length]
    if len(payload) != length:
        raise MalformedReply(f"binary block truncated: header says {length} bytes, got {len(payload)}")
    rest = data[header_end + length:]
    if rest not in (b"", b"\n", b"\r\n"):
        raise MalformedReply(f"{len(rest)} unexpected bytes after the binary block")
    return payload


def decode_real32(payload: bytes, big_endian: bool = True) -> np.ndarray:
    """``FORM REAL`` payload (IEEE 754 single precision) -> float64 array."""
    if len(payload) % 4:
        raise MalformedReply(f"REAL payload of {len(payload)} bytes is not a multiple of 4")
    return np.frombuffer(payload, dtype=">f4" if big_endian else "<f4").astype(np.float64)


def format_number(value: float) -> str:
    """A value for a command argument, short and exact enough (``0.5``, ``300``, ``1.1e-05``)."""
    return f"{value:.6g}"


def pick_range(value: float, ranges: Sequence[float], headroom: float = 1.0) -> tuple[float, bool]:
    """Smallest range ``>= value * headroom``; ``(largest, False)`` when none is large enough."""
    need = abs(value) * headroom
    for r in sorted(ranges):
        if r >= need:
            return r, True
    return max(ranges), False


def power_uncertainty_w(power_w: float, power_range_w: float, pct_reading: float,
                        pct_range: float) -> float:
    """Accuracy-spec uncertainty: ``pct_reading % of |reading| + pct_range % of range`` (watts).

    This is how analyzer datasheets state power accuracy (e.g. WT310E at 45-66 Hz:
    ±(0.1 % of reading + 0.05 % of range)); the power range is voltage range × current range.
    """
    if math.isnan(power_w) or math.isinf(power_w):
        return math.nan
    return abs(power_w) * pct_reading / 100.0 + power_range_w * pct_range / 100.0
