"""Claiming a run file's path before anything is recorded: the file and its crash journal are
created exclusively (``O_CREAT | O_EXCL``), so two captures can never share an output, and
creating the file is the proof that its folder is writable (``os.access`` says yes to root on
a read-only mount or in ``/sys``; only an actual ``open`` tells).

The journal is created first and ``flock``-ed at once (see :mod:`hwval.runfile.journal`): the
lock is what a second capture, ``hwval info`` and ``hwval recover`` see as "a capture is
writing this run". An existing journal is never reused, even with ``--force``: it is either a
live capture's or the only full copy of a killed one's data.
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from hwval.runfile.journal import journal_in_use, journal_path

#: Disk space held back, as a preallocated ``RUN.h5.reserve`` file, for finishing and closing
#: the run file after a write failure (HDF5 must flush its caches to close a file; one it cannot
#: close crashes the interpreter at exit). Above what HDF5 keeps dirty between two flushes with
#: the writer's small chunk cache. Claiming it also proves the space is there at the start.
RESERVE_BYTES = 2 << 20

#: Tries of ``NAME-2.h5``, ``NAME-3.h5``... when a generated name (a template with
#: placeholders) is taken, e.g. two captures started in the same second.
MAX_NAME_SUFFIX = 1000


def reserve_path(run_path: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(run_path)}.reserve")


class OutputRefused(Exception):
    """The output cannot be claimed; the message is one line naming what to do."""


class _Taken(OutputRefused):
    """The name is in use (a file, a live or a leftover journal): a generated name moves on."""


@dataclass
class OutputClaim:
    """An output path this process owns: the journal is open and locked, the file exists."""

    path: Path
    journal_fd: int
    #: True when this claim created the run file (so :meth:`release` removes it).
    created_file: bool

    def release(self) -> None:
        """Undo the claim of a capture that did not start: remove what it created."""
        journal_path(self.path).unlink(missing_ok=True)  # unlinked while still locked
        reserve_path(self.path).unlink(missing_ok=True)
        if self.created_file:
            self.path.unlink(missing_ok=True)
        os.close(self.journal_fd)


def claim_output(path: Path, force: bool = False, generated: bool = False) -> OutputClaim:
    """Create ``path``'s journal and file exclusively. ``generated``: the name came from a
    template, so a taken one gets a ``-2``, ``-3``... suffix instead of a refusal.
    ``force`` lets an existing run file (without a journal) be replaced."""
    for i in range(1, MAX_NAME_SUFFIX + 1):
        candidate = path if i == 1 else path.with_name(f"{path.stem}-{i}{path.suffix}")
        try:
            return _claim(candidate, force and not generated)
        except _Taken:
            if not generated:
                raise
    raise OutputRefused(f"output {path}: {MAX_NAME_SUFFIX} files of that name exist; "
                        "choose another -o or output template")


def _claim(path: Path, force: bool) -> OutputClaim:
    jpath = journal_path(path)
    if journal_in_use(path):
        raise _Taken(f"output {path} is being written by another capture now; choose another -o")
    try:
        journal_left, is_dir, exists = jpath.exists(), path.is_dir(), path.exists()
    except OSError as exc:  # a folder without search (x) permission: stat itself is refused
        raise OutputRefused(_cannot_create(path, exc)) from None
    if journal_left:
        raise _Taken(f"output {path}: the crash journal {jpath} of an interrupted capture is there "
                            f"(--force does not overwrite it); run `hwval recover {path}` first, or "
                            "choose another -o")
    if is_dir:
        raise OutputRefused(f"output {path} is a directory; give a file name such as {path}/run.h5")
    if exists and not force:
        raise _Taken(_exists(path))
    # The journal appears under its name already locked: it is created and flock-ed under a private
    # name, then hard-linked into place (link fails if the name exists, as O_EXCL would). A reader
    # can then never see an unlocked journal of a live capture and call it a crash.
    staging = jpath.with_name(f"{jpath.name}.{os.getpid()}.claim")
    try:
        jfd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
    except OSError as exc:
        raise OutputRefused(_cannot_create(path, exc)) from None
    try:
        fcntl.flock(jfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            os.link(staging, jpath)
        except FileExistsError:  # another capture claimed it between the checks and here
            os.close(jfd)
            raise _Taken(f"output {path} is being written by another capture now; choose another -o") from None
        except OSError as exc:
            os.close(jfd)
            raise OutputRefused(_cannot_create(path, exc)) from None
    finally:
        staging.unlink(missing_ok=True)
    try:
        created = _create_file(path, force)
    except BaseException:
        jpath.unlink(missing_ok=True)
        os.close(jfd)
        raise
    claim = OutputClaim(path, jfd, created)
    try:
        _make_reserve(reserve_path(path))
    except OSError as exc:
        claim.release()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutputRefused(f"output {path}: less than {RESERVE_BYTES >> 20} MiB free there; "
                                "free some space or choose another -o") from None
        raise OutputRefused(_cannot_create(path, exc)) from None
    return claim


def _make_reserve(path: Path) -> None:
    """Preallocate :data:`RESERVE_BYTES` in real blocks (not a sparse file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.posix_fallocate(fd, 0, RESERVE_BYTES)
    except OSError:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def _create_file(path: Path, force: bool) -> bool:
    """Create the run file exclusively (True), or keep an existing one for ``force`` (False): it
    is replaced when the writer opens it, which this process may now do (it holds the journal)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        if force:
            if not os.access(path, os.W_OK):
                raise OutputRefused(f"output {path} exists and is not writable by this user; "
                                    "choose another -o") from None
            return False
        raise _Taken(_exists(path)) from None
    except OSError as exc:
        raise OutputRefused(_cannot_create(path, exc)) from None
    os.close(fd)
    return True


def _exists(path: Path) -> str:
    return f"output {path} already exists; choose another -o or pass --force to overwrite it"


def _cannot_create(path: Path, exc: OSError) -> str:
    parent = path.parent
    if exc.errno == errno.ENOTDIR or (parent.exists() and not parent.is_dir()):
        return f"output {path}: {_first_file(parent)} is a file, not a folder; choose another -o"
    if exc.errno == errno.ENOENT and not parent.exists():
        return f"output {path}: directory {parent} does not exist; create it or choose another -o"
    if exc.errno == errno.EROFS:
        return f"output {path}: directory {parent} is on a read-only filesystem; choose another -o"
    # Creating a file needs write *and* search (x) permission on the folder: a folder with w
    # but not x refuses too, and is a permission problem, not a virtual filesystem.
    if exc.errno in (errno.EACCES, errno.EPERM) and not os.access(parent, os.W_OK):
        return f"output {path}: directory {parent} is not writable by this user; choose another -o"
    if exc.errno in (errno.EACCES, errno.EPERM) and not os.access(parent, os.X_OK):
        return (f"output {path}: directory {parent} is not searchable by this user (no x permission); "
                "choose another -o")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.ENOENT):
        # Its permissions let this user write (root passes every check), yet the create failed:
        # a virtual filesystem (sysfs refuses with EACCES, procfs with ENOENT). Saying "not
        # writable by this user" would send root looking for a permission problem.
        return (f"output {path}: directory {parent} does not accept new files ({exc.strerror}) whatever "
                "its permissions (a virtual filesystem such as /sys or /proc); choose another -o on a disk")
    return f"output {path}: cannot create the file there ({exc.strerror or exc}); choose another -o"


def _first_file(parent: Path) -> Path:
    """The first component of ``parent`` that exists and is not a folder (``a.h5`` in ``a.h5/x/y``)."""
    for p in reversed([parent, *parent.parents]):
        if p.exists() and not p.is_dir():
            return p
    return parent
