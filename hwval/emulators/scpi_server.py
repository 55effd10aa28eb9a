"""A SCPI instrument on a raw TCP socket (``TCPIP::127.0.0.1::PORT::SOCKET``), shared by the
analyzer emulators (``wt300``, ``hmc8015``, ``n6705``).

What is emulated, because drivers depend on it:

- LF-terminated messages; several commands per message separated by ``;`` with SCPI path
  inheritance (a header without a leading ``:`` after ``;`` is relative to the previous one);
- headers in short or long form, any case, with numeric suffixes (``:NUM:NORM:ITEM3``,
  ``VIEW:NUMeric:PAGE1:CELL2:FUNCtion``);
- an error queue: an unknown header queues ``-113,"Undefined header"``, a bad argument
  ``-224,"Illegal parameter value"``; a query that fails gets no reply (as on real instruments,
  the client times out);
- a log of every received command with its receipt time, so tests can assert the exact order;
- faults an operator or a test can switch on, also while running (``server.faults``): a reply
  delay, one unanswered data query (timeout), one dropped connection, malformed data replies, a
  wrong ``*IDN?``.

Sources: IEEE 488.2 / SCPI-99 command syntax; pyvisa-py ``tcpip.py`` (what the client expects).
"""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import click

#: A handler gets (arguments, numeric suffixes of the header, is_query) and returns the reply
#: (a query) or None (a command).
Handler = Callable[[list[str], list[int], bool], "str | bytes | None"]


class ScpiError(Exception):
    """Raised by a handler: queued on the instrument's error queue as ``code,"message"``."""

    def __init__(self, code: int, message: str):
        super().__init__(f'{code},"{message}"')
        self.code = code
        self.message = message


UNDEFINED_HEADER = (-113, "Undefined header")
ILLEGAL_PARAMETER = (-224, "Illegal parameter value")
MISSING_PARAMETER = (-109, "Missing parameter")


def _short_form(mnemonic: str) -> str:
    return "".join(c for c in mnemonic if c.isupper() or c.isdigit() or c in "*?")


def _node_matches(spec: str, node: str) -> tuple[bool, int | None]:
    """``spec`` like ``NUMeric``, ``[MEASure]`` (optional) or ``ITEM#`` (numeric suffix)."""
    suffix: int | None = None
    if spec.endswith("#"):
        m = re.fullmatch(r"([A-Za-z*]+?)(\d*)", node)
        if not m:
            return False, None
        node, digits = m.group(1), m.group(2)
        suffix = int(digits) if digits else 1
        spec = spec[:-1]
    word = node.upper()
    return word in (spec.upper(), _short_form(spec).upper()), suffix


def match_header(pattern: str, nodes: Sequence[str]) -> list[int] | None:
    """Match header ``nodes`` against a pattern like ``:NUMeric:NORMal:ITEM#``; optional nodes
    are written ``[:VALue]``. Returns the numeric suffixes, or None when it does not match."""
    specs = [s for s in re.findall(r"\[?:?[A-Za-z*#]+\]?", pattern)]

    def walk(i: int, j: int) -> list[int] | None:
        if i == len(specs):
            return [] if j == len(nodes) else None
        spec = specs[i]
        optional = spec.startswith("[")
        name = spec.strip("[]:")
        if j < len(nodes):
            ok, suffix = _node_matches(name, nodes[j])
            if ok:
                rest = walk(i + 1, j + 1)
                if rest is not None:
                    return ([suffix] if suffix is not None else []) + rest
        if optional:
            return walk(i + 1, j)
        return None

    return walk(0, 0)


@dataclass(frozen=True)
class Command:
    text: str
    nodes: tuple[str, ...]
    query: bool
    args: tuple[str, ...]


def split_arguments(text: str) -> list[str]:
    """``P,1`` -> ``['P', '1']``; ``1000,(@1)`` keeps the channel list whole; quotes respected."""
    args, depth, quoted, cur = [], 0, False, []
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        args.append("".join(cur).strip())
    return args


def parse_message(line: str) -> list[Command]:
    """One LF-terminated message -> commands, resolving ``;`` path inheritance."""
    commands: list[Command] = []
    prefix: tuple[str, ...] = ()
    for part in _split_semicolons(line):
        text = part.strip()
        if not text:
            continue
        header, _, argtext = text.partition(" ")
        query = header.endswith("?")
        header = header.rstrip("?")
        if header.startswith("*"):
            nodes: tuple[str, ...] = (header,)
        else:
            relative = not header.startswith(":") and commands and not commands[-1].nodes[0].startswith("*")
            nodes = tuple(n for n in header.split(":") if n)
            if relative:
                nodes = prefix + nodes
            prefix = nodes[:-1]
        commands.append(Command(text, nodes, query, tuple(split_arguments(argtext))))
    return commands


def _split_semicolons(line: str) -> list[str]:
    parts, quoted, cur = [], False, []
    for ch in line:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_bool(arg: str) -> bool:
    word = arg.strip().upper()
    if word in ("ON", "1"):
        return True
    if word in ("OFF", "0"):
        return False
    raise ScpiError(*ILLEGAL_PARAMETER)


def parse_float(arg: str, units: dict[str, float] | None = None) -> float:
    """``0.5``, ``500MS``, ``300V``, ``1.0E+01`` -> float (unit suffixes per ``units``)."""
    text = arg.strip().upper()
    scale = 1.0
    for suffix, factor in sorted((units or {}).items(), key=lambda kv: -len(kv[0])):
        if text.endswith(suffix):
            text, scale = text[: -len(suffix)], factor
            break
    try:
        return float(text) * scale
    except ValueError:
        raise ScpiError(*ILLEGAL_PARAMETER) from None


def format_nr3(value: float, digits: int = 4) -> str:
    """Numeric reply: ``1.0475E+02``; over-range ``INF``; no data ``NAN`` (Yokogawa ASCII)."""
    if value != value:
        return "NAN"
    if value in (float("inf"), float("-inf")):
        return "INF"
    return f"{value:.{digits}E}"


@dataclass
class Faults:
    """Faults to inject; each counter-based one fires once (then the link works again)."""

    #: Seconds added before every reply (a slow instrument / congested link).
    delay_s: float = 0.0
    #: Leave the data query after this many answered ones unanswered (the client times out).
    stall_after: int | None = None
    #: Close the connection on the data query after this many answered ones.
    drop_after: int | None = None
    #: Garble every Nth data reply (0 = never).
    malformed_every: int = 0
    #: Answer ``*IDN?`` with this text instead (a wrong instrument at the address).
    idn: str | None = None


class Instrument:
    """Command table + error queue; subclasses add handlers in ``__init__``."""

    idn = "HWVAL,EMULATOR,0,0"
    error_query = ":SYSTem:ERRor"
    #: Whether the error reply includes the message text (Yokogawa ``:STAT:QMES``).
    error_messages = True
    no_error = '0,"No error"'

    def __init__(self) -> None:
        self.table: list[tuple[str, Handler, bool]] = []
        self.errors: list[tuple[int, str]] = []
        self.lock = threading.RLock()
        self.add("*IDN", lambda a, s, q: self.idn)
        self.add("*CLS", self._cls)
        self.add("*OPC", lambda a, s, q: "1" if q else None)
        self.add(self.error_query, self._error)

    def add(self, pattern: str, handler: Handler, data: bool = False) -> None:
        """Register a header; ``data=True`` marks the measurement queries faults apply to."""
        self.table.append((pattern, handler, data))

    def _cls(self, args: list[str], suffixes: list[int], query: bool) -> None:
        self.errors.clear()

    def _error(self, args: list[str], suffixes: list[int], query: bool) -> str:
        if not self.errors:
            return self.no_error
        code, message = self.errors.pop(0)
        return f'{code},"{message}"' if self.error_messages else str(code)

    def push_error(self, code: int, message: str) -> None:
        if len(self.errors) < 32:  # the queue has a depth; older entries win, as on instruments
            self.errors.append((code, message))

    def execute(self, command: Command) -> tuple[str | bytes | None, bool]:
        """Run one command; returns (reply or None, is a data query)."""
        for pattern, handler, data in self.table:
            suffixes = match_header(pattern, command.nodes)
            if suffixes is None:
                continue
            try:
                return handler(list(command.args), suffixes, command.query), data
            except ScpiError as exc:
                self.push_error(exc.code, exc.message)
                return None, data
        self.push_error(*UNDEFINED_HEADER)
        return None, False


@dataclass
class LogEntry:
    t_ns: int
    connection: int
    text: str


class ScpiServer:
    """Serve one :class:`Instrument` on ``127.0.0.1:port`` (0 = a free port) until stopped."""

    def __init__(self, instrument: Instrument, port: int = 0, host: str = "127.0.0.1",
                 faults: Faults | None = None, log_path: str | None = None) -> None:
        self.instrument = instrument
        self.faults = faults or Faults()
        self.log: list[LogEntry] = []
        self._log_path = log_path
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(8)
        self.host, self.port = self._sock.getsockname()[:2]
        self._clients: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._connections = 0
        self._data_answered = 0
        self._data_served = 0

    @property
    def resource(self) -> str:
        return f"TCPIP::{self.host}::{self.port}::SOCKET"

    def commands(self, connection: int | None = None) -> list[str]:
        """Texts received (on one connection, 1-based, or all)."""
        return [e.text for e in list(self.log) if connection is None or e.connection == connection]

    def start(self) -> "ScpiServer":
        thread = threading.Thread(target=self._accept, name="scpi-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        for sock in [self._sock, *self._clients]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected: closing is enough
            sock.close()
        for thread in self._threads:
            thread.join(timeout=2.0)

    def __enter__(self) -> "ScpiServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # listening socket closed by stop()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._connections += 1
            self._clients.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn, self._connections),
                                      name=f"scpi-conn-{self._connections}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _record(self, connection: int, text: str) -> None:
        entry = LogEntry(time.monotonic_ns(), connection, text)
        self.log.append(entry)
        if self._log_path:
            with open(self._log_path, "a") as fh:
                fh.write(f"{entry.t_ns} {connection} {text}\n")

    def _serve(self, conn: socket.socket, connection: int) -> None:
        buffer = b""
        try:
            while not self._stopping.is_set():
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    raw, buffer = buffer.split(b"\n", 1)
                    line = raw.decode("ascii", errors="replace").strip("\r")
                    if not self._handle_line(conn, connection, line):
                        return
        except OSError:
            return  # client went away or stop() closed the socket
        finally:
            conn.close()
            if conn in self._clients:
                self._clients.remove(conn)

    def _handle_line(self, conn: socket.socket, connection: int, line: str) -> bool:
        replies: list[str | bytes] = []
        is_data = False
        for command in parse_message(line):
            self._record(connection, command.text)
            with self.instrument.lock:
                if command.query and match_header("*IDN", command.nodes) is not None and self.faults.idn:
                    reply, data = self.faults.idn, False
                else:
                    reply, data = self.instrument.execute(command)
            is_data = is_data or data
            if reply is not None:
                replies.append(reply)
        if not replies:
            return True
        faults = self.faults
        if is_data:
            if faults.drop_after is not None and self._data_answered >= faults.drop_after:
                faults.drop_after = None
                return False  # the caller closes the connection mid-run
            if faults.stall_after is not None and self._data_answered >= faults.stall_after:
                faults.stall_after = None
                return True  # swallowed: the client times out
            self._data_answered += 1
        # Replies are text, or bytes for a binary block (FORM REAL).
        payload = b";".join(r if isinstance(r, bytes) else r.encode("ascii") for r in replies)
        if is_data and faults.malformed_every:
            self._data_served += 1
            if self._data_served % faults.malformed_every == 0:
                payload = payload[: max(1, len(payload) // 2)] + b"#~?x"
        if faults.delay_s:
            time.sleep(faults.delay_s)
        conn.sendall(payload + b"\n")
        return True


def fault_options(func: Callable) -> Callable:
    """Click options ``--port --delay-s --stall-after --drop-after --malformed-every --idn
    --log-file`` shared by the SCPI emulators."""
    options: Iterable[Callable] = (
        click.option("--port", type=int, default=0, show_default=True,
                     help="TCP port on 127.0.0.1 (0 = pick a free one)"),
        click.option("--delay-s", type=float, default=0.0, help="fault: delay every reply by S seconds"),
        click.option("--stall-after", type=int, default=None,
                     help="fault: leave the data query after N answered ones unanswered (timeout)"),
        click.option("--drop-after", type=int, default=None,
                     help="fault: close the connection on the data query after N answered ones"),
        click.option("--malformed-every", type=int, default=0,
                     help="fault: garble every Nth data reply"),
        click.option("--idn", default=None, help="fault: answer *IDN? with this (wrong instrument)"),
        click.option("--log-file", type=click.Path(dir_okay=False), default=None,
                     help="append every received command to this file ('<t_ns> <conn> <text>')"),
    )
    for option in reversed(list(options)):
        func = option(func)
    return func


def serve_until_signal(server: ScpiServer, announce_fn: Callable[[], None]) -> None:
    """Start ``server``, announce it, and run until SIGINT/SIGTERM; then stop cleanly."""
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    server.start()
    try:
        announce_fn()
        while not done.wait(0.5):
            continue
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class UpdateClock:
    """An analyzer's update cycle on the bench clock: value ``n`` covers bench seconds
    ``[(n-1)*T, n*T]`` and is shown from ``n*T`` until ``(n+1)*T``."""

    interval_s: float
    served: list[int] = field(default_factory=list)

    def index(self, t_s: float) -> int:
        return int(t_s // self.interval_s)

    def window(self, index: int) -> tuple[float, float]:
        return (index - 1) * self.interval_s, index * self.interval_s
