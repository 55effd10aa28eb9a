"""Byte framing shared by serial drivers: split a byte stream into lines or into binary frames.

Both buffers are pure (no I/O): the device loop feeds what :func:`~.port.read_available`
returned and takes out complete units. They bound their memory (a line without terminator or a
stream of garbage cannot grow without limit) and count what they had to throw away, so drivers
can report it with ``ctx.count_error``.

The binary scanner follows libsigrok's generic serial loop: try to validate a packet at the start
of the buffer; if it cannot be one, slide by one byte and try again.
"""

from __future__ import annotations

from typing import Callable, Iterator


class LineBuffer:
    """Accumulates bytes and yields complete lines (terminator ``\\n``; a trailing ``\\r`` is
    stripped), as bytes.

    A line longer than ``max_line_bytes`` without a terminator is discarded (counted in
    :attr:`overflows`): it is garbage or a wrong baud rate, and keeping it would grow forever.
    """

    def __init__(self, max_line_bytes: int = 4096) -> None:
        self.max_line_bytes = max_line_bytes
        self._buf = bytearray()
        self.overflows = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the lines it completed (without ``\\r\\n``)."""
        self._buf += data
        lines: list[bytes] = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            lines.append(line[:-1] if line.endswith(b"\r") else line)
        if len(self._buf) > self.max_line_bytes:
            self.overflows += 1
            self._buf.clear()
        return lines

    def pending(self) -> bytes:
        """Bytes of the incomplete line not yet terminated."""
        return bytes(self._buf)

    def clear(self) -> None:
        self._buf.clear()


#: ``match(buffer) -> n``: ``n > 0`` a valid frame of ``n`` bytes starts at offset 0;
#: ``n == 0`` the buffer may be the start of a frame, more bytes are needed;
#: ``n < 0`` no frame starts at offset 0 (wrong header or bad checksum).
FrameMatcher = Callable[[bytes], int]


class FrameScanner:
    """Sliding resynchronisation over a binary stream.

    ``feed()`` returns the complete valid frames; bytes that could not start a frame are skipped
    one at a time and counted in :attr:`skipped_bytes`. ``rejected`` counts the times the matcher
    said "not a frame" at a position (one corrupt frame typically yields several rejections as
    the scanner slides through it, so drivers should count *frames lost*, e.g. from sequence or
    timing, or count resynchronisation episodes via :attr:`resyncs`).
    """

    def __init__(self, match: FrameMatcher, max_buffer_bytes: int = 4096) -> None:
        self._match = match
        self.max_buffer_bytes = max_buffer_bytes
        self._buf = bytearray()
        self.skipped_bytes = 0
        #: number of separate runs of skipped bytes (one per garbage burst or corrupt frame)
        self.resyncs = 0
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        start = 0
        buf = bytes(self._buf)
        while start < len(buf):
            n = self._match(buf[start:])
            if n > 0:
                frames.append(buf[start:start + n])
                start += n
                self._skipping = False
            elif n == 0:
                break
            else:
                if not self._skipping:
                    self.resyncs += 1
                    self._skipping = True
                self.skipped_bytes += 1
                start += 1
        del self._buf[:start]
        if len(self._buf) > self.max_buffer_bytes:
            # a matcher that keeps asking for more is fed garbage: drop it all
            self.skipped_bytes += len(self._buf)
            self.resyncs += 1
            self._buf.clear()
        return frames

    def clear(self) -> None:
        self._buf.clear()
        self._skipping = False


def iter_chunks(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` in pieces of ``size`` bytes (tests feed codecs byte by byte or in bursts)."""
    for i in range(0, len(data), size):
        yield data[i:i + size]
