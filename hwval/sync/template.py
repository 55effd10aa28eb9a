"""Sync-pulse events -> the commanded power template.

The contract (README, *Run file*): ``pulse_start`` (detail ``pattern``, ``chip_s``, ``levels``
as a 0/1 list, ``targets``), one ``pulse_chip`` per chip stamped at its commanded start (detail
``index``, ``level``), and ``pulse_end`` stamped when the last chip ends. Any run file with these
events syncs, whoever wrote them. Marks recorded before the marker server mapped these names to
their own events (``mark`` with ``detail.mark = "pulse_start"``) are read the same way.

A block's template is the commanded load level, 0 or 1, as a function of time: 0 before the first
chip and after ``pulse_end``, each chip's level from its stamp to the next chip's. Its integral
``C(x)`` (s) is what the forward model needs (:mod:`hwval.sync.forward`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwval.runfile.schema import EventName

PULSE_NAMES = (EventName.PULSE_START, EventName.PULSE_CHIP, EventName.PULSE_END)


class TemplateError(ValueError):
    """The pulse events cannot make a usable template; the message says why."""


@dataclass(frozen=True)
class PulseBlock:
    """One block of chips: ``chip_t_s[i]`` the commanded start of chip ``i``, ``levels[i]`` its
    level, ``end_s`` the end of the last chip."""

    start_s: float
    end_s: float
    chip_s: float
    pattern: str
    levels: tuple[int, ...]
    chip_t_s: tuple[float, ...]
    targets: tuple[str, ...] = ()

    @property
    def knots(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x, C)``: the template's integral at its edges (piecewise linear between them)."""
        t = np.array([*self.chip_t_s, self.end_s], dtype=float)
        lv = np.asarray(self.levels, dtype=float)
        c = np.concatenate([[0.0], np.cumsum(lv * np.diff(t))])
        return t, c

    @property
    def edges_s(self) -> np.ndarray:
        """Times where the commanded level changes (rising and falling)."""
        t = np.array([*self.chip_t_s, self.end_s], dtype=float)
        lv = np.concatenate([[0], self.levels, [0]])
        return t[np.flatnonzero(np.diff(lv) != 0)]


def _pulse_name(ev) -> str | None:
    if ev.name in PULSE_NAMES:
        return ev.name
    if ev.name == EventName.MARK and ev.detail.get("mark") in PULSE_NAMES:
        return ev.detail["mark"]
    return None


def pulse_blocks(events) -> list[PulseBlock]:
    """Every complete block in the events, in time order.

    Raises :class:`TemplateError` for a block that is not complete (a ``pulse_start`` without
    its ``pulse_end``: the run ended inside it) or whose detail is malformed.
    """
    blocks: list[PulseBlock] = []
    current = None
    for ev in events:
        name = _pulse_name(ev)
        if name is None or ev.stream:
            continue
        if name == EventName.PULSE_START:
            if current is not None:
                raise TemplateError(f"pulse block at {current['t']:.3f} s has no pulse_end before the next "
                                    f"pulse_start at {ev.t:.3f} s")
            current = {"t": ev.t, "detail": ev.detail, "chips": []}
        elif name == EventName.PULSE_CHIP and current is not None:
            current["chips"].append((ev.t, ev.detail))
        elif name == EventName.PULSE_END and current is not None:
            # A block stopped before its first chip (a signal during `capture --sync-pulses`)
            # commanded nothing: there is nothing to fit.
            if current["chips"] or not ev.detail.get("aborted"):
                blocks.append(_block(current, ev.t))
            current = None
    if current is not None:
        raise TemplateError(f"the pulse block starting at {current['t']:.3f} s never ended (no pulse_end): "
                            "the run is shorter than one pulse block; record at least one whole block")
    return blocks


def _block(current: dict, end_s: float) -> PulseBlock:
    d = current["detail"]
    start = current["t"]
    try:
        chip_s = float(d.get("chip_s"))
        levels = [int(v) for v in d.get("levels", [])]
    except (TypeError, ValueError):
        raise TemplateError(f"pulse_start at {start:.3f} s: detail needs chip_s (s) and levels (0/1 list), "
                            f"got {d}") from None
    if not chip_s > 0:
        raise TemplateError(f"pulse_start at {start:.3f} s: chip_s must be > 0 (got {chip_s})")
    chips = current["chips"]
    if chips:
        chips = sorted(chips, key=lambda c: int(c[1].get("index", 0)))
        chip_t = [float(t) for t, _ in chips]
        levels = [int(c.get("level", levels[i] if i < len(levels) else 0)) for i, (_, c) in enumerate(chips)]
    elif levels:
        # no chip events: the nominal schedule from the block's start
        chip_t = [start + i * chip_s for i in range(len(levels))]
    else:
        raise TemplateError(f"pulse block at {start:.3f} s has neither pulse_chip events nor levels")
    if any(v not in (0, 1) for v in levels):
        raise TemplateError(f"pulse block at {start:.3f} s: levels must be 0 or 1 (got {levels})")
    if not any(levels):
        raise TemplateError(f"pulse block at {start:.3f} s commands no load (every level is 0)")
    end = max(float(end_s), chip_t[-1])
    return PulseBlock(start_s=float(start), end_s=end, chip_s=chip_s, pattern=str(d.get("pattern", "")),
                      levels=tuple(levels), chip_t_s=tuple(chip_t), targets=tuple(d.get("targets", []) or []))
