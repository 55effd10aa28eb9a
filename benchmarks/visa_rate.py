"""How fast the VISA drivers can talk to an analyzer, and whether they keep up with it.

Prints:
1. SCPI queries per second through pyvisa-py to the WT310 emulator running as its own process
   (``hwval emulate wt300``), for the status query and the numeric-values query;
2. for each WT310 update interval: updates the ``wt300`` driver read per second vs the
   configured rate, with reads of the same update twice and updates missed (in-process emulator,
   whose log of served updates is the ground truth);
3. for the N6705C array mode: samples per second delivered vs the digitizer rate (the gap is the
   query round trip between acquisitions), ASCII vs binary REAL blocks.

Run: ``python benchmarks/visa_rate.py [--seconds 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pyvisa

from hwval.benchmodel import Bench, MeterModel, PowerProfile
from hwval.emulators.n6705 import N6705
from hwval.emulators.scpi_server import ScpiServer
from hwval.emulators.wt300 import Wt300
from hwval.sources.base import SourceSpec
from hwval.sources.visa import n6705, wt300


class NullContext:
    def __init__(self) -> None:
        self.stop = threading.Event()
        self.samples = 0

    def emit(self, stream, values, t_ns=None) -> None:
        self.samples += 1

    def emit_block(self, stream, t_ns, values) -> None:
        self.samples += len(t_ns)

    def event(self, name, stream="", t_ns=None, **detail) -> None:
        return None

    def count_error(self, stream, kind, message="") -> None:
        print(f"    error {kind}: {message}")


def queries_per_second(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ready = os.path.join(tmp, "ready.json")
        proc = subprocess.Popen([sys.executable, "-m", "hwval.cli", "emulate", "wt300", "--port", "0",
                                 "--ready-file", ready], stdout=subprocess.DEVNULL)
        try:
            while not os.path.exists(ready):
                time.sleep(0.05)
            resource = json.load(open(ready))["resource"]
            rm = pyvisa.ResourceManager("@py")
            inst = rm.open_resource(resource, read_termination="\n", write_termination="\n", timeout=2000)
            print(f"1. queries/s through pyvisa-py to the emulator process ({resource})")
            for query in (":STAT:EESR?", ":NUM:NORM:VAL?"):
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds:
                    inst.query(query)
                    n += 1
                dt = time.perf_counter() - t0
                print(f"   {query:<16} {n / dt:8.0f} queries/s  ({dt / n * 1e6:.0f} us round trip)")
            inst.close()
            rm.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)


def update_rates(seconds: float) -> None:
    print("2. wt300 driver: updates read vs configured update rate (polled at update/4)")
    for update_s in (0.1, 0.25, 0.5):
        inst = Wt300(Bench(PowerProfile.parse("idle-load")), MeterModel())
        with ScpiServer(inst) as server:
            src = wt300.create(SourceSpec("wt300", server.resource, "wall", None, {"update_s": update_s}))
            ctx = NullContext()
            src.open(ctx)
            queries0 = src.session.transport.exchanges
            reads, deadline = 0, time.monotonic()
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                deadline += src.period_s
                time.sleep(max(0.0, deadline - time.monotonic()))
                reads += len(src.read())
            dt = time.monotonic() - t0
            queries = src.session.transport.exchanges - queries0
            src.close()
        served = inst.clock.served
        twice = sum(1 for a, b in zip(served, served[1:]) if b == a)
        missed = sum(max(0, b - a - 1) for a, b in zip(served, served[1:]))
        print(f"   update_s={update_s:<5} configured {1 / update_s:5.2f}/s  achieved {reads / dt:5.2f}/s  "
              f"read twice {twice}  missed {missed}  ({queries / dt:.0f} queries/s)")


def array_rates(seconds: float) -> None:
    print("3. n6705 driver: samples/s delivered vs digitizer rate (1000 points per acquisition)")
    for fmt in ("ascii", "real"):
        inst = N6705(Bench(PowerProfile.parse("bursty")), MeterModel())
        with ScpiServer(inst) as server:
            src = n6705.create(SourceSpec("n6705", server.resource, "rail", None,
                                          {"points": 1000, "interval_s": 1e-4, "format": fmt}))
            ctx = NullContext()
            src.open(ctx)
            timer = threading.Timer(seconds, ctx.stop.set)
            t0 = time.monotonic()
            timer.start()
            src.run(ctx)
            dt = time.monotonic() - t0
            src.close()
        rate = 1 / src.interval_s
        print(f"   format={fmt:<5} digitizer {rate:8.0f}/s  delivered {ctx.samples / dt:8.0f}/s  "
              f"(coverage {ctx.samples / dt / rate:.0%}, {src.acquisitions} acquisitions)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each measurement")
    args = parser.parse_args()
    queries_per_second(args.seconds)
    update_rates(args.seconds)
    array_rates(args.seconds)


if __name__ == "__main__":
    main()
