"""The workload runner: start COMMAND as a child, forward SIGINT/SIGTERM/SIGHUP to it, and
return its exit code (128 + signal number when a signal ended it, as shells report it).

The child runs in its own process group so a terminal's Ctrl-C reaches it exactly once (through
us) and the capture can finish the file after the child exits. Repeated signals escalate:
the second forwards SIGTERM, the third SIGKILL, so a wedged workload can always be ended.

The whole process tree ends with the capture: once the leader has exited, what is left of its
group gets SIGTERM, then SIGKILL after :data:`GROUP_GRACE_S` (a data loader's workers that ignore
SIGTERM would otherwise outlive the run). And if the capture itself is killed (even by SIGKILL,
so no code of ours runs), the leader gets SIGKILL from the kernel (Linux ``PR_SET_PDEATHSIG``)
and a tiny guard process, which waits on a pipe only the capture holds, sees it close and ends
the rest of the group the same way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, Mapping

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Time the workload's leftover processes get between SIGTERM and SIGKILL.
GROUP_GRACE_S = 2.0
#: Time the workload gets to exit after the --duration's SIGTERM, before SIGKILL (it may have
#: clean-up to do on SIGTERM).
TERM_GRACE_S = 10.0
#: From <linux/prctl.h>: deliver a signal to this process when its parent thread dies.
PR_SET_PDEATHSIG = 1

# The guard: a fresh interpreter (-I: no site, no environment) that blocks on the pipe. A byte
# means "the capture ended the group itself": exit. End of file means the capture died.
_GUARD = """
import os, signal, sys, time
pgid, grace = int(sys.argv[1]), float(sys.argv[2])
if os.read(0, 1):
    sys.exit(0)
for sig in (signal.SIGTERM, signal.SIGKILL):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        sys.exit(0)
    end = time.monotonic() + grace
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            sys.exit(0)
        time.sleep(0.05)
"""


def _live_members(pgid: int) -> bool:
    """Whether group ``pgid`` has a member that is not a zombie (``kill(-pgid, 0)`` also counts
    zombies, which a container's init may be slow to reap, and they need no signal)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:  # exited while we looked
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after it
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _die_with_parent() -> None:
    """``preexec_fn``: SIGKILL this child when the capture dies (Linux; elsewhere the guard)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class CommandError(Exception):
    """The command cannot be started; ``exit_code`` follows the shell's 127/126 convention."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def resolve_command(command: list[str]) -> str:
    """Return the executable's path or raise :class:`CommandError` before anything starts."""
    exe = command[0]
    path = exe if os.sep in exe else shutil.which(exe)
    if path is None or not os.path.exists(path):
        raise CommandError(f"command not found: {exe!r} (check the name and PATH)", 127)
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise CommandError(f"command not executable: {path!r} (chmod +x, or run it via its interpreter)", 126)
    return path


def exit_code_of(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class Workload:
    def __init__(self, command: list[str], env: Mapping[str, str]) -> None:
        self.command = command
        self.env = dict(os.environ, **env)
        self.proc: subprocess.Popen | None = None
        self.signals_received = 0
        #: True once :meth:`wait` had to SIGKILL it (it outlived the SIGTERM's grace).
        self.killed_after_grace = False
        self._guard_fd: int | None = None
        self._guard: subprocess.Popen | None = None
        #: Signals that came before the child existed, forwarded as soon as it does.
        self._pending: list[int] = []

    def start(self) -> int:
        try:
            self.proc = subprocess.Popen(self.command, env=self.env, process_group=0,
                                         preexec_fn=_die_with_parent)
        except PermissionError as exc:
            raise CommandError(f"command not executable: {exc}", 126) from None
        except OSError as exc:
            raise CommandError(f"cannot start {self.command[0]!r}: {exc}", 127) from None
        self._start_guard()
        while self._pending:
            self.forward(self._pending.pop(0))
        return self.proc.pid

    def forward(self, signum: int) -> None:
        """Signal handler body: pass the signal on, escalating on repeats."""
        if self.proc is None:
            self._pending.append(signum)
            return
        if self.proc.poll() is not None:
            return
        self.signals_received += 1
        send = {1: signum, 2: signal.SIGTERM}.get(self.signals_received, signal.SIGKILL)
        try:
            os.killpg(self.proc.pid, send)
        except ProcessLookupError:
            pass  # exited between poll() and killpg: nothing left to signal

    def wait(self, deadline_monotonic: float | None = None,
             on_timeout: Callable[[], None] | None = None) -> int:
        """Wait for the child; at ``deadline_monotonic`` call ``on_timeout`` and send SIGTERM,
        then SIGKILL after :data:`TERM_GRACE_S` more."""
        assert self.proc is not None
        if deadline_monotonic is not None:
            try:
                return exit_code_of(self.proc.wait(max(0.0, deadline_monotonic - time.monotonic())))
            except subprocess.TimeoutExpired:
                if on_timeout is not None:
                    on_timeout()
                self._signal_group(signal.SIGTERM)
                try:
                    return exit_code_of(self.proc.wait(TERM_GRACE_S))
                except subprocess.TimeoutExpired:
                    self.killed_after_grace = True
                    self._signal_group(signal.SIGKILL)
        return exit_code_of(self.proc.wait())

    def _start_guard(self) -> None:
        assert self.proc is not None
        read_fd, self._guard_fd = os.pipe()  # both non-inheritable: the workload gets neither
        try:
            # Its own process group: a terminal's Ctrl-C must not end the guard before the run.
            self._guard = subprocess.Popen([sys.executable, "-I", "-c", _GUARD, str(self.proc.pid),
                                            str(GROUP_GRACE_S)], stdin=read_fd, process_group=0,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            os.close(read_fd)

    def _stop_guard(self) -> None:
        fd, self._guard_fd = self._guard_fd, None
        if fd is not None:
            os.write(fd, b"x")  # stand down: the group is ended (and its id may be reused)
            os.close(fd)
            self._guard.wait()

    def end_group(self) -> str:
        """After the leader exited: SIGTERM what is left of its group, SIGKILL after
        :data:`GROUP_GRACE_S`. Returns the last signal sent ("" when nothing was left)."""
        assert self.proc is not None
        sent = ""
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if not self._group_alive():
                break
            self._signal_group(signum)
            sent = signal.Signals(signum).name
            end = time.monotonic() + GROUP_GRACE_S
            while time.monotonic() < end and self._group_alive():
                time.sleep(0.02)
        self._stop_guard()
        return sent

    def _group_alive(self) -> bool:
        assert self.proc is not None
        if os.path.isdir("/proc/self"):
            return _live_members(self.proc.pid)
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # a member changed its uid (setuid helper): still there
            return True
        return True

    def _signal_group(self, signum: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signum)
        except ProcessLookupError:
            pass  # the group is already gone
