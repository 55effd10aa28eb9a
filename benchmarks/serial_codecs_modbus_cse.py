"""PZEM-004T (Modbus-RTU) and CSE7766 codecs in more detail than ``serial_codecs.py``.

Run: ``python benchmarks/serial_codecs_modbus_cse.py``. ``benchmarks/serial_codecs.py`` measures
the plain decode path of every serial codec (these two included); this one adds what only the
binary protocols do: the CRC-16/MODBUS alone, and frames per second through the byte-sliding
FrameScanner on a stream where one frame in five is preceded by garbage (the resynchronisation
path the drivers run on a noisy line). Real lines carry ~40 (PZEM at 9600 baud) and 20 (CSE7766
at 4800 baud) frames per second at most, so anything above ~1e4/s leaves the codec invisible.
"""

from __future__ import annotations

import random
import time
from typing import Callable

from hwval.sources.serial import cse7766_codec as cse
from hwval.sources.serial import pzem004t_codec as pzem
from hwval.sources.serial.framing import FrameScanner

PZEM_REPLY = bytes.fromhex("01 04 14 08 D1 00 6C 00 00 00 F4 00 00 00 26 00 00 01 F4 00 64 00 00 51 34")
CSE_FRAME = bytes.fromhex("55 5A 02 F7 60 00 03 AB 00 40 10 02 60 5D 51 A6 58 03 E9 EF 71 0B 7A 36")


def rate(label: str, frames_per_call: int, call: Callable[[], object], min_s: float = 0.5) -> None:
    calls, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < min_s:
        for _ in range(100):
            call()
        calls += 100
    print(f"{label:<48} {calls * frames_per_call / elapsed:>12,.0f} frames/s")


def noisy_stream(frame: bytes, n_frames: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    out = bytearray()
    for i in range(n_frames):
        if i % 5 == 0:
            out += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        out += frame
    return bytes(out)


def scan(matcher: Callable[[bytes], int], stream: bytes, expected: int) -> Callable[[], object]:
    def run() -> object:
        scanner = FrameScanner(matcher, max_buffer_bytes=1 << 20)
        found = 0
        for i in range(0, len(stream), 64):  # bytes arrive in driver-sized reads
            found += len(scanner.feed(stream[i:i + 64]))
        assert found >= expected
        return found
    return run


def main() -> None:
    print(f"{'case':<48} {'rate':>12}")
    rate("pzem004t: CRC-16/MODBUS over a 25-byte reply", 1, lambda: pzem.crc16_modbus(PZEM_REPLY))
    n = 200
    stream = noisy_stream(PZEM_REPLY, n)
    rate("pzem004t: scanner, 1 in 5 replies after garbage", n,
         scan(lambda b: pzem.match_reply(b, pzem.READ_INPUT, 1), stream, n), min_s=1.0)
    stream = noisy_stream(CSE_FRAME, n)
    rate("cse7766: scanner, 1 in 5 frames after garbage", n, scan(cse.match_frame, stream, n),
         min_s=1.0)


if __name__ == "__main__":
    main()
