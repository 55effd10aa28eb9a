"""Serial transport: open a port with errors an operator can act on, and map I/O failures.

Every serial driver opens its port with :func:`open_serial` and reads/writes through
:func:`read_available` / :func:`write_all`, so that the four ways a port fails to open (missing,
busy, permission denied, other OS error) become one-line :class:`SourceUnavailable` messages, and
a port that disappears mid-capture (USB cable pulled, emulator pty closed) becomes
:class:`Disconnected`, which the recorder answers by reopening with backoff.

:class:`SilenceWatch` detects the classic wrong-baud-rate symptom: bytes (or nothing) arrive but
nothing parses. It never stops a capture; the driver counts it as an ``error`` of kind
``silence``.
"""

from __future__ import annotations

import errno
import os
import termios
import time
from typing import Callable

import serial
import serial.tools.list_ports

from hwval.sources.base import Disconnected, SourceUnavailable

#: Accepted ``parity`` letters (pyserial constants are the same letters).
PARITIES = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD,
            "M": serial.PARITY_MARK, "S": serial.PARITY_SPACE}


def line_settings(baudrate: int, bytesize: int = 8, parity: str = "N", stopbits: float = 1) -> str:
    """``4800 8E1`` style text for messages."""
    stop = int(stopbits) if float(stopbits).is_integer() else stopbits
    return f"{baudrate} {bytesize}{parity}{stop}"


def existing_ports() -> list[str]:
    """Serial ports the OS lists (USB adapters, on-board UARTs); ptys are not listed."""
    try:
        return sorted(p.device for p in serial.tools.list_ports.comports())
    except OSError:  # list_ports walks /sys; an unusual container may not have it
        return []


def _missing_message(resource: str) -> str:
    ports = existing_ports()
    listed = ", ".join(ports) if ports else "none found"
    return (f"serial port {resource} does not exist (ports present: {listed}); "
            "check the cable and the device path, or run `hwval doctor`")


def open_serial(resource: str, *, baudrate: int, bytesize: int = 8, parity: str = "N",
                stopbits: float = 1, timeout_s: float = 0.1) -> serial.Serial:
    """Open ``resource`` (a device path, or a pyserial URL such as ``socket://host:port``)
    exclusively, in raw mode, with the input buffer flushed.

    Parameters
    ----------
    resource : device path (``/dev/ttyUSB0``, an emulator's ``.../tty`` link) or pyserial URL.
    baudrate, bytesize, parity, stopbits : line settings (``parity`` one of N E O M S).
    timeout_s : read timeout in seconds: how long one :func:`read_available` may block.

    Raises
    ------
    SourceUnavailable
        with one line naming the port and the fix: missing, busy (another program holds it),
        permission denied (dialout group / udev rule), or any other OS error.
    ValueError
        for settings pyserial cannot express (bad parity letter, bytesize...).
    """
    if parity not in PARITIES:
        raise ValueError(f"parity must be one of {', '.join(PARITIES)}, got {parity!r}")
    settings = line_settings(baudrate, bytesize, parity, stopbits)
    is_url = "://" in resource
    if not is_url and not os.path.exists(resource):
        raise SourceUnavailable(_missing_message(resource))
    kwargs = dict(baudrate=baudrate, bytesize=bytesize, parity=PARITIES[parity],
                  stopbits=stopbits, timeout=timeout_s, write_timeout=max(1.0, timeout_s))
    try:
        if is_url:
            port = serial.serial_for_url(resource, **kwargs)
        else:
            # exclusive: flock(LOCK_EX) so two captures cannot interleave reads on one meter
            port = serial.Serial(resource, exclusive=True, **kwargs)
    except (serial.SerialException, OSError) as exc:
        raise SourceUnavailable(_open_failure(resource, settings, exc)) from None
    except ValueError as exc:
        raise ValueError(f"serial port {resource}: invalid settings {settings}: {exc}") from None
    try:
        # a real UART does not hand out bytes received before it was opened; a pty (and some
        # USB adapters) do: drop them so the first frame we parse is a fresh one
        port.reset_input_buffer()
    except (serial.SerialException, OSError, termios.error) as exc:
        # termios.error is not an OSError: a port that dies between open and flush raises it
        port.close()
        raise SourceUnavailable(_open_failure(resource, settings, exc)) from None
    return port


def _open_failure(resource: str, settings: str, exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOENT or (code is None and "No such file" in text):
        return _missing_message(resource)
    if code in (errno.EACCES, errno.EPERM) or isinstance(exc, PermissionError):
        return (f"permission denied opening serial port {resource}: add your user to the "
                "'dialout' group (sudo usermod -aG dialout $USER, then log in again) "
                "or install a udev rule giving you access; see `hwval doctor`")
    if code in (errno.EAGAIN, errno.EBUSY) or "exclusively lock" in text:
        return (f"serial port {resource} is busy: another program has it open (another "
                "hwval capture, a serial console, ModemManager?); close it and retry "
                "(`fuser -v " + resource + "` shows who)")
    return f"cannot open serial port {resource} at {settings}: {text}"


def read_available(port: serial.Serial, resource: str, max_bytes: int = 4096) -> bytes:
    """Read what has arrived, waiting at most the port's timeout for the first byte.

    Returns ``b""`` on timeout. Raises :class:`Disconnected` when the port is gone.
    """
    try:
        waiting = port.in_waiting
        return port.read(min(max(1, waiting), max_bytes))
    except (serial.SerialException, OSError) as exc:
        raise Disconnected(f"serial port {resource} disconnected: {exc}") from None


def bytes_waiting(port: serial.Serial, resource: str) -> int:
    """Bytes received and not yet read; :class:`Disconnected` when the port is gone."""
    try:
        return port.in_waiting
    except (serial.SerialException, OSError) as exc:
        raise Disconnected(f"serial port {resource} disconnected: {exc}") from None


def write_all(port: serial.Serial, data: bytes, resource: str) -> None:
    """Write ``data`` completely; :class:`Disconnected` when the port is gone."""
    try:
        port.write(data)
        port.flush()
    except serial.SerialTimeoutException as exc:
        # output blocked for a whole write timeout: flow control stuck or device hung
        raise Disconnected(f"serial port {resource}: write timed out ({exc})") from None
    except (serial.SerialException, OSError) as exc:
        raise Disconnected(f"serial port {resource} disconnected: {exc}") from None


def close_quietly(port: serial.Serial | None) -> None:
    """Close a port that may already be dead (unplugged): closing must never raise."""
    if port is None:
        return
    try:
        port.close()
    except (serial.SerialException, OSError):
        # the device node is gone; the fd is released by close() regardless
        return


class SilenceWatch:
    """Time since the last *parseable* frame, reported once per ``timeout_s`` of silence.

    Call :meth:`frame` on every frame that parsed and :meth:`check` regularly; ``check`` returns
    the silent duration in seconds when a report is due (at ``timeout_s``, ``2*timeout_s``...),
    otherwise ``None``. :meth:`message` words it with the likely cause.

    Example
    -------
    >>> w = SilenceWatch(5.0, clock=iter([0.0, 6.0, 7.0]).__next__)
    >>> w.check(), w.check()
    (6.0, None)
    """

    def __init__(self, timeout_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if timeout_s <= 0:
            raise ValueError(f"silence timeout must be > 0 s, got {timeout_s}")
        self.timeout_s = timeout_s
        self._clock = clock
        self._last_s = clock()
        self._reports = 0
        self.frames = 0

    def reset(self) -> None:
        """Start counting anew (after (re)opening the port)."""
        self._last_s = self._clock()
        self._reports = 0

    def frame(self) -> None:
        """A frame parsed: the line is alive."""
        self.frames += 1
        self._last_s = self._clock()
        self._reports = 0

    def silent_s(self) -> float:
        return self._clock() - self._last_s

    def check(self) -> float | None:
        silent = self.silent_s()
        if silent >= self.timeout_s * (self._reports + 1):
            self._reports = int(silent // self.timeout_s)
            return silent
        return None

    @staticmethod
    def message(resource: str, silent_s: float, settings: str) -> str:
        return (f"wrong baud rate? nothing parseable on {resource} for {silent_s:.1f} s "
                f"(expected {settings}); check the meter's serial settings and wiring")
