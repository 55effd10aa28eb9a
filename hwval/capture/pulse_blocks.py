"""``hwval capture --sync-pulses``: one sync-pulse block before the workload and one after it.

Each block is preceded by idle settling, and the last one is followed by as much again plus the
slowest meter's lag (:func:`meter_lag_s`), so that every meter has reported the last chip (its
lag plus window) before the capture stops. The blocks
are played by :func:`hwval.workloads.pulses.play_block` on one :class:`LoadPool` started for the
capture, and their events go through the capture's marker channel (:meth:`MarkerServer.record`),
stamped like a workload's ``hwval.mark``: the run file is the same as with
``python -m hwval.workloads.pulses`` run around the workload, so ``hwval sync`` and the analysis
phases (``pulses_1``, ``pulses_2``) read it the same way. Two blocks give the drift.

The chip length follows the slowest meter (:func:`chip_length_s`) unless ``--pulse-chip-s`` is
given. A signal during a block ends that block early (its ``pulse_end`` has ``aborted: true``);
during the first block it also skips the workload and the second block. A signal during the
workload (forwarded to it) or the ``--duration`` wait skips the second block (a ``signal`` event
says so): the operator asked to stop. A ``--duration`` that runs out still plays it.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

from hwval.clock import now_ns
from hwval.sources.base import StreamInfo
from hwval.workloads.pulses import LoadPool, chip_length_s as _chip_for_meters, pattern_levels, play_block, visible_gpus

PATTERN = "barker13"
#: Idle before each block, in chips, and at least this many seconds: the meters settle at the
#: idle floor and the fit gets a flat stretch before the first edge.
SETTLE_CHIPS = 2.0
MIN_SETTLE_S = 1.0


class PulseOptionError(ValueError):
    """A bad ``--pulse-chip-s``; the message says what is accepted."""


def meter_timing(infos: Iterable[StreamInfo]) -> list[tuple[float, float]]:
    """``(period_s, window_s)`` of every stream with a known period. A stream whose window is
    unknown is taken to average over its period (what a meter that reports means does)."""
    out = []
    for info in infos:
        period = info.period_s
        if not period or period <= 0:
            continue
        windows = [k.window_s for k in info.keys if k.window_s]
        out.append((float(period), float(max(windows)) if windows else float(period)))
    return out


#: Shortest chip accepted: a 10 ms chip is already a few scheduler quanta and far below any
#: meter's update period, so a shorter one could not be seen by anything recorded.
MIN_CHIP_S = 0.01
MAX_CHIP_S = 3600.0


def chip_length_s(infos: Iterable[StreamInfo], chip_s: float | None = None) -> float:
    """``chip_s`` when given (MIN_CHIP_S .. MAX_CHIP_S), else the chip the slowest recorded meter needs."""
    if chip_s is not None:
        # NaN fails both comparisons, so it is refused with the rest
        if not MIN_CHIP_S <= chip_s < MAX_CHIP_S:
            raise PulseOptionError(f"--pulse-chip-s {chip_s}: must be from {MIN_CHIP_S:g} s to under "
                                   f"{MAX_CHIP_S:g} s (shorter chips are below the scheduler's and every "
                                   f"meter's resolution)")
        return float(chip_s)
    return _chip_for_meters(meter_timing(infos))


#: Identity fields that say how late a stream's reading can come after the power it reports, in
#: seconds: a latency the source declares, NVML's detected board update period, a WT300's update
#: interval (its reading is ready only when the interval ends).
LAG_FIELDS = ("latency_s", "update_period_s", "update_s")
#: Lag taken for a hardware stream that declares none: smart plugs report with a latency of
#: hundreds of milliseconds (docs/measurement.md, "Hardware meters"). A software stream that
#: declares none is read from the host itself (RAPL's counters update about every millisecond,
#: docs/measurement.md, "RAPL"): no lag is added for it.
UNDECLARED_HARDWARE_LAG_S = 1.0


def meter_lag_s(info: StreamInfo) -> float:
    """How late ``info``'s readings may follow the power: the largest lag field of its identity,
    else :data:`UNDECLARED_HARDWARE_LAG_S` for a hardware stream, 0 for a software one."""
    declared = [float(v) for v in (info.identity.get(k) for k in LAG_FIELDS)
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0]
    if declared:
        return max(declared)
    return UNDECLARED_HARDWARE_LAG_S if info.kind == "hardware" else 0.0


@dataclass
class PulsePlan:
    chip_s: float
    settle_s: float
    #: Idle after the last block: the settling plus the slowest meter's lag, so the last chip's
    #: readings arrive and the fit still has a flat stretch after them.
    tail_s: float
    pattern: str = PATTERN


def plan(infos: Iterable[StreamInfo], chip_s: float | None = None) -> PulsePlan:
    infos = list(infos)
    chip = chip_length_s(infos, chip_s)
    settle = max(MIN_SETTLE_S, SETTLE_CHIPS * chip)
    return PulsePlan(chip_s=chip, settle_s=settle, tail_s=settle + max(map(meter_lag_s, infos), default=0.0))


def _gpus(infos: Iterable[StreamInfo]) -> list[int]:
    # Only when NVML records a GPU: finding CUDA means importing torch in the capture process,
    # which a CPU-only capture should not pay for.
    if not any(i.driver == "nvml" for i in infos):
        return []
    return list(range(visible_gpus()))


class PulseRunner:
    """The load pool and the blocks of one capture.

    ``record(name, t_ns, detail, pid)`` is the marker channel (the capture's MarkerServer.record).
    """

    def __init__(self, pulse_plan: PulsePlan, infos: Iterable[StreamInfo],
                 record: Callable[[str, int, dict, int | None], None]) -> None:
        infos = list(infos)
        self.plan = pulse_plan
        self.levels = pattern_levels(pulse_plan.pattern)
        self._record = record
        self.stop = threading.Event()
        self.pool = LoadPool(len(os.sched_getaffinity(0)), _gpus(infos))
        self.blocks_played = 0

    def _mark(self, name: str, **detail) -> None:
        self._record(name, now_ns(), detail, os.getpid())

    def block(self) -> bool:
        """Settle, then play one block; False when a stop came (the block was cut short or never
        started)."""
        if self.stop.wait(self.plan.settle_s):
            return False
        play_block(self.pool, self.plan.pattern, self.levels, self.plan.chip_s, self._mark, stop=self.stop)
        self.blocks_played += 1
        return not self.stop.is_set()

    def tail(self) -> None:
        """Idle after the last block, so every meter reports its last chip."""
        self.stop.wait(self.plan.tail_s)

    def close(self) -> None:
        self.pool.close()
