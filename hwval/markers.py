"""In-workload markers: ``hwval.mark(name, **detail)``.

Under ``hwval capture`` the environment variable :data:`ENV_SOCKET` names a Unix datagram
socket inside a private (0700) directory created by the capturing user, so only that user can
reach it. Each mark sends one datagram stamped with the caller's CLOCK_MONOTONIC. Outside a
capture the variable is absent and ``mark`` returns after one global lookup (well under 1 us).

A mark never waits for the capture. Linux queues only ``net.unix.max_dgram_qlen`` (often 10)
datagrams per receiving socket, and a blocking send behind a busy capture slowed a marking
loop about 8x. So the socket is non-blocking: a datagram the capture cannot take yet waits in a
small backlog of this process and goes out, batched one mark a line, with the next mark or from
a short-lived thread that exists while the capture is behind (and at exit); only when the
backlog is full is a mark dropped. Every mark carries this process's sequence number ``seq``
and the process says at exit how many it made (``end_seq``), so the capture counts every
dropped mark (the run's ``marks_lost``) instead of losing it silently.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import json
import os
import socket
import threading
import time
from typing import Any

ENV_SOCKET = "HWVAL_MARK_SOCKET"
#: Marks held in this process while the capture is behind; beyond it a mark is dropped (counted).
BACKLOG_MARKS = 4096
#: Largest datagram of batched marks (the capture reads datagrams of up to 64 KiB).
BATCH_BYTES = 60_000
#: After the capture's queue was found full, marks only join the backlog for this long.
RETRY_NS = 1_000_000
#: How often the backlog's thread tries. Marks that keep coming flush the backlog themselves
#: (every RETRY_NS); this thread is for the quiet after a burst, and it must not hurry: each time
#: it wakes it takes the GIL from the workload, which on an overloaded host then waits for a CPU
#: (at 40 wakes/s that cost a marking loop seconds of wall time per second at load 20).
FLUSH_INTERVAL_S = 0.2
#: At exit, how long the backlog and the end record may wait for the capture in all.
EXIT_FLUSH_S = 1.0

# Read once at import: a workload inherits the variable when it is started by the capture.
_SOCKET_PATH = os.environ.get(ENV_SOCKET) or None
_sock: socket.socket | None = None
_seq = itertools.count()
_backlog: collections.deque[bytes] = collections.deque()
#: When a full queue is worth trying again (a list: changed in place under the lock).
_retry_at_ns = [0]
#: When this process last marked (the backlog's thread leaves the backlog to marks while they come).
_last_mark_ns = [0]
#: The thread sending the backlog while the capture is behind (None when there is none).
_flusher: list[threading.Thread | None] = [None]
# Keeps seq order equal to send order across threads (the capture reads a falling seq as a new
# process); held only around non-blocking calls, so it never waits for the capture either.
_lock = threading.Lock()


def mark(name: str, **detail: Any) -> None:
    """Record an event ``name`` with JSON-able ``detail`` in the running capture.

    The timestamp is taken here, before any I/O, so the mark sits at the caller's moment.
    Never raises because of the capture and never blocks on it: a marker must not crash or
    slow a training job.
    """
    if _SOCKET_PATH is None:
        return
    t_ns = time.monotonic_ns()
    _send(t_ns, name, detail)


def _send(t_ns: int, name: str, detail: dict[str, Any]) -> None:
    with _lock:
        seq = next(_seq)
        payload = json.dumps({"t_ns": t_ns, "name": str(name), "pid": os.getpid(), "seq": seq,
                              "detail": detail}, default=str).encode()
        now = _last_mark_ns[0] = time.monotonic_ns()  # not t_ns: a caller's stamp is not trusted
        due = not _backlog or now >= _retry_at_ns[0]
        if due and len(_backlog) >= BACKLOG_MARKS:
            _flush_backlog(now)
        if len(_backlog) < BACKLOG_MARKS:
            _backlog.append(payload)
        # else: dropped; the capture sees the gap in seq (or in end_seq) and counts it
        if due:
            _flush_backlog(now)
        if _backlog and _flusher[0] is None:
            _start_flusher()


def _start_flusher() -> None:
    """A daemon thread that sends the backlog while it is not empty, so marks of a burst do not
    wait for the workload's next mark (it may not come for an hour, or the process may be
    killed first). It exists only while the capture is behind. Called with ``_lock`` held."""
    thread = threading.Thread(target=_flush_while_behind, name="hwval-mark-flush", daemon=True)
    _flusher[0] = thread
    thread.start()


def _flush_while_behind() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL_S)
        if time.monotonic_ns() - _last_mark_ns[0] < FLUSH_INTERVAL_S * 1e9:
            continue  # marks keep coming and flush it themselves: do not contend for the lock
        with _lock:
            if _SOCKET_PATH is None or _flush_backlog(time.monotonic_ns()):
                _flusher[0] = None
                return


def _socket() -> socket.socket:
    global _sock
    if _sock is None:
        _sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        _sock.setblocking(False)
    return _sock


def _try_send(payload: bytes) -> bool:
    """True when the capture took ``payload``; False when its queue is full (try again later)."""
    try:
        _socket().sendto(payload, _SOCKET_PATH)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        # The capture may have ended before the workload; losing a mark must not kill training.
        # Warn once on stderr so the operator knows marks are missing.
        _warn_once(f"hwval.mark: could not reach the capture ({exc}); marks are not recorded")
        _backlog.clear()
        return True  # nothing to keep: the capture is gone


def _flush_backlog(now_ns: int = 0) -> bool:
    """Send what waits, oldest first, many marks to a datagram (one line each): a capture that
    fell behind then catches up with one wakeup per batch, not per mark. True when nothing
    waits any more."""
    while _backlog:
        n, size = 1, len(_backlog[0])
        while n < len(_backlog) and size + 1 + len(_backlog[n]) <= BATCH_BYTES:
            size += 1 + len(_backlog[n])
            n += 1
        batch = _backlog[0] if n == 1 else b"\n".join(itertools.islice(_backlog, n))
        if not _try_send(batch):
            # The capture's queue is full: it needs a while to read, and trying again at every
            # mark would cost each one a failed send of up to BATCH_BYTES.
            _retry_at_ns[0] = now_ns + RETRY_NS
            return False
        for _ in range(min(n, len(_backlog))):  # _try_send empties it when the capture is gone
            _backlog.popleft()
    return True


@atexit.register
def _at_exit() -> None:
    """Send the backlog and the end record (how many marks this process made), waiting at most
    :data:`EXIT_FLUSH_S` for the capture."""
    if _SOCKET_PATH is None:
        return
    with _lock:
        made = next(_seq)
        if made == 0 or _warned:
            return
        end = json.dumps({"pid": os.getpid(), "end_seq": made}).encode()
        deadline = time.monotonic() + EXIT_FLUSH_S
        while not (_flush_backlog() and _try_send(end)):
            if time.monotonic() >= deadline:
                return
            time.sleep(0.002)


def _after_fork_in_child() -> None:
    # A forked child is a new sender to the capture (a new pid): its marks count from 0, and the
    # parent's backlog is the parent's to send.
    global _seq, _lock
    _seq = itertools.count()
    _backlog.clear()
    _flusher[0] = None  # threads do not survive a fork
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)

_warned = False


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        import sys

        print(message, file=sys.stderr)
