"""Whether the terminal a serial driver opened belongs to a running hwval emulator.

The ESPHome logger, the CSE7766 frame stream and the PZEM-004T registers carry no identity a
driver can ask for (docs/protocols/esphome.md, cse7766.md, pzem004t.md), so the path an
operator typed cannot tell an emulator from a real meter: a real meter may sit behind any link,
and an emulator's pty can be reached through its own link, its ``/dev/pts/N`` or any other
symlink. What is certain is the device itself. Every pty emulator registers the pseudo-terminal
it owns, keyed by the device number (``st_rdev``) of its slave side, and a driver looks up the
device number of the file descriptor it actually opened (``os.fstat(port.fileno())``).

The registry is one folder per user, ``<temp dir>/hwval-emulators-<uid>`` (mode 0700), holding
one JSON file per plugged pty, ``pty-<major>-<minor>.json``::

    {"emulator": "cse7766", "pid": 4242, "pid_start": 81234, "pty": "/dev/pts/3",
     "started_utc": "2026-12-03T15:00:00Z"}

written atomically (``os.replace``) when the emulator plugs the pty in and removed before it
closes it. ``<uid>`` is the owner of the terminal (Linux gives a new pty to the user who opened
it), so a capture run as another user (``sudo`` for RAPL) finds the emulator of the user who
started it. A claim is believed only when the folder and the file belong to that user and are
writable by nobody else, the process that wrote it still runs (same pid, same start time: a
reused pid is not the emulator), and the pty it names is this very device. An entry whose
process is gone is stale: it is ignored and removed.

An entry is first written to a temp file ``.new-<pid>-<start>-<random>`` (its writer's pid and
start time) and then renamed. An emulator killed between the two leaves that file behind; the
next :func:`register` removes, under the writers' lock, every temp file whose writer no longer
runs, and a temp file that names no writer only once it is older than
:data:`TEMP_UNNAMED_STALE_S`. A live writer's temp file is never removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Iterator

#: Folder name prefix, followed by the uid of the ptys' owner.
REGISTRY_PREFIX = "hwval-emulators-"
#: Prefix of the temp file an entry is written to before it is renamed into place.
TEMP_PREFIX = ".new-"
#: Age after which a temp file naming no writer (made by an hwval that did not name them) is
#: stale: writing one takes milliseconds, so a minute leaves a very wide margin on a busy host.
TEMP_UNNAMED_STALE_S = 60.0


class RegistryError(OSError):
    """The registry folder cannot be used (owned by someone else, open to others)."""


@dataclass(frozen=True)
class EmulatorClaim:
    """A live emulator's claim on one pty."""

    emulator: str
    pid: int
    pty: str
    started_utc: str

    def identity(self) -> dict[str, Any]:
        """What a driver adds to its stream's identity: ``emulator`` (stable, so a calibration
        record made on it matches the next run) and ``emulator_process`` (this session's:
        left out of calibration matching)."""
        return {"emulator": self.emulator,
                "emulator_process": {"pid": self.pid, "pty": self.pty,
                                     "started_utc": self.started_utc}}


def registry_root() -> str:
    """``/tmp`` wherever it exists, whatever ``TMPDIR`` says: the emulator and the capture must
    find the same folder, and ``TMPDIR`` differs between shells, ``sudo`` and CI runners (a
    capture with another ``TMPDIR`` would record a live emulator as a real meter). Only a system
    without ``/tmp`` falls back to the temp folder."""
    return "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()


def registry_dir(uid: int | None = None) -> str:
    """The registry folder of the user ``uid`` (default: this process's)."""
    uid = os.getuid() if uid is None else uid
    return os.path.join(registry_root(), f"{REGISTRY_PREFIX}{uid}")


def entry_name(rdev: int) -> str:
    return f"pty-{os.major(rdev)}-{os.minor(rdev)}.json"


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22,
    proc(5)); ``None`` when it does not exist, has exited (a zombie its parent has not reaped
    yet: its files, the pty included, are closed and the pty's number free), or this system has
    no ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may itself contain spaces or ')'
    fields = text.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # field 3, the state: zombie or dead
        return None
    return int(fields[19])


def _has_proc() -> bool:
    return os.path.exists("/proc/self/stat")


def is_running(pid: int, pid_start: int | None) -> bool:
    """True while the process that wrote an entry runs: same pid and, where ``/proc`` tells,
    the same start time (a pid the system reused for another program is not the emulator)."""
    if _has_proc():
        return pid_start is not None and process_start(pid) == pid_start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _private(st: os.stat_result, uid: int) -> bool:
    # writable by the owner only: nobody else can plant or alter a claim
    return st.st_uid == uid and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _trusted_dir(folder: str, uid: int) -> bool:
    try:
        st = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and _private(st, uid)


@contextlib.contextmanager
def _locked(folder: str, create: bool = False) -> Iterator[None]:
    """Writers and cleaners hold this lock, so a cleaner never removes an entry a new emulator
    has just written for the same pty (readers need none: entries are replaced atomically).
    Only the folder's owner creates the lock file: one made by root (a capture under sudo
    cleaning a stale entry) would lock the owner out."""
    flags = os.O_RDWR | (os.O_CREAT if create else 0)
    fd = os.open(os.path.join(folder, ".lock"), flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read(path: str, uid: int) -> dict[str, Any] | None:
    """The entry at ``path`` if it is a well-formed file of user ``uid``; ``None`` otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _private(st, uid):
            return None
        with os.fdopen(os.dup(fd)) as fh:
            entry = json.load(fh)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    valid = (isinstance(entry, dict) and isinstance(entry.get("emulator"), str)
             and isinstance(entry.get("pid"), int) and isinstance(entry.get("pty"), str)
             and isinstance(entry.get("pid_start"), (int, type(None))))
    return entry if valid else None


def _remove_if_stale(folder: str, name: str, uid: int) -> bool:
    """Remove entry ``name`` if its process is gone; True when it was removed."""
    path = os.path.join(folder, name)
    try:
        with _locked(folder):
            entry = _read(path, uid)  # again, under the lock: it may have been replaced
            if entry is None or is_running(entry["pid"], entry["pid_start"]):
                return False
            os.unlink(path)
            return True
    except OSError:  # not ours to clean (another user's folder): ignoring it is enough
        return False


def claim_of(fd: int) -> EmulatorClaim | None:
    """The live emulator that owns the terminal open on ``fd``; ``None`` for anything else (a
    real serial port, a pty no emulator registered, a socket)."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    if not stat.S_ISCHR(st.st_mode):
        return None
    folder = registry_dir(st.st_uid)
    if not _trusted_dir(folder, st.st_uid):
        return None
    name = entry_name(st.st_rdev)
    entry = _read(os.path.join(folder, name), st.st_uid)
    if entry is None:
        return None
    if not is_running(entry["pid"], entry["pid_start"]):
        _remove_if_stale(folder, name, st.st_uid)
        return None
    try:
        same_device = os.stat(entry["pty"]).st_rdev == st.st_rdev
    except OSError:
        same_device = False
    if not same_device:
        return None
    return EmulatorClaim(entry["emulator"], entry["pid"], entry["pty"],
                         str(entry.get("started_utc", "")))


def claim_of_port(port: Any) -> EmulatorClaim | None:
    """:func:`claim_of` for an open pyserial port (a URL port without a file descriptor, such
    as ``socket://``, is never an emulator's pty)."""
    try:
        fd = port.fileno()
    except (AttributeError, OSError, ValueError):  # pyserial's SerialException is an OSError
        return None
    return claim_of(fd) if isinstance(fd, int) else None


def emulated_identity(port: Any) -> tuple[bool, dict[str, Any]]:
    """``(emulated, identity entries)`` for a driver whose protocol has no identity to read:
    emulated when a live emulator owns the opened terminal, whose claim is then recorded."""
    claim = claim_of_port(port)
    return (True, claim.identity()) if claim else (False, {})


# ---- the emulators' side ---------------------------------------------------------------------
def _own_dir(uid: int) -> str:
    folder = registry_dir(uid)
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    if not _trusted_dir(folder, uid):
        raise RegistryError(f"emulator registry {folder} is not a folder of uid {uid} writable "
                            "only by it; remove it and start again")
    return folder


def _temp_prefix() -> str:
    """``.new-<pid>-<start>-``: whoever finds the file can tell whether its writer still runs."""
    start = process_start(os.getpid())
    return f"{TEMP_PREFIX}{os.getpid()}-{'na' if start is None else start}-"


def _temp_writer(name: str) -> tuple[int, int | None] | None:
    """``(pid, start)`` of the writer a temp file name carries; ``None`` when it carries none."""
    parts = name[len(TEMP_PREFIX):].split("-")
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    if parts[1] == "na":
        return int(parts[0]), None
    return (int(parts[0]), int(parts[1])) if parts[1].isdigit() else None


def _remove_stale_temps(folder: str, uid: int) -> None:
    """Remove the temp files of writers that were killed mid-write. Called with the writers'
    lock held: a writer keeps the lock until its temp file is renamed or removed, so a temp file
    seen now is orphaned; the writer check below is the guard should that ever not hold."""
    now_s = time.time()
    for name in os.listdir(folder):
        if not name.startswith(TEMP_PREFIX):
            continue
        path = os.path.join(folder, name)
        try:
            st = os.lstat(path)
        except OSError:  # gone meanwhile
            continue
        if st.st_uid != uid or stat.S_ISDIR(st.st_mode):
            continue  # not a file this user's emulators wrote
        writer = _temp_writer(name)
        if writer is not None:
            stale = not is_running(*writer)
        else:
            stale = now_s - st.st_mtime > TEMP_UNNAMED_STALE_S
        if stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def register(slave_fd: int, emulator: str) -> str:
    """Record that this process's ``emulator`` owns the pty whose slave is ``slave_fd``, and
    clean stale entries and temp files of the folder. Returns the entry's path (for :func:`unregister`)."""
    st = os.fstat(slave_fd)
    folder = _own_dir(st.st_uid)
    path = os.path.join(folder, entry_name(st.st_rdev))
    entry = {"emulator": emulator, "pid": os.getpid(), "pid_start": process_start(os.getpid()),
             "pty": os.ttyname(slave_fd),
             "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with _locked(folder, create=True):
        _remove_stale_temps(folder, st.st_uid)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=_temp_prefix())  # mode 0600
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(entry, fh)
            os.replace(tmp, path)  # a reader sees the old entry or the new, never half of one
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    for other in os.listdir(folder):  # emulators that were killed leave their entries behind
        if other.startswith("pty-") and other.endswith(".json") and other != os.path.basename(path):
            _remove_if_stale(folder, other, st.st_uid)
    return path


def unregister(path: str) -> None:
    """Remove an entry this process wrote (before it closes the pty)."""
    folder = os.path.dirname(path)
    with contextlib.suppress(OSError), _locked(folder):
        entry = _read(path, os.lstat(folder).st_uid)
        if entry is not None and entry["pid"] == os.getpid():
            os.unlink(path)
