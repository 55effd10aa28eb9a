"""In-workload markers: ``hwval.mark(name, **detail)``.

Under ``hwval capture`` the environment variable :data:`ENV_SOCKET` names a Unix datagram
socket inside a private (0700) directory created by the capturing user, so only that user can
reach it. Each mark sends one datagram stamped with the caller's CLOCK_MONOTONIC. Outside a
capture the variable is absent and ``mark`` returns after one global lookup (well under 1 us).
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

ENV_SOCKET = "HWVAL_MARK_SOCKET"

# Read once at import: a workload inherits the variable when it is started by the capture.
_SOCKET_PATH = os.environ.get(ENV_SOCKET) or None
_sock: socket.socket | None = None


def mark(name: str, **detail: Any) -> None:
    """Record an event ``name`` with JSON-able ``detail`` in the running capture.

    The timestamp is taken here, before any I/O, so the mark sits at the caller's moment.
    Never raises because of the capture: a marker must not crash a training job.
    """
    if _SOCKET_PATH is None:
        return
    t_ns = time.monotonic_ns()
    _send(t_ns, name, detail)


def _send(t_ns: int, name: str, detail: dict[str, Any]) -> None:
    global _sock
    payload = json.dumps(
        {"t_ns": t_ns, "name": str(name), "pid": os.getpid(), "detail": detail}, default=str
    ).encode()
    try:
        if _sock is None:
            _sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        _sock.sendto(payload, _SOCKET_PATH)
    except OSError as exc:
        # The capture may have ended before the workload; losing a mark must not kill training.
        # Warn once on stderr so the operator knows marks are missing.
        _warn_once(f"hwval.mark: could not reach the capture ({exc}); marks are not recorded")


_warned = False


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        import sys

        print(message, file=sys.stderr)
