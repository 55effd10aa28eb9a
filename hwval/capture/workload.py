"""The workload runner: start COMMAND as a child, forward SIGINT/SIGTERM/SIGHUP to it, and
return its exit code (128 + signal number when a signal ended it, as shells report it).

The child runs in its own process group so a terminal's Ctrl-C reaches it exactly once (through
us) and the capture can finish the file after the child exits. Repeated signals escalate:
the second forwards SIGTERM, the third SIGKILL, so a wedged workload can always be ended.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Callable, Mapping

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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
        #: Signals that came before the child existed, forwarded as soon as it does.
        self._pending: list[int] = []

    def start(self) -> int:
        try:
            self.proc = subprocess.Popen(self.command, env=self.env, process_group=0)
        except PermissionError as exc:
            raise CommandError(f"command not executable: {exc}", 126) from None
        except OSError as exc:
            raise CommandError(f"cannot start {self.command[0]!r}: {exc}", 127) from None
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
        then SIGKILL after 10 s more."""
        assert self.proc is not None
        if deadline_monotonic is not None:
            try:
                return exit_code_of(self.proc.wait(max(0.0, deadline_monotonic - time.monotonic())))
            except subprocess.TimeoutExpired:
                if on_timeout is not None:
                    on_timeout()
                self._signal_group(signal.SIGTERM)
                try:
                    return exit_code_of(self.proc.wait(10.0))
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
        return exit_code_of(self.proc.wait())

    def _signal_group(self, signum: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signum)
        except ProcessLookupError:
            pass  # the group is already gone
