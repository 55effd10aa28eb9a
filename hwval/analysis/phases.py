"""Phases of a run from its events: the windows analysis reports on separately.

- ``workload``: ``workload_start`` .. ``workload_end`` (the main window of every comparison).
- ``idle``: the longest stretch before ``workload_start`` that touches no sync-pulse block (a
  block is kept clear by :data:`PULSE_SETTLE_S` after its end, while meters' windows empty).
- ``pulses_<k>``: each ``pulse_start`` .. ``pulse_end`` block, k = 1, 2, ... in time order.
- marker intervals, from ``mark`` events (``detail.mark`` is the name given to ``hwval.mark``):

  * a mark ``NAME_start`` opens an interval that the next ``NAME`` or ``NAME_end`` mark closes
    (``epoch_start`` .. ``epoch``, ``train_start`` .. ``train_end``);
  * any other mark ``NAME`` runs to the next mark of the same name ("epoch k to k + 1"); the
    last one of its name runs to the next mark of any name, or to ``workload_end``.

  The phase is called ``NAME_<k>``: k is the mark's own ``detail[NAME]`` when that is an
  integer (``hwval.mark("epoch", epoch=3)`` -> ``epoch_3``), else its ordinal (1, 2, ...).
  A name that would clash with another phase gets the prefix ``mark_``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from hwval.runfile.schema import EventName

#: Seconds after a pulse block's end that are not counted as idle.
PULSE_SETTLE_S = 2.0


@dataclass(frozen=True)
class Phase:
    name: str
    kind: str            # "workload" | "idle" | "pulses" | "mark"
    start_s: float
    stop_s: float
    mark: str = ""       # kind "mark": the mark's name
    index: int = 0       # pulses and marks: k
    detail: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def duration_s(self) -> float:
        return self.stop_s - self.start_s

    def attrs(self) -> dict[str, Any]:
        return {"phase_kind": self.kind, "phase_start_s": self.start_s, "phase_stop_s": self.stop_s,
                "phase_mark": self.mark, "phase_index": self.index, "phase_detail": self.detail}


def _first(events: Iterable[Any], name: str) -> float | None:
    for e in events:
        if e.name == name and e.stream == "":
            return e.t
    return None


def workload_window(events: list[Any], span_s: tuple[float, float]) -> tuple[float, float, str]:
    """``(start_s, stop_s, how)``: workload_start..workload_end, clipped to the recorded span;
    the whole span (``how`` says so) when the run has no workload events."""
    start, stop = _first(events, EventName.WORKLOAD_START), None
    for e in events:
        if e.name == EventName.WORKLOAD_END and e.stream == "":
            stop = e.t
    lo, hi = span_s
    if start is None:
        return lo, hi, "whole recording (the run has no workload_start event)"
    if stop is None:
        return max(start, lo), hi, "workload_start to the end of the recording (no workload_end event)"
    return max(start, lo), min(stop, hi), "workload_start to workload_end"


def pulse_blocks(events: list[Any]) -> list[tuple[float, float]]:
    blocks, open_at = [], None
    for e in events:
        if e.name == EventName.PULSE_START:
            open_at = e.t
        elif e.name == EventName.PULSE_END and open_at is not None:
            blocks.append((open_at, e.t))
            open_at = None
    return blocks


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or EventName.MARK


def _index(detail: dict[str, Any], key: str, ordinal: int) -> int:
    value = detail.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return ordinal


def mark_phases(events: list[Any], workload_end_s: float) -> list[Phase]:
    """Marker intervals (module docstring), in the order they start."""
    marks = [e for e in events if e.name == EventName.MARK and isinstance(e.detail.get("mark"), str)]
    names = {m.detail["mark"] for m in marks}
    closers: set[int] = set()
    openers: set[int] = set()
    phases: list[Phase] = []
    ordinals: dict[str, int] = {}
    for i, m in enumerate(marks):
        name = m.detail["mark"]
        if name.endswith("_start") and (name[:-6] in names or f"{name[:-6]}_end" in names):
            base = name[:-6]
            for j in range(i + 1, len(marks)):
                if j not in closers and marks[j].detail["mark"] in (base, f"{base}_end"):
                    closers.add(j)
                    openers.add(i)
                    ordinals[base] = ordinals.get(base, 0) + 1
                    k = _index(m.detail, base, ordinals[base])
                    phases.append(Phase(f"{_safe(base)}_{k}", kind="mark", start_s=m.t, stop_s=marks[j].t,
                                        mark=base, index=k,
                                        detail={key: v for key, v in m.detail.items() if key != "mark"}))
                    break
    for i, m in enumerate(marks):
        name = m.detail["mark"]
        if i in closers or i in openers:
            continue
        stop = None
        for j in range(i + 1, len(marks)):
            if marks[j].detail["mark"] == name:
                stop = marks[j].t
                break
        if stop is None:
            later = [marks[j].t for j in range(i + 1, len(marks)) if marks[j].t > m.t]
            stop = later[0] if later else workload_end_s
        if stop <= m.t:
            continue
        ordinals[name] = ordinals.get(name, 0) + 1
        k = _index(m.detail, name, ordinals[name])
        phases.append(Phase(f"{_safe(name)}_{k}", kind="mark", start_s=m.t, stop_s=stop, mark=name, index=k,
                            detail={key: v for key, v in m.detail.items() if key != "mark"}))
    phases.sort(key=lambda p: (p.start_s, p.name))
    return phases


def find_phases(events: list[Any], span_s: tuple[float, float]) -> list[Phase]:
    """Every phase of the run within ``span_s`` (the recorded span), workload first."""
    start, stop, _ = workload_window(events, span_s)
    has_workload = _first(events, EventName.WORKLOAD_START) is not None
    out: list[Phase] = []
    if has_workload:
        out.append(Phase("workload", "workload", start, stop))
    blocks = pulse_blocks(events)
    if has_workload:
        idle = _longest_free(span_s[0], start, blocks)
        if idle is not None:
            out.append(Phase("idle", "idle", *idle))
    for k, (a, b) in enumerate(blocks, 1):
        out.append(Phase(f"pulses_{k}", "pulses", a, b, index=k))
    taken = {p.name for p in out}
    for p in mark_phases(events, stop):
        name = p.name
        while name in taken:
            name = f"mark_{name}"
        taken.add(name)
        out.append(Phase(name, p.kind, p.start_s, p.stop_s, p.mark, p.index, p.detail))
    return out


def _longest_free(lo: float, hi: float, blocks: list[tuple[float, float]]) -> tuple[float, float] | None:
    """The longest sub-interval of [lo, hi] clear of every block (+ settling)."""
    cuts = sorted((a, b + PULSE_SETTLE_S) for a, b in blocks if a < hi and b + PULSE_SETTLE_S > lo)
    best, cursor = None, lo
    for a, b in cuts + [(hi, hi)]:
        if a > cursor and (best is None or a - cursor > best[1] - best[0]):
            best = (cursor, min(a, hi))
        cursor = max(cursor, b)
    if best is None or best[1] <= best[0]:
        return None
    return best
