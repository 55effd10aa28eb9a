"""Transport errors an operator can act on: missing, busy, permission denied, unplugged, and the
silence watch behind "wrong baud rate?"."""

from __future__ import annotations

import importlib
import os
import stat

import pytest

from hwval.benchmodel import Bench, MeterModel, PowerProfile
from hwval.emulators.pty import PtyEmulator
from hwval.sources.base import Disconnected, SourceSpec, SourceUnavailable
from hwval.sources.serial.port import (
    SilenceWatch, close_quietly, line_settings, open_serial, read_available, write_all,
)


class EchoDevice(PtyEmulator):
    """Smallest possible device: answers every host byte with the same byte."""

    device = "echo"
    baudrate = 9600

    def on_host_bytes(self, data: bytes) -> None:
        self.send_frame(data)


@pytest.fixture
def echo():
    emu = EchoDevice(Bench(PowerProfile.parse("constant:100")), MeterModel())
    emu.start()
    yield emu
    emu.stop()


def test_missing_port_names_it_and_hints_doctor(tmp_path):
    missing = str(tmp_path / "ttyUSB9")
    with pytest.raises(SourceUnavailable) as info:
        open_serial(missing, baudrate=9600)
    message = str(info.value)
    assert missing in message and "does not exist" in message and "hwval doctor" in message
    assert "\n" not in message


def test_busy_port_is_refused_with_the_reason(echo):
    first = open_serial(echo.path, baudrate=9600)
    try:
        with pytest.raises(SourceUnavailable, match="busy: another program has it open"):
            open_serial(echo.path, baudrate=9600)
    finally:
        first.close()
    open_serial(echo.path, baudrate=9600).close()  # free again once the first one closed


def _open_as_unprivileged(path: str) -> str:
    """The SourceUnavailable message of opening ``path``, from a child that dropped root (root
    bypasses file permissions, so the check must run as an ordinary user)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery, report through the pipe and _exit
        code = 0
        try:
            os.close(read_fd)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                open_serial(path, baudrate=9600).close()
                os.write(write_fd, b"opened")
            except SourceUnavailable as exc:
                os.write(write_fd, str(exc).encode())
        except BaseException as exc:  # anything else is reported to the parent as text
            os.write(write_fd, f"child failed: {exc!r}".encode())
            code = 1
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        text = fh.read().decode()
    os.waitpid(pid, 0)
    return text


def test_permission_denied_points_to_dialout(echo):
    target = os.path.realpath(echo.path)
    mode = stat.S_IMODE(os.stat(target).st_mode)
    os.chmod(target, 0o600)  # like /dev/ttyUSB0 owned by root:dialout, user not in the group
    # the private directory must be traversable for the unprivileged child to reach the link
    os.chmod(os.path.dirname(echo.path), 0o755)
    try:
        message = _open_as_unprivileged(echo.path)
    finally:
        os.chmod(target, mode)
        os.chmod(os.path.dirname(echo.path), 0o700)
    assert message.startswith(f"permission denied opening serial port {echo.path}")
    assert "dialout" in message and "udev" in message


def test_round_trip_and_unplug_becomes_disconnected(echo):
    port = open_serial(echo.path, baudrate=9600, timeout_s=0.5)
    try:
        write_all(port, b"ping", echo.path)
        got = b""
        while len(got) < 4:
            chunk = read_available(port, echo.path)
            assert chunk, "echo device did not answer"
            got += chunk
        assert got == b"ping"
        echo.unplug(0.3)  # what a USB adapter being pulled looks like to the driver
        with pytest.raises(Disconnected, match=echo.path):
            for _ in range(20):
                read_available(port, echo.path)
        with pytest.raises(SourceUnavailable, match="does not exist"):
            open_serial(echo.path, baudrate=9600)  # the link is gone while unplugged
    finally:
        close_quietly(port)
    assert echo.plugged.wait(2.0)
    port = open_serial(echo.path, baudrate=9600, timeout_s=0.5)  # same path, new pty
    try:
        write_all(port, b"again", echo.path)
        got = b""
        while len(got) < 5:
            chunk = read_available(port, echo.path)
            assert chunk, "re-plugged echo device did not answer"
            got += chunk
        assert got == b"again"
    finally:
        close_quietly(port)


def test_bad_settings_are_value_errors(echo):
    with pytest.raises(ValueError, match="parity must be one of"):
        open_serial(echo.path, baudrate=9600, parity="X")


def test_silence_watch_reports_once_per_timeout():
    now = [0.0]
    watch = SilenceWatch(2.0, clock=lambda: now[0])
    reports = []
    for step in range(1, 11):  # 0.5 s steps up to 5 s
        now[0] = step * 0.5
        silent = watch.check()
        if silent is not None:
            reports.append(silent)
    assert reports == [2.0, 4.0]
    watch.frame()
    now[0] = 6.0
    assert watch.check() is None
    message = SilenceWatch.message("/dev/ttyUSB0", 5.0, line_settings(4800, 8, "E", 1))
    assert message == ("wrong baud rate? nothing parseable on /dev/ttyUSB0 for 5.0 s "
                       "(expected 4800 8E1); check the meter's serial settings and wiring")


@pytest.mark.parametrize("driver, option, value", [
    ("tasmota", "reply_timeout_s", 0.0), ("tasmota", "silence_s", -1.0),
    ("esphome", "stale_s", 0.0), ("esphome", "group_s", -0.05),
    ("wattsup", "stale_s", -2.0), ("wattsup", "silence_s", 0.0),
    ("pzem004t", "timeout_s", 0.0), ("pzem004t", "silence_s", -5.0),
    ("cse7766", "open_timeout_s", 0.0), ("cse7766", "power_gain", -1.0),
])
def test_timing_and_scale_options_must_be_positive(driver, option, value):
    # a zero timeout would make the device loop spin or report every reading as a gap
    create = importlib.import_module(f"hwval.sources.serial.{driver}").create
    with pytest.raises(ValueError, match=rf"^{driver}: option '{option}' must be a number > 0( s)?, got {value}$"):
        create(SourceSpec(driver, "/dev/null", "wall", options={option: value}))
    with pytest.raises(ValueError, match=rf"^{driver}: option 'period_s' must be > 0, got 0.0$"):
        create(SourceSpec(driver, "/dev/null", "wall", period_s=0.0))
