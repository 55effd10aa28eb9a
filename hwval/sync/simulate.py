"""Run files with known timing, built from the bench model, to check the synchroniser.

A :class:`Scenario` is a host whose true power follows a :class:`~hwval.benchmodel.PowerProfile`
(idle, sync-pulse blocks, a workload of random plateaus) and meters that see it through a
:class:`~hwval.benchmodel.MeterModel` (window, latency, gain, offset, noise, quantisation, clock
drift) at their own rate, with receipt-stamp jitter. :func:`write_run` writes it through the
capture's own HDF5 writer (Start, Descriptor, Page, Event, Stop documents), with the pulse
events a real generator records; :func:`truth` gives each stream's true :class:`Timing`.

The readings follow :meth:`MeterModel.reading_w` exactly (vectorised here: a long run has
hundreds of thousands of readings): a reading taken at bench time ``tau`` reports the mean true
power over the window ending at ``tau * (1 + drift) - latency``. Stamped ``t = tau + jitter``,
its lag is ``latency + jitter - drift * tau``: the true Timing is ``lag_s = latency``,
``drift_ppm = -drift_ppm(meter clock)``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import numpy as np

from hwval.benchmodel import MeterModel, PowerProfile
from hwval.capture.hdf5_writer import HDF5Writer
from hwval.runfile.documents import Descriptor, Event, Page, Start, Stop
from hwval.sources.base import Key, StreamInfo
from hwval.sync.timing import Timing

BARKER13 = (1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 0, 1)
PAGE_ROWS = 1 << 16


@dataclass(frozen=True)
class Meter:
    """One simulated stream: how it sees the host (``model``), how often and how it reports."""

    name: str
    rate_hz: float
    model: MeterModel
    semantics: str = "window_mean"          # window_mean | instant | counter
    declared_window_s: float | None = None  # the dataset attr (None: unknown)
    jitter_s: float = 0.0                   # receipt-stamp jitter (standard deviation)
    kind: str = "hardware"
    driver: str = "synthetic"
    scope: str = "wall"
    energy_unit_j: float = 0.0              # counter resolution (RAPL: 15.3e-6 J)

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz


@dataclass
class Scenario:
    meters: list[Meter]
    seed: int = 0
    idle_w: float = 60.0
    pulse_w: float = 80.0                   # dynamic power of one pulse chip (all cores busy)
    chip_s: float = 1.0
    levels: tuple[int, ...] = BARKER13
    settle_s: float = 5.0
    tail_s: float = 5.0
    workload_s: float = 60.0
    blocks: str = "both"                    # both | before | none
    chip_jitter_s: float = 1e-3             # how late each chip really starts (scheduling)
    gaps: list[tuple[str, float, float]] = field(default_factory=list)   # (stream, start, stop)
    never_reacts: tuple[str, ...] = ()      # streams that see only idle power


@dataclass
class Built:
    profile: PowerProfile
    timings: dict[str, Timing]
    events: list[tuple[float, str, dict]]
    span_s: tuple[float, float]


def _plan(sc: Scenario, rng: np.random.Generator):
    """Segments of the host's true power, and the events a pulse generator and a workload record."""
    segs: list[tuple[float, float]] = []
    events: list[tuple[float, str, dict]] = []
    t = 0.0

    def add(p, d):
        nonlocal t
        segs.append((p, d))
        t += d

    def block():
        add(sc.idle_w, sc.settle_s)
        starts = [t + i * sc.chip_s + rng.uniform(0, sc.chip_jitter_s) for i in range(len(sc.levels))]
        starts[0] = t + rng.uniform(0, sc.chip_jitter_s)
        end = t + len(sc.levels) * sc.chip_s
        events.append((t, "pulse_start", {"pattern": "barker13", "chip_s": sc.chip_s, "levels": list(sc.levels),
                                          "targets": ["cpu"]}))
        add(sc.idle_w, starts[0] - t)
        for i, lv in enumerate(sc.levels):
            nxt = starts[i + 1] if i + 1 < len(starts) else end
            events.append((starts[i], "pulse_chip", {"index": i, "level": lv}))
            add(sc.idle_w + lv * sc.pulse_w, nxt - starts[i])
        events.append((end, "pulse_end", {}))
        add(sc.idle_w, sc.tail_s)

    if sc.blocks in ("both", "before"):
        block()
    else:
        add(sc.idle_w, sc.settle_s)
    events.append((t, "workload_start", {}))
    stop = t + sc.workload_s
    while t < stop - 1e-9:
        add(sc.idle_w + rng.uniform(0.1, 1.0) * sc.pulse_w, min(rng.uniform(2.0, 15.0), stop - t))
    events.append((t, "workload_end", {"exit_code": 0}))
    if sc.blocks == "both":
        block()
    else:
        add(sc.idle_w, sc.tail_s)
    end = t
    add(sc.idle_w, 1e6)          # the profile repeats after its cycle: keep it idle long after the run
    return PowerProfile(tuple(segs)), events, end


def _cumulative(profile: PowerProfile):
    d = np.array([s[1] for s in profile.segments])
    p = np.array([s[0] for s in profile.segments])
    x = np.concatenate([[0.0], np.cumsum(d)])
    e = np.concatenate([[0.0], np.cumsum(p * d)])
    return x, e, p


def _readings(m: Meter, profile: PowerProfile, end_s: float, rng: np.random.Generator, idle_only: bool, idle_w: float):
    x, e, p = _cumulative(profile)
    if idle_only:
        x, e, p = np.array([0.0, 1e7]), np.array([0.0, idle_w * 1e7]), np.array([idle_w])
    tau = np.arange(rng.uniform(0, m.period_s), end_s, m.period_s)
    stamp = tau + rng.normal(0.0, m.jitter_s, len(tau)) if m.jitter_s else tau.copy()
    stamp = np.maximum.accumulate(stamp)
    mm = m.model
    win_end = tau * (1.0 + mm.drift_ppm * 1e-6) - mm.latency_s
    energy = lambda xx: np.interp(xx, x, e)                                   # noqa: E731
    if m.semantics == "counter":
        c = mm.gain * energy(win_end) + mm.offset_w * win_end
        if m.energy_unit_j:
            c = np.floor(c / m.energy_unit_j) * m.energy_unit_j
        return stamp, c - c[0]
    if mm.window_s > 0:
        mean = (energy(win_end) - energy(win_end - mm.window_s)) / mm.window_s
    else:
        mean = p[np.clip(np.searchsorted(x, win_end, side="right") - 1, 0, len(p) - 1)]
    v = mm.gain * mean + mm.offset_w
    if mm.noise_w:
        v = v + rng.normal(0.0, mm.noise_w, len(v))
    v = np.maximum(v, 0.0)
    if mm.quantum_w:
        v = np.round(v / mm.quantum_w) * mm.quantum_w
    return stamp, v


def build(sc: Scenario) -> tuple[Built, dict[str, tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(sc.seed)
    profile, events, end = _plan(sc, rng)
    data, timings = {}, {}
    for m in sc.meters:
        t, v = _readings(m, profile, end, rng, m.name in sc.never_reacts, sc.idle_w)
        for name, g0, g1 in sc.gaps:
            if name == m.name:
                keep = (t < g0) | (t > g1)
                t, v = t[keep], v[keep]
        data[m.name] = (t, v)
        timings[m.name] = Timing(lag_s=m.model.latency_s,
                                 window_s=0.0 if m.semantics == "counter" else m.model.window_s,
                                 drift_ppm=-m.model.drift_ppm, drift_origin_s=0.0)
    for name, g0, g1 in sc.gaps:
        events += [(g0, "gap_start", {"_stream": name, "error": "simulated"}), (g1, "gap_end", {"_stream": name})]
    events.sort(key=lambda ev: ev[0])
    return Built(profile, timings, events, (0.0, end)), data


def _info(m: Meter) -> StreamInfo:
    if m.semantics == "counter":
        keys = (Key("energy_j", "J", "counter", None),)
    else:
        keys = (Key("power_w", "W", m.semantics, m.declared_window_s),)
    return StreamInfo(m.name, m.kind, m.driver, "simulated", m.scope, m.period_s, keys, {"simulated": True}, True)


def write_run(path, sc: Scenario) -> Built:
    """Write the scenario's run file through the capture's HDF5 writer; returns the truth."""
    built, data = build(sc)
    w = HDF5Writer(str(path))
    w(Start(str(uuid.uuid4()), "2026-12-01T10:00:00Z", "simhost", ["python", "-m", "hwval.workloads.pulses"],
            10 ** 12, 1_764_583_200 * 10 ** 9, json.dumps({"simulated": True, "seed": sc.seed}), "simulate"))
    for m in sc.meters:
        w(Descriptor(_info(m)))
    for m in sc.meters:
        t, v = data[m.name]
        key = "energy_j" if m.semantics == "counter" else "power_w"
        for lo in range(0, len(t), PAGE_ROWS):
            w(Page(m.name, t[lo:lo + PAGE_ROWS], {key: v[lo:lo + PAGE_ROWS]}))
    for t, name, detail in built.events:
        detail = dict(detail)
        stream = detail.pop("_stream", "")
        w(Event(float(t), name, stream, detail))
    w(Stop(0, True, {m.name: {"dropped": 0, "error_counts": {}, "missed_deadlines": 0} for m in sc.meters}))
    return built


def lag_error_share(est: Timing, true: Timing, at_s: list[float], period_s: float) -> list[float]:
    """|estimated - true lag| at each time, as a share of the reporting period."""
    return [abs(float(est.lag_at(t)) - float(true.lag_at(t))) / period_s for t in at_s]


__all__ = ["BARKER13", "Built", "Meter", "Scenario", "build", "lag_error_share", "write_run"]
