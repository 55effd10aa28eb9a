"""CPU cost of the capture process per reading, and scheduling error, at 100 Hz, 1 kHz and
5 kHz aggregate, with sources that cost nothing themselves.

Usage: python benchmarks/capture_overhead.py [--seconds 10]

Each rate runs the real capture pipeline in this process (recorder threads, dispatcher,
crash journal, HDF5 writer) for the given seconds with 4 zero-cost polled sources sharing the
aggregate rate. CPU is this process's user+system time over the capture divided by its wall
time (% of one core). Scheduling error is (time the read started - its deadline).
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import tempfile
import time


from hwval.capture.lateness import LatenessStats

from hwval.capture.session import CaptureRequest, run_capture
from hwval.config import CaptureConfig, SoftwareConfig, parse_meter_spec
from hwval.sources.base import Key, SourceSpec, StreamInfo
from hwval.sources.registry import Registry

SOURCES = 4


class NullSource:
    """Returns a constant reading: the recorder's cost is all that is measured."""

    mode = "polled"

    def __init__(self, spec: SourceSpec):
        self.name = spec.name
        self.period_s = spec.period_s
        self.reading = {self.name: {"power_w": 1.0}}

    def open(self, ctx):
        return [StreamInfo(self.name, "software", "null", "", "wall", self.period_s, (Key("power_w", "W", "instant"),))]

    def read(self):
        return self.reading

    def close(self):
        pass


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(rate_hz: float, seconds: float) -> dict:
    registry = Registry().with_driver("null", NullSource)
    period = SOURCES / rate_hz
    specs = [parse_meter_spec(f"null:x?name=s{i}&period_s={period}", registry.names()) for i in range(SOURCES)]
    cfg = CaptureConfig(software=SoftwareConfig(nvml=False, rapl=False), meters=tuple(specs))
    holder = {}

    def started(rec):
        holder["rec"] = rec
        holder["cpu0"], holder["wall0"] = cpu_s(), time.monotonic()

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench.h5")
        run_capture(CaptureRequest(config=cfg, duration_s=seconds, output=out, live=False,
                                   registry=registry, notes=io.StringIO(), on_started=started))
        cpu, wall = cpu_s() - holder["cpu0"], time.monotonic() - holder["wall0"]
    rec = holder["rec"]
    readings = sum(s.readings for s in rec.stats.values())
    late = LatenessStats.pooled([r.lateness for r in rec.runners])
    missed = sum(r.missed_deadlines for r in rec.runners)
    return {"rate_hz": rate_hz, "readings": readings, "cpu_pct_core": 100 * cpu / wall,
            "cpu_us_per_reading": 1e6 * cpu / max(readings, 1), "late_median_ms": late.quantile_ns(0.5) / 1e6,
            "late_p99_ms": late.quantile_ns(0.99) / 1e6, "late_max_ms": late.max_ns / 1e6,
            "missed": missed, "dropped": sum(s.dropped for s in rec.stats.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    print(f"{SOURCES} zero-cost polled sources, {args.seconds:.0f} s per rate, os.cpu_count()={os.cpu_count()}")
    print(f"{'aggregate':>10} {'readings':>9} {'CPU % core':>11} {'us/reading':>11} "
          f"{'late med ms':>12} {'late p99 ms':>12} {'late max ms':>12} {'missed':>7} {'dropped':>8}")
    for rate in (100.0, 1000.0, 5000.0):
        r = run(rate, args.seconds)
        print(f"{rate:>8.0f}Hz {r['readings']:>9} {r['cpu_pct_core']:>11.2f} {r['cpu_us_per_reading']:>11.1f} "
              f"{r['late_median_ms']:>12.3f} {r['late_p99_ms']:>12.3f} {r['late_max_ms']:>12.3f} "
              f"{r['missed']:>7} {r['dropped']:>8}")


if __name__ == "__main__":
    main()
