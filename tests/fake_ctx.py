"""A :class:`hwval.sources.base.SourceContext` that records what a polled source reports, for
the tests of the software sources (RAPL, NVML) that drive ``open``/``read`` directly."""

from __future__ import annotations

import threading


class FakeCtx:
    """Keeps every ``event`` and ``count_error`` call; a polled source must never ``emit``."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        #: ``(name, stream, detail)`` per event.
        self.events: list[tuple[str, str, dict]] = []
        #: ``(stream, kind, message)`` per counted error.
        self.errors: list[tuple[str, str, str]] = []

    def emit(self, stream, values, t_ns=None):
        raise AssertionError("a polled source must not emit")

    def event(self, name, stream="", t_ns=None, **detail):
        self.events.append((name, stream, detail))

    def count_error(self, stream, kind, message=""):
        self.errors.append((stream, kind, message))

    def kinds(self) -> list[str]:
        """The ``kind`` of every event, in order."""
        return [d.get("kind") for _, _, d in self.events]
