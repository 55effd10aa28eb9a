"""Shared fixtures: run the real ``hwval`` command as a subprocess of the test's Python."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HWVAL = [sys.executable, "-m", "hwval.cli"]


def run_hwval(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """Run ``hwval ARGS`` to completion, capturing text output."""
    return subprocess.run([*HWVAL, *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def journaled_readings(out_path) -> int:
    """Readings a live capture has already written ahead to its journal (0 before it starts, or
    while a record is half-written: the next poll sees it whole). Tests wait on this, not on a
    sleep, to know a capture is recording."""
    from hwval.runfile.documents import Page
    from hwval.runfile.journal import journal_path
    from hwval.runfile.recover import read_journal

    path = journal_path(str(out_path))
    if not os.path.exists(path):
        return 0
    try:
        return sum(len(doc.t) for doc in read_journal(path) if isinstance(doc, Page))
    except (OSError, ValueError):
        return 0


def popen_hwval(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([*HWVAL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


class StepClock:
    """A monotonic clock the test advances by hand (nanoseconds)."""

    def __init__(self, start_ns: int = 10**12) -> None:
        self.t_ns = start_ns

    def __call__(self) -> int:
        return self.t_ns

    def advance(self, seconds: float) -> None:
        self.t_ns += round(seconds * 1e9)


@pytest.fixture
def hwval_cmd():
    return run_hwval


@pytest.fixture(autouse=True)
def _no_marker_env(monkeypatch):
    # A test process started under a capture must not send its own marks there.
    monkeypatch.delenv("HWVAL_MARK_SOCKET", raising=False)
    yield


def pytest_addoption(parser):
    parser.addoption("--meter", action="append", default=[],
                     help="real meter SPEC for hardware tests (DRIVER:RESOURCE); hardware tests skip without it")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--meter"):
        return
    skip = pytest.mark.skip(reason="hardware test: pass --meter DRIVER:RESOURCE to run")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


os.environ.setdefault("PYTHONUNBUFFERED", "1")
