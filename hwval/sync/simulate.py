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
from hwval.runfile.schema import EventName
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
    update_s: float = 0.0                   # the meter's own update interval (0: new at every read)

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
    stop_s: float | None = None             # cut the run here (readings and events after it lost)


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
        events.append((t, EventName.PULSE_START, {"pattern": "barker13", "chip_s": sc.chip_s, "levels": list(sc.levels),
                                          "targets": ["cpu"]}))
        add(sc.idle_w, starts[0] - t)
        for i, lv in enumerate(sc.levels):
            nxt = starts[i + 1] if i + 1 < len(starts) else end
            events.append((starts[i], EventName.PULSE_CHIP, {"index": i, "level": lv}))
            add(sc.idle_w + lv * sc.pulse_w, nxt - starts[i])
        events.append((end, EventName.PULSE_END, {}))
        add(sc.idle_w, sc.tail_s)

    if sc.blocks in ("both", "before"):
        block()
    else:
        add(sc.idle_w, sc.settle_s)
    events.append((t, EventName.WORKLOAD_START, {}))
    stop = t + sc.workload_s
    while t < stop - 1e-9:
        add(sc.idle_w + rng.uniform(0.1, 1.0) * sc.pulse_w, min(rng.uniform(2.0, 15.0), stop - t))
    events.append((t, EventName.WORKLOAD_END, {"exit_code": 0}))
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
    # before 0 the host idles at the first segment's power (readings whose window starts before
    # the run); np.interp would otherwise hold the energy constant there
    x = np.concatenate([[-1e6, 0.0], np.cumsum(d)])
    e = np.concatenate([[-1e6 * p[0], 0.0], np.cumsum(p * d)])
    return x, e, np.concatenate([[p[0]], p])


def _readings(m: Meter, profile: PowerProfile, end_s: float, rng: np.random.Generator, idle_only: bool, idle_w: float):
    x, e, p = _cumulative(profile)
    if idle_only:
        x, e, p = np.array([0.0, 1e7]), np.array([0.0, idle_w * 1e7]), np.array([idle_w])
    tau = np.arange(rng.uniform(0, m.period_s), end_s, m.period_s)
    stamp = tau + rng.normal(0.0, m.jitter_s, len(tau)) if m.jitter_s else tau.copy()
    stamp = np.maximum.accumulate(stamp)
    mm = m.model
    taken = np.floor(tau / m.update_s) * m.update_s if m.update_s else tau   # value held between updates
    win_end = taken * (1.0 + mm.drift_ppm * 1e-6) - mm.latency_s
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
    if m.update_s:
        # one noise draw per update: a held value repeats exactly
        first = np.concatenate([[0], np.flatnonzero(np.diff(taken) > 0) + 1])
        v = v[first][np.searchsorted(first, np.arange(len(v)), side="right") - 1]
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
        events += [(g0, EventName.GAP_START, {"_stream": name, "error": "simulated"}),
                   (g1, EventName.GAP_END, {"_stream": name})]
    events.sort(key=lambda ev: ev[0])
    if sc.stop_s is not None:
        end = min(end, sc.stop_s)
        events = [ev for ev in events if ev[0] <= sc.stop_s]
        data = {k: (t[t <= sc.stop_s], v[t <= sc.stop_s]) for k, (t, v) in data.items()}
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


def bench_meters(rng: np.random.Generator, drift_ppm: float = 50.0) -> list[Meter]:
    """The issue's bench: a 1 Hz plug (1 s window, 0.2-0.8 s latency, 1 W steps), a 10 Hz
    analyzer (0.1 s window), NVML at 10 Hz (1 s window, 0-0.1 s latency), a RAPL counter at
    100 Hz, and a DC instrument at 20 Hz that stamps readings by its own clock, drifting
    ``drift_ppm``; receipt-stamp jitter on every stream but the self-stamped one."""
    return [
        Meter("plug", 1.0, MeterModel(window_s=1.0, latency_s=float(rng.uniform(0.2, 0.8)), quantum_w=1.0,
                                      noise_w=0.3), "window_mean", None, 3e-3, driver="tasmota"),
        Meter("wt310", 10.0, MeterModel(window_s=0.1, latency_s=float(rng.uniform(0.0, 0.05)), noise_w=0.05,
                                        quantum_w=0.01), "window_mean", 0.1, 5e-4, driver="wt300"),
        Meter("nvml_gpu0", 10.0, MeterModel(window_s=1.0, latency_s=float(rng.uniform(0.0, 0.1)), noise_w=0.3,
                                            gain=0.5, quantum_w=0.001), "window_mean", 1.0, 3e-4,
              kind="software", driver="nvml", scope="gpu"),
        Meter("rapl_package_0", 100.0, MeterModel(latency_s=float(rng.uniform(0.0, 0.002)), gain=0.4), "counter",
              None, 1e-4, kind="software", driver="rapl", scope="cpu_package", energy_unit_j=15.3e-6),
        Meter("n6705", 20.0, MeterModel(window_s=0.05, latency_s=float(rng.uniform(0.0, 0.02)), noise_w=0.05,
                                        gain=0.3, drift_ppm=float(drift_ppm * rng.choice([-1.0, 1.0]))),
              "window_mean", 0.05, 0.0, driver="n6705", scope="dc"),
    ]
