"""A run for the report tests: the synchroniser's simulated bench (pulses before and after a
workload of plateaus), a software stream with a hostile name, marks with hostile text and a
device identity carrying markup, written through the capture's own HDF5 writer."""

from __future__ import annotations

import json
import uuid

from hwval.benchmodel import MeterModel
from hwval.capture.hdf5_writer import HDF5Writer
from hwval.runfile.documents import Descriptor, Event, Page, Start, Stop
from hwval.sources.base import Key, StreamInfo
from hwval.sync.simulate import Meter, Scenario, build

HOSTILE_STREAM = "<script>alert('stream')"       # HDF5 names cannot hold '/'
HOSTILE_MARK = "<script>alert('mark')</script>"
HOSTILE_IDENTITY = '<img src=x onerror="alert(1)">'


def meters() -> list[Meter]:
    return [Meter("wall", 10.0, MeterModel(window_s=0.1, latency_s=0.04, noise_w=0.05, quantum_w=0.1),
                  "window_mean", 0.1, 5e-4, driver="wt300"),
            Meter("rapl_package_0", 50.0, MeterModel(latency_s=0.001, gain=0.4), "counter", kind="software",
                  driver="rapl", scope="cpu_package", energy_unit_j=15.3e-6),
            Meter(HOSTILE_STREAM, 10.0, MeterModel(window_s=0.5, latency_s=0.15, noise_w=0.2, gain=0.5),
                  "window_mean", None, 3e-4, kind="software", driver="nvml", scope="gpu")]


def write_report_run(path, seed: int = 3, cut_wall_s: tuple[float, float] | None = None) -> dict:
    """``cut_wall_s``: (from, to) seconds after the workload starts whose wall readings are left
    out with no gap event (a timing gap only the readings' spacing shows)."""
    sc = Scenario(meters(), seed=seed, chip_s=1.0, settle_s=4.0, tail_s=4.0, workload_s=30.0)
    built, data = build(sc)
    start = next(t for t, name, _ in built.events if name == "workload_start")
    marks = [(start + 5.0, {"mark": "epoch_start", "epoch": 1}), (start + 14.0, {"mark": "epoch", "epoch": 1}),
             (start + 20.0, {"mark": HOSTILE_MARK})]
    w = HDF5Writer(str(path))
    w(Start(str(uuid.uuid4()), "2026-12-01T10:00:00Z", "simhost", ["python", "train.py", HOSTILE_MARK],
            10 ** 12, 1_764_583_200 * 10 ** 9, json.dumps({}), "simulate"))
    for m in sc.meters:
        keys = (Key("energy_j", "J", "counter", None),) if m.semantics == "counter" else \
            (Key("power_w", "W", m.semantics, m.declared_window_s),)
        w(Descriptor(StreamInfo(m.name, m.kind, m.driver, "simulated", m.scope, m.period_s, keys,
                                {"model": HOSTILE_IDENTITY, "serial": f"SIM-{m.driver}"}, True)))
    for m in sc.meters:
        t, v = data[m.name]
        if cut_wall_s is not None and m.name == "wall":
            keep = (t < start + cut_wall_s[0]) | (t >= start + cut_wall_s[1])
            t, v = t[keep], v[keep]
        w(Page(m.name, t, {"energy_j" if m.semantics == "counter" else "power_w": v}))
    events = [(t, name, dict(d)) for t, name, d in built.events] + [(t, "mark", d) for t, d in marks]
    for t, name, detail in sorted(events, key=lambda e: e[0]):
        w(Event(float(t), name, "", detail))
    w(Stop(0, True, {m.name: {"dropped": 0, "error_counts": {}, "missed_deadlines": 0} for m in sc.meters}))
    return {"timings": built.timings, "start_s": start}
