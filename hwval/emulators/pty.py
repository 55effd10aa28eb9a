"""Serial emulators on a pseudo-terminal, with a stable path and a plan of injected faults.

A :class:`PtyEmulator` owns a pty pair (``os.openpty``, raw mode) and publishes it as a symlink
``<private 0700 dir>/tty -> /dev/pts/N``. The symlink is the resource an operator passes to
``-m DRIVER:RESOURCE``: when the emulator simulates unplugging it closes the pty (the driver's
reads fail with EIO, exactly as when a USB adapter disappears) and removes the link; re-plugging
creates a new pty and points the same link at it, so the driver reopens the same path.

Each plugged pty is registered (:mod:`hwval.sources.serial.emulator_identity`, keyed by the
slave's device number) and unregistered before it is closed: the drivers whose protocol carries
no identity (esphome, cse7766, pzem004t) decide ``emulated`` from the terminal they opened, not
from the path they were given.

The line speed is checked like a real UART would "check" it: if the host opened the port at a
different baud rate than the device speaks (visible through the pty's shared termios), every
byte in either direction is garbled, so a wrongly configured driver sees only garbage.

Subclasses implement :meth:`PtyEmulator.on_host_bytes` (requests from the driver) and/or
:meth:`PtyEmulator.tick` (periodic output every ``tick_period_s``), and send protocol frames with
:meth:`PtyEmulator.send_frame`, which applies the :class:`FaultPlan`. Every injected fault is
counted in :attr:`PtyEmulator.injected` so tests can compare them with the errors a driver counted.

In-process use (tests)::

    with TasmotaEmulator(bench, model, faults=FaultPlan(drop_rate=0.1, seed=1)) as emu:
        run_driver_against(emu.path)
    emu.injected["drop"]
"""

from __future__ import annotations

import collections
import errno
import functools
import json
import os
import random
import select
import shutil
import signal
import sys
import tempfile
import termios
import threading
import time
import tty
from dataclasses import asdict, dataclass
from typing import Any, Callable

import click

from hwval.benchmodel import Bench, MeterModel
from hwval.emulators.options import announce
from hwval.sources.serial import emulator_identity


@dataclass(frozen=True)
class FaultPlan:
    """Faults an emulator injects. Rates are per frame (probability 0..1); times are bench
    seconds (since the bench's ``t0_ns``).

    garbage_rate : random bytes inserted before a frame.
    drop_rate : a frame is not sent at all (a polled device does not answer).
    truncate_rate : a frame is cut short.
    bad_checksum_rate : the frame is damaged by the protocol's own ``corrupt`` (wrong checksum or
        CRC; for checksum-less text protocols, a damaged payload).
    stall_at_s, stall_s : the device stops answering/streaming for ``stall_s`` seconds.
    disconnect_at_s, disconnect_s : the device is unplugged (pty closed, link removed) and
        re-plugged ``disconnect_s`` seconds later on a new pty behind the same link.
    seed : random seed for reproducible fault sequences.
    """

    garbage_rate: float = 0.0
    drop_rate: float = 0.0
    truncate_rate: float = 0.0
    bad_checksum_rate: float = 0.0
    stall_at_s: float | None = None
    stall_s: float = 0.0
    disconnect_at_s: float | None = None
    disconnect_s: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("garbage_rate", "drop_rate", "truncate_rate", "bad_checksum_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        for name in ("stall_s", "disconnect_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 s, got {getattr(self, name)}")

    def stalled_at(self, t_s: float) -> bool:
        return (self.stall_at_s is not None and self.stall_s > 0
                and self.stall_at_s <= t_s < self.stall_at_s + self.stall_s)


def fault_options(func: Callable) -> Callable:
    """Click decorator adding the fault options; the command receives ``faults: FaultPlan`` and
    ``counts_file`` (where the injected counts are written as JSON on exit)."""

    @click.option("--garbage-rate", type=float, default=0.0, show_default=True,
                  help="probability per frame of random bytes inserted before it")
    @click.option("--drop-rate", type=float, default=0.0, show_default=True,
                  help="probability per frame that it is not sent")
    @click.option("--truncate-rate", type=float, default=0.0, show_default=True,
                  help="probability per frame that it is cut short")
    @click.option("--bad-checksum-rate", type=float, default=0.0, show_default=True,
                  help="probability per frame of a wrong checksum (damaged payload for text protocols)")
    @click.option("--stall-at-s", type=float, default=None,
                  help="bench time (s) at which the device stops answering")
    @click.option("--stall-s", type=float, default=0.0, show_default=True,
                  help="how long the stall lasts (s)")
    @click.option("--disconnect-at-s", type=float, default=None,
                  help="bench time (s) at which the device is unplugged")
    @click.option("--disconnect-s", type=float, default=0.0, show_default=True,
                  help="how long it stays unplugged before being re-plugged (s)")
    @click.option("--fault-seed", type=int, default=None, help="seed of the fault sequence")
    @click.option("--counts-file", type=click.Path(dir_okay=False), default=None,
                  help="write the injected fault counts as JSON here on exit")
    @functools.wraps(func)
    def wrapper(garbage_rate: float, drop_rate: float, truncate_rate: float,
                bad_checksum_rate: float, stall_at_s: float | None, stall_s: float,
                disconnect_at_s: float | None, disconnect_s: float, fault_seed: int | None,
                **kwargs: Any) -> Any:
        try:
            faults = FaultPlan(garbage_rate, drop_rate, truncate_rate, bad_checksum_rate,
                               stall_at_s, stall_s, disconnect_at_s, disconnect_s, fault_seed)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        return func(faults=faults, **kwargs)

    return wrapper


def _baud_constant(baudrate: int) -> int:
    try:
        return getattr(termios, f"B{baudrate}")
    except AttributeError:
        raise ValueError(f"baud rate {baudrate} is not a standard termios speed") from None


class PtyEmulator:
    """Base of serial device emulators (see module docstring)."""

    #: device name used in messages (``hwval emulate NAME``)
    device = "serial"
    #: line speed the device speaks
    baudrate = 115200
    #: seconds between :meth:`tick` calls; ``None`` for a device that only answers requests
    tick_period_s: float | None = None

    def __init__(self, bench: Bench, model: MeterModel, faults: FaultPlan | None = None) -> None:
        self.bench = bench
        self.model = model
        self.faults = faults or FaultPlan()
        if self.faults.bad_checksum_rate and type(self).corrupt is PtyEmulator.corrupt:
            raise ValueError(f"{self.device}: --bad-checksum-rate needs a protocol corrupt()")
        self.rng = random.Random(self.faults.seed)
        #: what was injected: frames, garbage, drop, truncate, bad_checksum, stall, disconnect,
        #: wrong_baud_bytes (bytes garbled by a speed mismatch), unread_bytes (dropped because
        #: nobody read the port and the pty buffer was full)
        self.injected: collections.Counter[str] = collections.Counter()
        self._dir = tempfile.mkdtemp(prefix=f"hwval-emu-{self.device}-")  # mode 0700
        self.path = os.path.join(self._dir, "tty")
        self._master: int | None = None
        self._slave: int | None = None
        #: registry entry of the plugged pty (:mod:`hwval.sources.serial.emulator_identity`)
        self._claim: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._speed = _baud_constant(self.baudrate)
        #: exception that ended :meth:`serve`, if any (the CLI exits non-zero with it)
        self.error: BaseException | None = None
        #: set while a pty is plugged in
        self.plugged = threading.Event()
        self._unplug_request_s: float | None = None
        #: bench second from which the plan's stall and disconnect times count (0: the bench's
        #: t0); while ``_faults_armed`` is clear none of them happen (see :meth:`hold_faults`)
        self.fault_origin_s = 0.0
        self._faults_armed = threading.Event()
        self._faults_armed.set()

    # ---- protocol hooks -------------------------------------------------------------------
    def on_host_bytes(self, data: bytes) -> None:
        """Bytes the host (driver) sent; a streaming-only device ignores them."""

    def tick(self) -> None:
        """Periodic output (every ``tick_period_s``)."""

    def corrupt(self, frame: bytes) -> bytes:
        """The frame with a protocol-level error. Default: the last byte inverted, which is
        where checksummed binary frames keep their check; text protocols override it to damage
        the payload instead."""
        return frame[:-1] + bytes([frame[-1] ^ 0xFF]) if frame else frame

    def garbage(self) -> bytes:
        """Random bytes inserted between frames."""
        return bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 16)))

    def truncate(self, frame: bytes) -> bytes:
        """The frame cut short (at least one byte kept, at least one lost)."""
        if len(frame) < 2:
            return b""
        return frame[: self.rng.randint(1, len(frame) - 1)]

    # ---- what the meter measures ------------------------------------------------------------
    def metered_energy_j(self, t0_s: float, t1_s: float) -> float:
        """Energy the meter counts over bench ``[t0_s, t1_s]`` (see
        :meth:`MeterModel.metered_energy_j`); every serial emulator's energy register uses it."""
        return self.model.metered_energy_j(self.bench.profile, t0_s, t1_s)

    # ---- output ---------------------------------------------------------------------------
    def send_frame(self, frame: bytes, corrupt: Callable[[bytes], bytes] | None = None) -> None:
        """Write one protocol frame, applying the fault plan. ``corrupt`` overrides the
        protocol's :meth:`corrupt` for this frame."""
        f, rng = self.faults, self.rng
        self.injected["frames"] += 1
        out = b""
        if f.garbage_rate and rng.random() < f.garbage_rate:
            out += self.garbage()
            self.injected["garbage"] += 1
        if f.drop_rate and rng.random() < f.drop_rate:
            self.injected["drop"] += 1
            self.write_raw(out)
            return
        if f.bad_checksum_rate and rng.random() < f.bad_checksum_rate:
            frame = (corrupt or self.corrupt)(frame)
            self.injected["bad_checksum"] += 1
        elif f.truncate_rate and rng.random() < f.truncate_rate:
            frame = self.truncate(frame)
            self.injected["truncate"] += 1
        self.write_raw(out + frame)

    def write_raw(self, data: bytes) -> None:
        """Write bytes as they are (no faults), garbled if the host's speed is wrong."""
        if not data or self._master is None:
            return
        if not self._host_speed_ok():
            data = self._garble(data)
            self.injected["wrong_baud_bytes"] += len(data)
        try:
            written = os.write(self._master, data)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            written = 0
        if written < len(data):
            # a UART transmits whether or not anyone listens: what does not fit is lost
            self.injected["unread_bytes"] += len(data) - written

    def _host_speed_ok(self) -> bool:
        try:
            attrs = termios.tcgetattr(self._master)
        except termios.error:
            return True
        return attrs[5] == self._speed

    def _garble(self, data: bytes) -> bytes:
        # at the wrong speed a receiver samples bits at the wrong instants: bytes come out
        # as unrelated values (often with the high bit set), never as the original text
        return bytes(0x80 | self.rng.randrange(128) for _ in data)

    # ---- pty lifecycle --------------------------------------------------------------------
    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[4] = attrs[5] = self._speed
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        os.set_blocking(master, False)
        # the emulator keeps the slave open too: otherwise the master reports a hang-up (EIO)
        # whenever no driver has the port open, as if the device had been unplugged
        self._master, self._slave = master, slave
        # the identity of this pty, for drivers whose protocol has none to read: registered
        # before the link exists, so a driver never opens an unregistered emulator
        self._claim = emulator_identity.register(slave, self.device)
        tmp = self.path + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.path)  # atomic: a driver never sees a half-made link
        self.plugged.set()

    def _unplug(self) -> None:
        self.plugged.clear()
        try:
            if os.path.lexists(self.path):
                os.unlink(self.path)
        finally:
            # whatever became of the link: a claim left on a closed pty would call emulated
            # the next terminal given its number while this process lives
            if self._claim is not None:  # before the pty is closed and its number free for reuse
                emulator_identity.unregister(self._claim)
                self._claim = None
            for fd in (self._master, self._slave):
                if fd is not None:
                    os.close(fd)
            self._master = self._slave = None

    def unplug(self, duration_s: float) -> None:
        """Ask the serving thread to unplug now and re-plug after ``duration_s`` seconds
        (the same as a ``disconnect_at_s`` fault, at a moment the caller chooses). Returns
        once the pty is closed."""
        before = self.injected["disconnect"]
        self._unplug_request_s = duration_s
        deadline = time.monotonic() + 2.0
        while self.injected["disconnect"] == before and time.monotonic() < deadline:
            time.sleep(0.005)

    def hold_faults(self) -> None:
        """Hold the plan's stall and disconnect until :meth:`arm_faults`: a test arms them once
        the capture reads, so a loaded machine that takes seconds to start the capture does not
        see them land during its start-up (per-frame rates are not held)."""
        self._faults_armed.clear()

    def arm_faults(self) -> None:
        """Count the plan's stall and disconnect times from now (bench seconds)."""
        self.fault_origin_s = self.bench.t_s()
        self._faults_armed.set()

    def start(self) -> str:
        """Plug in and serve on a background thread; returns the resource path."""
        if self._thread is not None:
            raise RuntimeError(f"{self.device} emulator already started")
        self._plug()
        self._thread = threading.Thread(target=self._serve_guarded, name=f"emu-{self.device}",
                                        daemon=True)
        self._thread.start()
        return self.path

    def stop(self) -> None:
        """Stop serving, unplug and remove the private directory."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._master is not None:
            self._unplug()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "PtyEmulator":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve_guarded(self) -> None:
        try:
            self.serve(self._stop)
        except BaseException as exc:  # recorded for the CLI / test, then the thread ends
            self.error = exc
            raise

    # ---- main loop ------------------------------------------------------------------------
    def serve(self, stop_event: threading.Event) -> None:
        """Answer the host and emit ticks until ``stop_event`` is set, applying stalls and
        disconnects at their bench times."""
        if self._master is None:
            self._plug()
        f = self.faults
        period = self.tick_period_s
        next_tick = time.monotonic() + period if period else None
        disconnected_once = False
        stall_counted = False
        while not stop_event.is_set():
            armed = self._faults_armed.is_set()
            t_s = self.bench.t_s() - self.fault_origin_s
            unplug_s = None
            if self._unplug_request_s is not None:
                unplug_s, self._unplug_request_s = self._unplug_request_s, None
            elif (armed and f.disconnect_at_s is not None and not disconnected_once
                    and t_s >= f.disconnect_at_s):
                disconnected_once = True
                unplug_s = f.disconnect_s
            if unplug_s is not None:
                self.injected["disconnect"] += 1
                self._unplug()
                if stop_event.wait(unplug_s):
                    return
                self._plug()
                self.on_replug()
                continue
            stalled = armed and f.stalled_at(t_s)
            if stalled and not stall_counted:
                self.injected["stall"] += 1
                stall_counted = True
            now = time.monotonic()
            timeout = 0.1 if next_tick is None else min(0.1, max(0.0, next_tick - now))
            readable, _, _ = select.select([self._master], [], [], timeout)
            if readable:
                data = self._read_host()
                if data and not stalled:
                    if self._host_speed_ok():
                        self.on_host_bytes(data)
                    else:
                        self.injected["wrong_baud_bytes"] += len(data)
                        self.on_host_bytes(self._garble(data))
            if next_tick is not None and time.monotonic() >= next_tick:
                if not stalled:
                    self.tick()
                next_tick += period
                if next_tick < time.monotonic() - period:  # fell far behind: do not burst
                    next_tick = time.monotonic() + period

    def on_replug(self) -> None:
        """Called after a simulated re-plug (a device reboots: banners, counters...)."""

    def _read_host(self) -> bytes:
        try:
            return os.read(self._master, 4096)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:  # no reader on the other side right now
                time.sleep(0.01)
                return b""
            raise


def run_until_signal(emulator: PtyEmulator, bench: Bench, ready_file: str | None,
                     counts_file: str | None = None, **extra: Any) -> None:
    """CLI body shared by serial emulators: start, announce, serve until SIGINT/SIGTERM, then
    print (and optionally write) what was injected. Exits 1 if the emulator failed."""
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            path = emulator.start()
        except emulator_identity.RegistryError as exc:
            raise click.ClickException(str(exc)) from None
        announce(emulator.device, path, bench, ready_file, faults=asdict(emulator.faults), **extra)
        while not stop.wait(0.25):
            if emulator.error is not None:
                break
    finally:
        emulator.stop()
        for s, h in previous.items():
            signal.signal(s, h)
    counts = dict(sorted(emulator.injected.items()))
    print(f"injected: {json.dumps(counts)}", flush=True)
    if counts_file:
        with open(counts_file + ".tmp", "w") as fh:
            json.dump(counts, fh)
        os.replace(counts_file + ".tmp", counts_file)
    if emulator.error is not None:
        print(f"{emulator.device} emulator failed: {emulator.error}", file=sys.stderr)
        sys.exit(1)
