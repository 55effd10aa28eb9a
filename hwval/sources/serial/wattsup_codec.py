"""Pure codec of the Watts Up? PRO / .NET serial protocol (rev 1.8).

Facts (docs/protocols/wattsup.md; sources: Electronic Educational Devices, Watts Up?
Communications Protocol rev 1.8, as read by energymon/energymon wattsup; the ``#V,R,0;`` answer
``#v,-,8,<model>,<memory>,<hw major>,<hw minor>,<fw major>,<fw minor>,<fw timestamp>,<checksum>;``
is corroborated by a reader written from that document, not read in it: see
docs/protocols/wattsup.md#version-reply):

* packets ``#<Cmd>,<Sub>,<N>,<arg1>,...,<argN>;``; text outside packets is ignored (banners);
  CR, LF and TAB inside a packet are ignored; unlogged fields are ``_``;
* ``#d,-,18,<W>,<V>,<A>,<WH>,<Cost>,<WH/Mo>,<Cost/Mo>,<Wmax>,<Vmax>,<Amax>,<Wmin>,<Vmin>,<Amin>,
  <PF>,<DC>,<PC>,<HZ>,<VA>;`` integers: W, V, WH, Wmax.., HZ, VA in tenths; A, Amax, Amin in
  thousandths; PF and DC in percent;
* ``#h,-,18,W,V,A,WH,...;`` names the record fields (answer to ``#H,R,0;``).

Nothing here touches a port.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

HEADER_FIELDS = ("W", "V", "A", "WH", "Cost", "WH/Mo", "Cost/Mo", "Wmax", "Vmax", "Amax",
                 "Wmin", "Vmin", "Amin", "PF", "DC", "PC", "HZ", "VA")
#: record field -> (hwval key, factor from the integer on the wire to SI)
FIELD_SCALE: Mapping[str, tuple[str, float]] = {
    "W": ("power_w", 0.1), "V": ("voltage_v", 0.1), "A": ("current_a", 0.001),
    "WH": ("energy_j", 0.1 * 3600.0), "PF": ("power_factor", 0.01),
    "HZ": ("frequency_hz", 0.1), "VA": ("apparent_power_va", 0.1),
}
MAX_PACKET_BYTES = 512
CTRL_X = b"\x18"


class WattsupDecodeError(ValueError):
    """A packet that is malformed (wrong field count, non-integer field...)."""


@dataclass(frozen=True)
class Packet:
    command: str
    sub: str
    fields: tuple[str, ...]


class PacketBuffer:
    """Splits the byte stream into packet texts (``#...;`` without the delimiters).

    A ``#`` before the previous packet's ``;`` means that packet was cut short: it is
    returned as ``None`` in the output (so the caller can count it) and parsing restarts at
    the new ``#``. Text outside packets (banners) is collected in :attr:`outside`.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._in_packet = False
        self.outside = bytearray()

    def feed(self, data: bytes) -> list[str | None]:
        out: list[str | None] = []
        for byte in data:
            if byte == 0x23:  # '#'
                if self._in_packet:
                    out.append(None)  # a new packet began: the previous one was truncated
                self._buf.clear()
                self._in_packet = True
            elif not self._in_packet:
                if len(self.outside) < 4096:
                    self.outside.append(byte)
            elif byte == 0x3B:  # ';'
                self._in_packet = False
                try:
                    out.append(self._buf.decode("ascii"))
                except UnicodeDecodeError:
                    out.append(None)
                self._buf.clear()
            elif byte in (0x0D, 0x0A, 0x09):
                continue  # ignored inside packets
            else:
                self._buf.append(byte)
                if len(self._buf) > MAX_PACKET_BYTES:
                    out.append(None)
                    self._buf.clear()
                    self._in_packet = False
        return out

    @property
    def in_packet(self) -> bool:
        """True while a packet has begun (``#`` seen) and not ended."""
        return self._in_packet

    def clear(self) -> None:
        self._buf.clear()
        self._in_packet = False
        self.outside.clear()


def parse_packet(text: str) -> Packet:
    """``d,-,18,124,...`` (the text between ``#`` and ``;``) -> :class:`Packet`."""
    parts = text.split(",")
    if len(parts) < 3:
        raise WattsupDecodeError(f"packet #{text[:40]}; has fewer than 3 fields")
    command, sub, count = parts[0], parts[1], parts[2]
    if len(command) != 1 or not command.isalpha():
        raise WattsupDecodeError(f"packet #{text[:40]}; has no one-letter command")
    try:
        n = int(count)
    except ValueError:
        raise WattsupDecodeError(f"packet #{text[:40]}; field count {count!r} is not a number") from None
    fields = tuple(parts[3:])
    if fields == ("",) and n == 0:
        fields = ()
    if len(fields) != n:
        raise WattsupDecodeError(f"packet #{command},{sub}: announces {n} fields, has {len(fields)}")
    return Packet(command, sub, fields)


def decode_record(packet: Packet, header: Sequence[str] = HEADER_FIELDS) -> dict[str, float]:
    """SI values of a ``#d`` record (``power_w``, ``voltage_v``, ``current_a``, ``energy_j``
    as the meter's cumulative Wh, ``power_factor``, ``frequency_hz``, ``apparent_power_va``);
    unlogged fields (``_``) are left out."""
    if packet.command != "d":
        raise WattsupDecodeError(f"not a data record: #{packet.command}")
    if len(packet.fields) != len(header):
        raise WattsupDecodeError(f"record has {len(packet.fields)} fields, header {len(header)}")
    out: dict[str, float] = {}
    for name, raw in zip(header, packet.fields):
        if name not in FIELD_SCALE or raw in ("_", ""):
            continue
        try:
            value = int(raw)
        except ValueError:
            raise WattsupDecodeError(f"field {name}={raw!r} is not an integer") from None
        key, factor = FIELD_SCALE[name]
        out[key] = value * factor
    if "power_w" not in out:
        raise WattsupDecodeError("record without power (W field not logged)")
    return out


def decode_header(packet: Packet) -> tuple[str, ...]:
    if packet.command != "h":
        raise WattsupDecodeError(f"not a header: #{packet.command}")
    return packet.fields


def decode_version(packet: Packet) -> dict[str, str]:
    """Identity from ``#v``: model, memory, hardware and firmware versions, firmware date."""
    if packet.command != "v":
        raise WattsupDecodeError(f"not a version answer: #{packet.command}")
    names = ("model", "memory", "hw_major", "hw_minor", "fw_major", "fw_minor", "fw_timestamp",
             "checksum")
    out = {n: v for n, v in zip(names, packet.fields)}
    if len(packet.fields) > len(names):  # kept, not dropped: an emulator identifies itself here
        out["extra"] = ",".join(packet.fields[len(names):])
    return out


# ---- encoders (emulator; round-trip tests) ----------------------------------------------------

def encode_packet(command: str, sub: str, fields: Sequence[str]) -> bytes:
    return ("#" + ",".join([command, sub, str(len(fields)), *fields]) + ";").encode("ascii")


def encode_record(power_w: float, voltage_v: float, current_a: float, energy_wh: float,
                  power_factor: float, frequency_hz: float | None = None,
                  apparent_power_va: float | None = None) -> bytes:
    """A ``#d`` record with the meter's integer scaling (other fields unlogged)."""
    values = dict.fromkeys(HEADER_FIELDS, "_")
    values.update(W=str(round(power_w * 10)), V=str(round(voltage_v * 10)),
                  A=str(round(current_a * 1000)), WH=str(round(energy_wh * 10)),
                  Wmax=str(round(power_w * 10)), PF=str(round(power_factor * 100)))
    if frequency_hz is not None:
        values["HZ"] = str(round(frequency_hz * 10))
    if apparent_power_va is not None:
        values["VA"] = str(round(apparent_power_va * 10))
    return encode_packet("d", "-", [values[f] for f in HEADER_FIELDS])


def encode_logging_command(interval_s: int) -> bytes:
    """``#L,W,3,E,,<interval>;``: external logging every ``interval_s`` seconds."""
    return f"#L,W,3,E,,{int(interval_s)};".encode("ascii")
