"""CPU cost of handing an array instrument's acquisition to the recorder: 1000 readings emitted
one dict at a time (what the n6705 driver did) against one ``emit_block``.

Usage: python benchmarks/block_emit.py [--acquisitions 200] [--points 1000]

Both paths run the real recorder (source thread context, queue, dispatcher building pages)
with an in-memory subscriber, so the figure covers everything up to the HDF5 writer. CPU is
this process's user+system time divided by the readings stored.
"""

from __future__ import annotations

import argparse
import resource
import threading
import time

import numpy as np

from hwval.capture.recorder import Recorder
from hwval.runfile.documents import Page, Start
from hwval.sources.base import Key, StreamInfo

KEYS = (Key("power_w", "W", "instant"), Key("power_uncertainty_w", "W"),
        Key("voltage_v", "V", "instant"), Key("current_a", "A", "instant"))


class Acquisitions:
    """A streaming source replaying ``n`` prepared acquisitions as fast as it can."""

    mode = "streaming"
    period_s = None

    def __init__(self, n: int, points: int, as_block: bool) -> None:
        rng = np.random.default_rng(1)
        self.arrays = [{k.name: rng.uniform(1, 100, points) for k in KEYS} for _ in range(n)]
        self.times = [np.arange(points, dtype=np.int64) * 100_000 + i * points * 100_000
                      for i in range(n)]
        self.as_block = as_block
        self.done = threading.Event()

    def open(self, ctx):
        return [StreamInfo("rail", "hardware", "bench", "mem", "dc", None, KEYS)]

    def run(self, ctx):
        for t, arrays in zip(self.times, self.arrays):
            if self.as_block:
                ctx.emit_block("rail", t, arrays)
            else:  # the old path: one dict per sample
                for i, t_ns in enumerate(t.tolist()):
                    ctx.emit("rail", {k: float(a[i]) for k, a in arrays.items()}, t_ns=t_ns)
        self.done.set()
        ctx.stop.wait()

    def close(self):
        pass


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(n: int, points: int, as_block: bool) -> tuple[float, int]:
    source = Acquisitions(n, points, as_block)
    stored = [0]

    def subscriber(doc):
        if isinstance(doc, Page):
            stored[0] += len(doc.t)

    rec = Recorder(Start("bench", "now", "host", [], 0, time.time_ns(), "{}", "0"), [subscriber],
                   queue_size=10_000_000)
    rec.add_source("rail", source)
    c0 = cpu_s()
    rec.start()
    source.done.wait()
    rec.finish(0)
    return cpu_s() - c0, stored[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acquisitions", type=int, default=200)
    parser.add_argument("--points", type=int, default=1000)
    args = parser.parse_args()
    print(f"{args.acquisitions} acquisitions of {args.points} samples, 4 keys, through the recorder")
    for label, as_block in (("emit per sample", False), ("emit_block", True)):
        cpu, stored = measure(args.acquisitions, args.points, as_block)
        assert stored == args.acquisitions * args.points, stored
        print(f"  {label:<16} {cpu * 1e6 / stored:7.3f} us CPU per reading "
              f"({cpu * 1e3 / args.acquisitions:.2f} ms per acquisition)")


if __name__ == "__main__":
    main()
