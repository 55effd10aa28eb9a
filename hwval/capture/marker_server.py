"""Receives ``hwval.mark()`` datagrams from the workload and records them as ``mark`` events.

The socket lives in a fresh directory from :func:`tempfile.mkdtemp` (mode 0700), so only the
capturing user can reach it; the directory is removed when the capture ends. A capture that
was killed cannot remove its own: each directory holds an ``owner`` file with the capture's pid,
and the next capture removes the directories of this user whose owner is gone.

Marks that never arrive are counted, not guessed: each process numbers its marks (``seq``) and
ends with an ``end_seq`` record (see :mod:`hwval.markers`), so per process the marks lost are
the numbers that never came. A mark whose ``t_ns`` lies before the capture started or in the
future cannot be placed on the run's timebase (a sender with its own clock, or garbage): it is
refused and counted, with an ``error`` event saying what was wrong; so is a malformed mark
whose ``seq`` can be read. Marks delivered + refused + lost is then exactly the marks sent
(a datagram without a readable pid and seq cannot be attributed: it is only a ``bad_mark`` error).
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

from hwval.clock import now_ns
from hwval.markers import ENV_SOCKET
from hwval.runfile.schema import EventName

PULSE_EVENTS = (EventName.PULSE_START, EventName.PULSE_CHIP, EventName.PULSE_END)

MAX_DATAGRAM = 65536
PREFIX = "hwval-marks-"
#: A directory without an owner file is only removed once this old: a capture that is between
#: creating its directory and writing the file must not lose it.
UNOWNED_AGE_S = 60.0
#: How far before the capture's origin, or after the moment it arrives, a mark's t_ns may lie.
#: Honest marks are stamped after the workload started (after the origin) and before they are
#: sent; the margin only absorbs a process started just before the capture and clock reads.
T_MARGIN_NS = 1_000_000_000
#: A sequence number beyond this is not a count of marks (a crafted datagram): refused as bad.
MAX_SEQ = 2**53
#: How often the reader drains the socket (a mark reaches the run's queue within about this).
POLL_S = 0.02


class _Sender:
    """Sequence bookkeeping of one process (pid) that marks."""

    __slots__ = ("received", "next_seq")

    def __init__(self) -> None:
        self.received = 0  # marks (with a seq) that arrived
        self.next_seq = 0  # one past the highest seq seen (or the end_seq)

    @property
    def lost(self) -> int:
        return max(0, self.next_seq - self.received)


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
        except OSError:
            continue  # gone already (another capture's sweep): nothing to judge
        if not entry.is_dir(follow_symlinks=False) or st.st_uid != os.getuid():
            continue
        try:
            with open(os.path.join(entry.path, "owner")) as fh:
                owner = fh.read().strip()
        except FileNotFoundError:
            owner = ""
        except OSError:
            continue  # unreadable or not ours to judge: leave it
        try:
            # No owner yet (a capture between mkdtemp and writing it, or an old writer's empty
            # file): dead only once older than UNOWNED_AGE_S, never while it may be starting.
            alive = _pid_alive(int(owner)) if owner else time.time() - st.st_mtime < UNOWNED_AGE_S
        except ValueError:
            continue  # not a pid: not ours to judge
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
                 count_error: Callable[[str, str, str], None], origin_ns: int | None = None) -> None:
        remove_stale_dirs()
        self.dir = tempfile.mkdtemp(prefix=PREFIX)
        os.chmod(self.dir, 0o700)
        # Written whole, then renamed into place: another capture's sweep must never read it
        # empty, which said "dead" and removed this folder before the socket was bound (ENOENT).
        partial = os.path.join(self.dir, ".owner.partial")
        with open(partial, "w") as fh:
            fh.write(str(os.getpid()))
        os.replace(partial, os.path.join(self.dir, "owner"))
        self.path = os.path.join(self.dir, "mark.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self._put_event = put_event
        self._count_error = count_error
        self._stop = threading.Event()
        self.received = 0
        #: Marks that arrived (with their seq) but were not recorded: a t_ns outside the capture
        #: or a malformed mark. Per sender, sent == delivered + refused + lost exactly.
        self.refused = 0
        self.origin_ns = now_ns() if origin_ns is None else origin_ns
        self._senders: dict[int, _Sender] = {}
        #: Lost marks of earlier processes whose pid a later one reused.
        self._lost_retired = 0
        self.thread = threading.Thread(target=self._loop, name="hwval-marks", daemon=True)

    @property
    def env(self) -> dict[str, str]:
        return {ENV_SOCKET: self.path}

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        # Polled, not a blocking recv: a reader waiting in recv is woken by every datagram, and
        # on a busy host that wakeup preempts the marking workload (100+ us per mark). Between
        # polls the workload's sends cost no wakeup; what the queue cannot hold waits, batched,
        # in the workload's backlog (see hwval.markers).
        while not self._stop.wait(POLL_S):
            if not self._drain():
                return

    def _drain(self) -> bool:
        """Handle every datagram waiting; False once the socket is closed."""
        while True:
            try:
                data = self.sock.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return True
            except OSError:
                return False
            self.handle(data)

    @property
    def lost(self) -> int:
        """Marks the workload's processes made that never arrived (counted from ``seq``)."""
        return self._lost_retired + sum(s.lost for s in self._senders.values())

    def handle(self, data: bytes) -> None:
        """One datagram: a mark, or a batch of them one per line (see :mod:`hwval.markers`)."""
        if b"\n" not in data:
            self._handle_one(data)
            return
        for line in data.split(b"\n"):
            self._handle_one(line)

    def _handle_one(self, data: bytes) -> None:
        sender = None
        try:
            msg = json.loads(data)
            if not isinstance(msg, dict):
                raise TypeError("not a JSON object")
            if "end_seq" in msg:
                self._sender(msg, "end_seq")
                return
            # The sequence number first: a mark that arrived is then counted once, delivered or
            # refused, and never also as lost (a later seq would count it among the missing).
            sender = self._sender(msg, "seq") if "seq" in msg else None
            if sender is not None:
                sender.received += 1
            t_ns = msg["t_ns"]
            if isinstance(t_ns, bool) or not isinstance(t_ns, int):
                raise TypeError(f"t_ns {str(t_ns)[:40]!r} is not an integer of nanoseconds")
            name = str(msg["name"])
            detail = msg.get("detail") or {}
            if not isinstance(detail, dict):
                raise TypeError("detail must be an object")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:  # RecursionError: "[[[[..."
            if sender is not None:
                self.refused += 1
            self._count_error("", "bad_mark", f"unreadable mark datagram: {exc}")
            return
        problem = self._out_of_window(t_ns)
        if problem:
            self.refused += 1
            self._count_error("", "mark_refused", f"mark {name[:80]!r} from pid {msg.get('pid')} refused: "
                              f"its t_ns {t_ns} lies {problem}; marks are stamped with "
                              "time.monotonic_ns() on this host (hwval.mark does)")
            return
        self.received += 1
        self.record(name, t_ns, detail, msg.get("pid"))

    def _out_of_window(self, t_ns: int) -> str:
        """Why ``t_ns`` cannot be a mark of this capture ("" when it can)."""
        if t_ns < self.origin_ns - T_MARGIN_NS:
            return f"{(self.origin_ns - t_ns) / 1e9:.6g} s before the capture started"
        now = now_ns()
        if t_ns > now + T_MARGIN_NS:
            return f"{(t_ns - now) / 1e9:.6g} s in the future"
        return ""

    def _sender(self, msg: dict, field: str) -> _Sender:
        """The bookkeeping of ``msg``'s pid, advanced by its ``seq`` or ``end_seq``."""
        pid, n = msg.get("pid"), msg[field]
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise TypeError(f"pid {str(pid)[:40]!r} is not an integer")
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_SEQ:
            raise TypeError(f"{field} {str(n)[:40]!r} is not a count of marks")
        sender = self._senders.get(pid)
        upto = n + 1 if field == "seq" else n
        if sender is None or (field == "seq" and n < sender.next_seq):
            # A pid seen before that counts from the start again: a new process got that pid
            # (datagrams of one sender arrive in order). Keep what the old one lost.
            if sender is not None:
                self._lost_retired += sender.lost
            sender = self._senders[pid] = _Sender()
        sender.next_seq = max(sender.next_seq, upto)
        return sender

    def record(self, name: str, t_ns: int, detail: dict, pid: int | None) -> None:
        """One mark, from a datagram or from the capture itself (``--sync-pulses``). The sync-pulse
        names are events of their own (the schema's pulse_start/pulse_chip/pulse_end), every
        other name a ``mark`` event with ``detail.mark``."""
        if name in PULSE_EVENTS:
            self._put_event(name, "", t_ns, {**detail, "pid": pid})
        else:
            self._put_event(EventName.MARK, "", t_ns, {**detail, "mark": name, "pid": pid})

    def close(self) -> None:
        """Stop after draining what the workload already sent."""
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=2.0)
        self._drain()
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)
