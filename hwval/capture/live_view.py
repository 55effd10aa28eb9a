"""Live terminal view: one status line redrawn about once a second with, per stream, the latest
watts, the reading rate over the last second and the drops. Off when stdout is not a TTY (so
logs and CI output stay clean)."""

from __future__ import annotations

import math
import sys
import time
from typing import Callable, TextIO

from hwval.runfile.documents import Document, Page, Start, Stop

REDRAW_S = 1.0


class LiveView:
    def __init__(self, dropped: Callable[[str], int], out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.dropped = dropped
        self.latest_w: dict[str, float] = {}
        self.count: dict[str, int] = {}
        self._count_at_redraw: dict[str, int] = {}
        self._last_redraw = time.monotonic()
        self._t0 = time.monotonic()

    @classmethod
    def enabled_for(cls, stream: TextIO) -> bool:
        return hasattr(stream, "isatty") and stream.isatty()

    def __call__(self, doc: Document) -> None:
        if isinstance(doc, Page):
            self.count[doc.stream] = self.count.get(doc.stream, 0) + len(doc.t)
            power = doc.values.get("power_w")
            if power is not None and len(power):
                self.latest_w[doc.stream] = float(power[-1])
        elif isinstance(doc, Start):
            self._t0 = time.monotonic()
        elif isinstance(doc, Stop):
            self.out.write("\r\x1b[K")
            self.out.flush()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last_redraw < REDRAW_S:
            return
        self.out.write("\r\x1b[K" + self.render(now - self._last_redraw, now - self._t0))
        self.out.flush()
        self._last_redraw = now
        self._count_at_redraw = dict(self.count)

    def render(self, dt_s: float, elapsed_s: float) -> str:
        parts = [f"hwval {elapsed_s:6.1f}s"]
        for name, n in sorted(self.count.items()):
            rate = (n - self._count_at_redraw.get(name, 0)) / dt_s if dt_s > 0 else 0.0
            w = self.latest_w.get(name, math.nan)
            text = f"{name} {w:.1f} W {rate:.0f}/s"
            drops = self.dropped(name)
            if drops:
                text += f" drop {drops}"
            parts.append(text)
        return " | ".join(parts)
