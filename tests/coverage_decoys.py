"""Functions shaped like covering tests, for the check that a FAULTS row's covering test really
injects its fault and checks what it gives (tests/test_conformance_faults.py). This module's name
does not start with ``test_``, so pytest never runs them; they are only read."""

from __future__ import annotations


def test_only_mentions_the_fault(emulator, events):
    """Injects stall-at-s and checks gap_start (it says so, and does neither)."""
    # stall_at_s, "--stall-at-s", gap_start
    emulator.start()
    assert events


def test_injects_and_only_mentions_the_event(emulator, events):
    emulator.start(stall_at_s=1.0)
    assert events  # a gap_start is expected here, but nothing checks that it came


def test_injects_and_checks(emulator, events):
    emulator.start(stall_at_s=1.0)
    assert "gap_start" in events
