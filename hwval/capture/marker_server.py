"""Receives ``hwval.mark()`` datagrams from the workload and records them as ``mark`` events.

The socket lives in a fresh directory from :func:`tempfile.mkdtemp` (mode 0700), so only the
capturing user can reach it; the directory is removed when the capture ends. A capture that
was killed cannot remove its own: each directory holds an ``owner`` file with the capture's pid,
and the next capture removes the directories of this user whose owner is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from typing import Callable

from hwval.markers import ENV_SOCKET
from hwval.runfile.schema import EventName

PULSE_EVENTS = (EventName.PULSE_START, EventName.PULSE_CHIP, EventName.PULSE_END)

MAX_DATAGRAM = 65536
PREFIX = "hwval-marks-"
#: A directory without an owner file is only removed once this old: a capture that is between
#: creating its directory and writing the file must not lose it.
UNOWNED_AGE_S = 60.0


def remove_stale_dirs(base: str | None = None) -> list[str]:
    """Remove this user's marker directories whose capture is no longer running."""
    base = base or tempfile.gettempdir()
    removed = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not entry.is_dir(follow_symlinks=False) or st.st_uid != os.getuid():
                continue
            with open(os.path.join(entry.path, "owner")) as fh:
                alive = _pid_alive(int(fh.read().strip() or 0))
        except FileNotFoundError:
            alive = time.time() - st.st_mtime < UNOWNED_AGE_S
        except (OSError, ValueError):
            continue  # unreadable or not ours to judge: leave it
        if not alive:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process now has that pid: not our capture
        return False
    return True


class MarkerServer:
    def __init__(self, put_event: Callable[[str, str, int, dict], None],
                 count_error: Callable[[str, str, str], None]) -> None:
        remove_stale_dirs()
        self.dir = tempfile.mkdtemp(prefix=PREFIX)
        os.chmod(self.dir, 0o700)
        with open(os.path.join(self.dir, "owner"), "w") as fh:
            fh.write(str(os.getpid()))
        self.path = os.path.join(self.dir, "mark.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self._put_event = put_event
        self._count_error = count_error
        self._stop = threading.Event()
        self.received = 0
        self.thread = threading.Thread(target=self._loop, name="hwval-marks", daemon=True)

    @property
    def env(self) -> dict[str, str]:
        return {ENV_SOCKET: self.path}

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(MAX_DATAGRAM)
            except socket.timeout:
                continue
            except OSError:
                return
            self.handle(data)

    def handle(self, data: bytes) -> None:
        try:
            msg = json.loads(data)
            t_ns = int(msg["t_ns"])
            name = str(msg["name"])
            detail = msg.get("detail") or {}
            if not isinstance(detail, dict):
                raise TypeError("detail must be an object")
        except (ValueError, KeyError, TypeError) as exc:
            self._count_error("", "bad_mark", f"unreadable mark datagram: {exc}")
            return
        self.received += 1
        self.record(name, t_ns, detail, msg.get("pid"))

    def record(self, name: str, t_ns: int, detail: dict, pid: int | None) -> None:
        """One mark, from a datagram or from the capture itself (``--sync-pulses``). The sync-pulse
        names are events of their own (the schema's pulse_start/pulse_chip/pulse_end), every
        other name a ``mark`` event with ``detail.mark``."""
        if name in PULSE_EVENTS:
            self._put_event(name, "", t_ns, {**detail, "pid": pid})
        else:
            self._put_event("mark", "", t_ns, {**detail, "mark": name, "pid": pid})

    def close(self) -> None:
        """Stop after draining what the workload already sent."""
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=2.0)
        self.sock.setblocking(False)
        while True:
            try:
                self.handle(self.sock.recv(MAX_DATAGRAM))
            except (BlockingIOError, OSError):
                break
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)
