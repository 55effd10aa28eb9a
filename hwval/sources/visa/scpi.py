"""SCPI over pyvisa: the one transport of every analyzer driver, plus the steps they share
(open with identity check and profile, setup, error queue).

Vendor errors are translated here, once (STYLE lesson 8):

- a timeout, a lost connection or a broken pipe -> :class:`Disconnected`. On a raw socket a
  closed peer looks exactly like a timeout to pyvisa-py, and a late reply left in the socket
  would be read as the answer to the next query, so the only safe way on is a fresh
  connection: the recorder closes, reopens with backoff and records the gap;
- a reply that cannot be decoded -> :class:`TransientError` (counted, gap, retried);
- failing to open at start -> :class:`SourceUnavailable` naming the resource and the fix.

Resources: ``TCPIP::host::port::SOCKET`` (raw socket, e.g. HMC8015 on 5025),
``TCPIP::host::INSTR`` (VXI-11), ``USB0::...::INSTR``, ``GPIB0::n::INSTR`` through whatever
backend is asked for: ``@py`` (pyvisa-py, default), ``@ivi`` (vendor VISA), ``FILE.yaml@sim``
(pyvisa-sim) or ``sim`` (the definition shipped in ``hwval/sources/visa/sim/<driver>.yaml``).
Sources: pyvisa/pyvisa-py ``tcpip.py``; pyvisa/pyvisa-sim docs.
"""

from __future__ import annotations

import logging
import socket
from importlib.resources import files
from pathlib import Path
from typing import Any

from hwval.sources.base import Disconnected, SourceContext, SourceUnavailable, TransientError
from hwval.sources.emulated import says_emulated
from hwval.sources.options import Option
from hwval.sources.visa.codec import Identity, MalformedReply, parse_error, parse_idn
from hwval.sources.visa.profile import Profile, ProfileError, select_profile

log = logging.getLogger("hwval.visa")

#: Error-queue reads per drain: a confused instrument must not keep the driver in a loop.
MAX_QUEUED_ERRORS = 32
#: Consecutive undecodable replies after which the link is considered out of step: a reply
#: left half-read in the socket would be taken as the answer to every later query.
MAX_MALFORMED = 3

#: Options every VISA driver accepts (put first in each driver's own declarations).
COMMON_OPTIONS = (
    Option("backend", str, "@py", "pyvisa backend: @py (pyvisa-py), sim (the shipped pyvisa-sim "
           "definition), PATH@sim (a pyvisa-sim YAML), or what pyvisa's ResourceManager takes"),
    Option("profile", str, "", "SCPI profile TOML to use instead of the one *IDN? selects",
           default_text="chosen from *IDN?"),
    Option("timeout_s", float, 2.0, "wait this long for each reply", "s", gt=0),
)


def sim_definition(driver: str) -> Path:
    """The pyvisa-sim YAML shipped for ``driver`` (package data, found from a wheel too)."""
    # pyvisa-sim opens the definition by file name, so a real path is needed: pip installs a
    # wheel unpacked, where files() is a pathlib.Path already.
    return Path(str(files("hwval.sources.visa") / "sim" / f"{driver}.yaml"))


def resolve_backend(backend: str, driver: str) -> str:
    """Turn the ``backend=`` option into a pyvisa ResourceManager argument."""
    if backend in ("py", "@py", ""):
        return "@py"
    if backend == "sim":
        return f"{sim_definition(driver)}@sim"
    if backend.endswith("@sim"):
        path = backend[: -len("@sim")]
        if path and not Path(path).is_file():
            raise SourceUnavailable(f"{driver}: pyvisa-sim definition {path} does not exist "
                                    f"(backend={backend}); use backend=sim for the shipped one")
    return backend


def unresolvable_host(resource: str) -> str | None:
    """For a ``TCPIP`` resource whose host is neither an IP address nor a name this machine can
    resolve, the reason in words; ``None`` otherwise (other resource types, or a good host)."""
    parts = resource.split("::")
    if len(parts) < 2 or not parts[0].upper().startswith("TCPIP"):
        return None
    host = parts[1]
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as exc:
        return f"host {host!r} is not an IP address or a name this machine resolves ({exc})"
    return None


class ScpiTransport:
    """One pyvisa resource with LF termination, timeouts and error translation."""

    def __init__(self, resource: str, backend: str, timeout_s: float, driver: str) -> None:
        self.resource = resource
        self.backend = backend
        self.timeout_s = timeout_s
        self.driver = driver
        self._rm: Any = None
        self._inst: Any = None
        #: Queries and writes sent since open (for rate figures in benchmarks).
        self.exchanges = 0

    def open(self) -> None:
        import pyvisa  # imported here so that other drivers never pay for (or need) pyvisa

        try:
            self._rm = pyvisa.ResourceManager(self.backend)
        except (OSError, ValueError, pyvisa.Error) as exc:
            raise SourceUnavailable(
                f"{self.driver}: cannot load the VISA backend {self.backend!r}: {exc}; "
                "use backend=@py (pyvisa-py), backend=sim, or install your vendor's VISA") from None
        try:
            self._inst = self._rm.open_resource(
                self.resource, read_termination="\n", write_termination="\n",
                timeout=int(self.timeout_s * 1000))
        except Exception as exc:  # pyvisa raises VisaIOError, OSError or ValueError by backend
            self.close()
            bad_host = unresolvable_host(self.resource) if self.backend == "@py" else None
            if bad_host:
                # pyvisa-py reports an unresolvable host as "Bad file descriptor": say what it is
                raise SourceUnavailable(
                    f"{self.driver}: cannot open {self.resource}: {bad_host}; fix the address "
                    "(TCPIP::<ip or host>::INSTR, or TCPIP::<ip>::<port>::SOCKET)") from None
            raise SourceUnavailable(
                f"{self.driver}: cannot open {self.resource} ({self.backend}): {exc}; check the "
                "instrument is on and reachable at that address (or start "
                f"'hwval emulate {self.driver}' and use the resource it prints)") from None

    def set_timeout(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        if self._inst is not None:
            self._inst.timeout = int(timeout_s * 1000)

    def close(self) -> None:
        for obj in (self._inst, self._rm):
            if obj is not None:
                try:
                    obj.close()
                except Exception as exc:  # already gone: nothing else to release
                    log.debug("closing %s: %s", self.resource, exc)
        self._inst = self._rm = None

    def _fail(self, command: str, exc: Exception) -> Disconnected:
        import pyvisa

        if isinstance(exc, pyvisa.VisaIOError) and exc.error_code == pyvisa.constants.StatusCode.error_timeout:
            why = f"no reply to {command!r} within {self.timeout_s:g} s (instrument busy or link lost)"
        else:
            why = f"{command!r} failed: {exc}"
        return Disconnected(f"{self.resource}: {why}")

    def write(self, command: str) -> None:
        if self._inst is None:
            raise Disconnected(f"{self.resource}: not open")
        log.debug("%s <- %s", self.resource, command)
        try:
            self._inst.write(command)
        except Exception as exc:  # every transport failure means the link is unusable
            raise self._fail(command, exc) from None
        self.exchanges += 1

    def query(self, command: str) -> str:
        if self._inst is None:
            raise Disconnected(f"{self.resource}: not open")
        try:
            reply = self._inst.query(command)
        except UnicodeDecodeError as exc:
            raise TransientError(f"{self.resource}: reply to {command!r} is not text: {exc}") from None
        except Exception as exc:  # every transport failure means the link is unusable
            raise self._fail(command, exc) from None
        self.exchanges += 1
        log.debug("%s <- %s -> %s", self.resource, command, reply[:200])
        return reply

    def query_block(self, command: str) -> bytes:
        """Send ``command`` and read one definite-length binary block, header included."""
        self.write(command)
        try:
            head = self._inst.read_bytes(2, break_on_termchar=False)
            ndigits = int(head[1:2]) if head[:1] == b"#" and head[1:2].isdigit() else 0
            if not ndigits:
                rest = self._inst.read_raw()
                return bytes(head) + bytes(rest)
            length_text = self._inst.read_bytes(ndigits, break_on_termchar=False)
            length = int(length_text) if length_text.isdigit() else 0
            # the block is followed by the LF terminator: read it too (also after an empty
            # block), or it would be taken as the reply to the next query
            payload = self._inst.read_bytes(length + 1, break_on_termchar=False)
        except Exception as exc:  # see write(): the link is unusable
            raise self._fail(command, exc) from None
        return bytes(head) + bytes(length_text) + bytes(payload)


class ScpiSession:
    """What every analyzer driver does the same way: connect, identify, select the profile,
    set up, drain the error queue and surface its messages."""

    def __init__(self, driver: str, resource: str, options: dict[str, Any]) -> None:
        self.driver = driver
        self.resource = resource
        self.backend = resolve_backend(options["backend"], driver)
        self.profile_override = options["profile"] or None
        if self.profile_override and not Path(self.profile_override).is_file():
            raise ValueError(f"{driver}: profile={self.profile_override} does not exist")
        self.timeout_s = options["timeout_s"]
        self.transport = ScpiTransport(resource, self.backend, self.timeout_s, driver)
        self.identity: Identity | None = None
        self.profile: Profile | None = None
        self.ctx: SourceContext | None = None
        self.stream = ""
        self.malformed_in_row = 0

    @property
    def emulated(self) -> bool:
        """From what the instrument said it is (``*IDN?``), never from its address: a real
        analyzer behind an SSH tunnel on 127.0.0.1 is real. ``False`` before :meth:`connect`."""
        return self.identity is not None and says_emulated(
            (self.identity.manufacturer, self.identity.model, self.identity.serial, self.identity.firmware))

    def connect(self, ctx: SourceContext, stream: str) -> Profile:
        """Open, check the identity, pick the profile; errors name what answered."""
        self.ctx, self.stream = ctx, stream
        self.transport.open()
        try:
            idn_text = self.transport.query("*IDN?")
            self.identity = parse_idn(idn_text)
            self.profile = select_profile(self.driver, self.identity, self.profile_override)
        except (Disconnected, TransientError) as exc:
            self.transport.close()
            raise SourceUnavailable(
                f"{self.driver}: cannot talk to the instrument ({exc}); check it is on and "
                "reachable at that address (or start "
                f"'hwval emulate {self.driver}' and use the resource it prints)") from None
        except (MalformedReply, ProfileError) as exc:
            self.transport.close()
            raise SourceUnavailable(f"{self.driver}: {self.resource}: {exc}; is this the right "
                                    "instrument and address?") from None
        return self.profile

    def decoded(self) -> None:
        """A reply was decoded: the link is in step again."""
        self.malformed_in_row = 0

    def malformed(self, message: str) -> None:
        """Count an undecodable reply (``malformed``) and return, so the caller skips this
        reading; after :data:`MAX_MALFORMED` in a row raise :class:`Disconnected`: the
        recorder reconnects, which is the only way to get back in step on a raw socket."""
        if self.ctx is not None:
            self.ctx.count_error(self.stream, "malformed", message)
        self.malformed_in_row += 1
        if self.malformed_in_row >= MAX_MALFORMED:
            self.malformed_in_row = 0
            raise Disconnected(f"{self.resource}: {MAX_MALFORMED} undecodable replies in a row; "
                               "reconnecting to get back in step")

    def send(self, commands: list[str] | tuple[str, ...]) -> None:
        for command in commands:
            self.transport.write(command)

    def query(self, command: str) -> str:
        return self.transport.query(command)

    def read_errors(self) -> list[tuple[int, str]]:
        """Empty the error queue; returns the ``(code, message)`` entries found."""
        assert self.profile is not None
        found: list[tuple[int, str]] = []
        for _ in range(MAX_QUEUED_ERRORS):
            try:
                code, message = parse_error(self.transport.query(self.profile.error_query))
            except MalformedReply as exc:
                raise TransientError(f"{self.resource}: {exc}") from None
            if code == 0:
                break
            found.append((code, message))
        return found

    def surface_errors(self, after: str) -> list[tuple[int, str]]:
        """Read the error queue and record each SCPI message (counted per code, with events)."""
        errors = self.read_errors()
        for code, message in errors:
            text = f'{self.resource}: instrument error {code},"{message}" after {after}'
            log.warning(text)
            if self.ctx is not None:
                self.ctx.count_error(self.stream, f"scpi_{code}", text)
        return errors

    def first_accepted(self, headers: tuple[str, ...], argument: str) -> str | None:
        """Send ``<header> <argument>`` for each header until one raises no instrument error
        (firmware differ in which header they know); returns the header that worked."""
        for header in headers:
            self.transport.write(f"{header} {argument}")
            if not self.read_errors():
                return header
        return None

    def close(self) -> None:
        self.transport.close()
