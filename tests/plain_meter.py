"""A serial device that is not an hwval emulator: a pty the test opens itself, behind a link it
chooses, speaking a protocol through two small callables. It stands for a real meter reached
through a pty (a USB-serial bridge, ``socat``): no emulator registered its terminal."""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from typing import Callable


class PlainMeter:
    """``answer(request bytes) -> reply bytes`` for a polled device; ``stream() -> bytes`` is
    written every ``period_s`` for a streaming one. ``link``: the path to publish it at (its
    folder is created); ``None`` publishes nothing (use :attr:`pts`)."""

    def __init__(self, link: str | None = None, *, answer: Callable[[bytes], bytes] | None = None,
                 stream: Callable[[], bytes] | None = None, period_s: float = 0.05) -> None:
        self.link, self.answer, self.stream, self.period_s = link, answer, stream, period_s
        self.master = self.slave = -1
        self.pts = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="plain-meter", daemon=True)

    def __enter__(self) -> "PlainMeter":
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.pts = os.ttyname(self.slave)
        if self.link is not None:
            os.makedirs(os.path.dirname(self.link), exist_ok=True)
            os.symlink(self.pts, self.link)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.master)
        os.close(self.slave)

    def _write(self, data: bytes) -> None:
        try:
            os.write(self.master, data)
        except BlockingIOError:  # nobody reads and the buffer is full: a UART drops it too
            return

    def _serve(self) -> None:
        next_s = time.monotonic()
        while not self._stop.is_set():
            readable, _, _ = select.select([self.master], [], [], self.period_s / 2)
            if readable:
                try:
                    data = os.read(self.master, 4096)
                except (BlockingIOError, OSError):  # EIO: the driver side is not open now
                    data = b""
                    time.sleep(0.01)
                if data and self.answer is not None:
                    self._write(self.answer(data))
            if self.stream is not None and time.monotonic() >= next_s:
                self._write(self.stream())
                next_s = time.monotonic() + self.period_s
