"""Frames parsed per second by each serial codec (pure decode path, no I/O).

Run: ``python benchmarks/serial_codecs.py``. For the text protocols a "frame" is one line or
packet taken from a byte stream through the same framing the driver uses (LineBuffer /
PacketBuffer), then decoded to SI values. The PZEM-004T and CSE7766 codecs (issue 4, other
half) are included when present; ``benchmarks/serial_codecs_modbus_cse.py`` measures them in
more detail. Real lines carry at most ~10-50 frames per second, so any figure above ~1e4/s means
the codec is invisible in a capture.
"""

from __future__ import annotations

import importlib
import time
from typing import Callable

from hwval.sources.serial import esphome_codec, tasmota_codec, wattsup_codec
from hwval.sources.serial.framing import LineBuffer

TASMOTA_LINE = (b'12:00:01.250 RSL: STATUS10 = {"StatusSNS":{"Time":"2024-01-01T12:00:01","ENERGY":'
                b'{"TotalStartTime":"2024-01-01T00:00:00","Total":6.40412,"Yesterday":5.340,'
                b'"Today":1.064,"Power":2629,"ApparentPower":2645,"ReactivePower":288,'
                b'"Factor":0.99,"Voltage":226,"Current":11.677}}}\r\n')
ESPHOME_LINE = (b"\x1b[0;36m[D][sensor:093]: 'Power': Sending state 24.40000 W with 1 decimals "
                b"of accuracy\x1b[0m\r\n")
WATTSUP_RECORD = b"#d,-,18,1241,1191,970,55,_,_,_,1241,_,_,_,_,_,95,_,_,600,1306;\r\n"
BATCH = 200


def rate(label: str, call: Callable[[], int], min_s: float = 0.5) -> None:
    frames, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < min_s:
        frames += call()
    print(f"{label:<44} {frames / elapsed:>12,.0f} frames/s", flush=True)


def tasmota() -> int:
    stream = TASMOTA_LINE * BATCH
    n = 0
    for line in LineBuffer(max_line_bytes=1 << 20).feed(stream):
        log = tasmota_codec.parse_log_line(line)
        message = tasmota_codec.parse_message(log.text)
        tasmota_codec.decode_energy(tasmota_codec.energy_object(message.payload))
        n += 1
    return n


def esphome() -> int:
    stream = ESPHOME_LINE * BATCH
    n = 0
    for line in LineBuffer(max_line_bytes=1 << 20).feed(stream):
        esphome_codec.decode_line(line)
        n += 1
    return n


def wattsup() -> int:
    n = 0
    for text in wattsup_codec.PacketBuffer().feed(WATTSUP_RECORD * BATCH):
        wattsup_codec.decode_record(wattsup_codec.parse_packet(text))
        n += 1
    return n


def optional_codecs() -> list[tuple[str, Callable[[], int]]]:
    """The other half of issue 4, if it is in the tree."""
    out: list[tuple[str, Callable[[], int]]] = []
    try:
        pzem = importlib.import_module("hwval.sources.serial.pzem004t_codec")
        reply = bytes.fromhex("01 04 14 08 D1 00 6C 00 00 00 F4 00 00 00 26 00 00 01 F4 00 64 00 00 51 34")

        def pzem004t() -> int:
            for _ in range(BATCH):
                n = pzem.match_reply(reply, pzem.READ_INPUT, 1)
                pzem.decode_measurement(pzem.parse_reply(reply[:n]).registers)
            return BATCH

        out.append(("pzem004t (CRC check + registers -> SI)", pzem004t))
    except (ImportError, AttributeError) as exc:
        print(f"pzem004t codec not benchmarked: {exc}")
    try:
        cse = importlib.import_module("hwval.sources.serial.cse7766_codec")
        frame = bytes.fromhex("55 5A 02 F7 60 00 03 AB 00 40 10 02 60 5D 51 A6 58 03 E9 EF 71 0B 7A 36")

        def cse7766() -> int:
            for _ in range(BATCH):
                f = cse.decode_frame(frame[:cse.match_frame(frame)])
                f.voltage_v(), f.current_a(), f.power_w()
            return BATCH

        out.append(("cse7766 (checksum + frame -> SI)", cse7766))
    except (ImportError, AttributeError) as exc:
        print(f"cse7766 codec not benchmarked: {exc}")
    return out


def main() -> None:
    rate("tasmota (log line + JSON ENERGY -> SI)", tasmota)
    rate("esphome (ANSI logger line -> SI)", esphome)
    rate("wattsup (#d record -> SI)", wattsup)
    for label, call in optional_codecs():
        rate(label, call)


if __name__ == "__main__":
    main()
