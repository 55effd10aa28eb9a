"""A run whose derived groups (/sync, /analysis) can be added in memory.

The report must show a synchronised analysis even for a run that has none yet, but it never
writes the run file unless asked (``--save``). The library stages (``synchronise``, ``analyze``,
``align``) read and write derived groups only through ``read_derived`` / ``replace_derived``, so
wrapping the run and keeping what they write in a dict layered over the file's own entries lets
them run unchanged.
"""

from __future__ import annotations

from typing import Any

from hwval.runfile.reader import DERIVED_GROUPS, DerivedEntry


class DerivedOverlay:
    """``run`` with ``/sync`` and ``/analysis`` entries held in memory on top of the file's."""

    def __init__(self, run) -> None:
        self._run = run
        self._groups: dict[str, dict[str, DerivedEntry]] = {g: {} for g in DERIVED_GROUPS}
        self._replaced_whole: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        # everything but the derived groups is the run's own (streams, events, attrs, path)
        return getattr(self._run, name)

    def read_derived(self, group: str) -> dict[str, DerivedEntry]:
        base = {} if group in self._replaced_whole else self._run.read_derived(group)
        return {**base, **self._groups[group]}

    def replace_derived(self, group: str, entries: dict[str, DerivedEntry], whole: bool = False) -> None:
        if group not in self._groups:
            raise ValueError(f"derived group {group!r}: expected one of {', '.join(DERIVED_GROUPS)}")
        if whole:
            self._groups[group] = {}
            self._replaced_whole.add(group)
        self._groups[group].update(entries)

    def added(self, group: str) -> list[str]:
        """Entry names computed in memory (not in the file)."""
        return list(self._groups[group])
