"""The ``error`` events that counted errors leave behind, and the counts rebuilt from them.

A capture counts each error per ``(stream, kind)`` in memory and writes the totals at finish (the
streams' and the root's ``error_counts``). A capture killed before its finish leaves only the
events, so the event of a counted error carries its running count: the first of a kind, then at
most one a second. :func:`counted_error_detail` writes that detail (the recorder uses it) and
:func:`counts_from_events` reads it back (``hwval recover`` uses it), so the two cannot drift.

Rebuilt counts are the last running count each kind reached in an event: exact when the last
occurrence made an event, a lower bound otherwise (repeats within the last second are lost).
"""

from __future__ import annotations

from typing import Any, Iterable

from hwval.runfile.documents import Event
from hwval.runfile.schema import EventName

#: Detail key of a counted error's running count (kind and message ride along).
COUNT = "count"


def counted_error_detail(kind: str, count: int, message: str) -> dict[str, Any]:
    """Detail of the ``error`` event of the ``count``-th ``kind`` error of a stream."""
    return {"kind": kind, COUNT: count, "message": message}


def counts_from_events(events: Iterable[Event]) -> dict[str, dict[str, int]]:
    """``{stream: {kind: count}}`` from counted-error events (stream ``""``: the run's own).

    Error events without a running count (``duration``: why the capture stopped, not a fault)
    are not counted errors and are left out, as the finish leaves them out."""
    counts: dict[str, dict[str, int]] = {}
    for e in events:
        if e.name != EventName.ERROR:
            continue
        kind, n = e.detail.get("kind"), e.detail.get(COUNT)
        # a crafted journal may hold anything: only a named kind with a whole count is one
        if not isinstance(kind, str) or not kind or isinstance(n, bool) or not isinstance(n, int) or n < 1:
            continue
        per_kind = counts.setdefault(e.stream, {})
        per_kind[kind] = max(per_kind.get(kind, 0), n)
    return counts
