"""Frames parsed per second by each serial codec (pure decode path, no I/O).

Run: ``python benchmarks/serial_codecs.py``. For the text protocols a "frame" is one line or
packet taken from a byte stream through the same framing the driver uses (LineBuffer /
PacketBuffer), then decoded to SI values; for the binary ones (PZEM-004T, CSE7766) the frame is
matched (CRC / checksum) and decoded. The binary protocols also get what only they do: the
CRC-16/MODBUS alone, and frames per second through the byte-sliding FrameScanner on a stream
where one frame in five is preceded by garbage (the resynchronisation path the drivers run on a
noisy line). Real lines carry at most ~10-50 frames per second (PZEM ~40 at 9600 baud, CSE7766
20 at 4800 baud), so any figure above ~1e4/s means the codec is invisible in a capture.
"""

from __future__ import annotations

import random
import time
from typing import Callable

from hwval.sources.serial import cse7766_codec as cse
from hwval.sources.serial import esphome_codec, tasmota_codec, wattsup_codec
from hwval.sources.serial import pzem004t_codec as pzem
from hwval.sources.serial.framing import FrameScanner, LineBuffer

TASMOTA_LINE = (b'12:00:01.250 RSL: STATUS10 = {"StatusSNS":{"Time":"2024-01-01T12:00:01","ENERGY":'
                b'{"TotalStartTime":"2024-01-01T00:00:00","Total":6.40412,"Yesterday":5.340,'
                b'"Today":1.064,"Power":2629,"ApparentPower":2645,"ReactivePower":288,'
                b'"Factor":0.99,"Voltage":226,"Current":11.677}}}\r\n')
ESPHOME_LINE = (b"\x1b[0;36m[D][sensor:093]: 'Power': Sending state 24.40000 W with 1 decimals "
                b"of accuracy\x1b[0m\r\n")
WATTSUP_RECORD = b"#d,-,18,1241,1191,970,55,_,_,_,1241,_,_,_,_,_,95,_,_,600,1306;\r\n"
#: the checked reply of docs/protocols/pzem004t.md#input-registers (225.7 V, 0.108 A, 24.4 W,
#: 38 Wh, 50.0 Hz, PF 1.00)
PZEM_REPLY = bytes.fromhex("01 04 14 08 D1 00 6C 00 00 00 F4 00 00 00 26 00 00 01 F4 00 64 00 00 51 34")
#: a loaded CSE7766 frame (V, I and P valid)
CSE_FRAME = bytes.fromhex("55 5A 02 F7 60 00 03 AB 00 40 10 02 60 5D 51 A6 58 03 E9 EF 71 0B 7A 36")
BATCH = 200


def rate(label: str, call: Callable[[], int], min_s: float = 0.5) -> None:
    """Print the rate of ``call``, which returns how many frames it handled."""
    frames, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < min_s:
        frames += call()
    print(f"{label:<52} {frames / elapsed:>12,.0f} frames/s", flush=True)


def tasmota() -> int:
    n = 0
    for line in LineBuffer(max_line_bytes=1 << 20).feed(TASMOTA_LINE * BATCH):
        log = tasmota_codec.parse_log_line(line)
        message = tasmota_codec.parse_message(log.text)
        tasmota_codec.decode_energy(tasmota_codec.energy_object(message.payload))
        n += 1
    return n


def esphome() -> int:
    n = 0
    for line in LineBuffer(max_line_bytes=1 << 20).feed(ESPHOME_LINE * BATCH):
        esphome_codec.decode_line(line)
        n += 1
    return n


def wattsup() -> int:
    n = 0
    for text in wattsup_codec.PacketBuffer().feed(WATTSUP_RECORD * BATCH):
        wattsup_codec.decode_record(wattsup_codec.parse_packet(text))
        n += 1
    return n


def pzem004t() -> int:
    for _ in range(BATCH):
        n = pzem.match_reply(PZEM_REPLY, pzem.READ_INPUT, 1)
        pzem.decode_measurement(pzem.parse_reply(PZEM_REPLY[:n]).registers)
    return BATCH


def pzem_crc() -> int:
    for _ in range(BATCH):
        pzem.crc16_modbus(PZEM_REPLY)
    return BATCH


def cse7766() -> int:
    for _ in range(BATCH):
        f = cse.decode_frame(CSE_FRAME[:cse.match_frame(CSE_FRAME)])
        f.voltage_v(), f.current_a(), f.power_w()
    return BATCH


def noisy_stream(frame: bytes, n_frames: int, seed: int = 1) -> bytes:
    """``n_frames`` copies of ``frame``, one in five preceded by 1-16 random bytes."""
    rng = random.Random(seed)
    out = bytearray()
    for i in range(n_frames):
        if i % 5 == 0:
            out += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        out += frame
    return bytes(out)


def scan(matcher: Callable[[bytes], int], frame: bytes) -> Callable[[], int]:
    """Frames found by a FrameScanner fed a noisy stream in driver-sized (64-byte) reads."""
    stream = noisy_stream(frame, BATCH)

    def run() -> int:
        scanner = FrameScanner(matcher, max_buffer_bytes=1 << 20)
        found = sum(len(scanner.feed(stream[i:i + 64])) for i in range(0, len(stream), 64))
        assert found >= BATCH, f"resynchronisation lost frames: {found} of {BATCH}"
        return found

    return run


def main() -> None:
    rate("tasmota (log line + JSON ENERGY -> SI)", tasmota)
    rate("esphome (ANSI logger line -> SI)", esphome)
    rate("wattsup (#d record -> SI)", wattsup)
    rate("pzem004t (CRC check + registers -> SI)", pzem004t)
    rate("pzem004t: CRC-16/MODBUS alone over a 25-byte reply", pzem_crc)
    rate("pzem004t: scanner, 1 in 5 replies after garbage",
         scan(lambda b: pzem.match_reply(b, pzem.READ_INPUT, 1), PZEM_REPLY), min_s=1.0)
    rate("cse7766 (checksum + frame -> SI)", cse7766)
    rate("cse7766: scanner, 1 in 5 frames after garbage", scan(cse.match_frame, CSE_FRAME),
         min_s=1.0)


if __name__ == "__main__":
    main()
