"""Start-up time of the sync-pulse CPU workers (``hwval.workloads.pulses.LoadPool``) with each
multiprocessing start method, from a process that runs threads (as the capture's recorder does).

Usage: python benchmarks/pulse_worker_start.py [--repeats 5] [--cpus N]

Each repeat runs in a fresh interpreter, so a fork server's own start is in the first figure;
the second pool of the same process reuses it. The time is from the call to the constructor's
return (every worker has reported ready); ``hwval capture --sync-pulses`` starts the pool before
the first settling, so this delays the capture's first block, never a chip.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, threading, time
from hwval.workloads.pulses import LoadPool
stop = threading.Event()
lock = threading.Lock()
def busy():          # threads that take a lock and wake often, like the recorder's
    while not stop.is_set():
        with lock:
            time.sleep(0.001)
threads = [threading.Thread(target=busy, daemon=True) for _ in range(3)]
for t in threads:
    t.start()
method, cpus = sys.argv[1], int(sys.argv[2])
out = []
for _ in range(2):
    t0 = time.perf_counter()
    pool = LoadPool(cpus, cpu_start=method)
    out.append(time.perf_counter() - t0)
    pool.close()
stop.set()
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cpus", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()
    print(f"{args.cpus} CPU workers, {args.repeats} fresh processes per method, load {os.getloadavg()[0]:.1f}")
    print(f"{'method':<11} {'first pool ms (median, max)':>28} {'second pool ms (median, max)':>30}")
    for method in ("fork", "forkserver", "spawn"):
        first, second = [], []
        for _ in range(args.repeats):
            res = subprocess.run([sys.executable, "-c", CHILD, method, str(args.cpus)],
                                 capture_output=True, text=True, check=True)
            a, b = json.loads(res.stdout)
            first.append(a * 1e3)
            second.append(b * 1e3)
        print(f"{method:<11} {statistics.median(first):>18.0f} {max(first):>9.0f} "
              f"{statistics.median(second):>20.0f} {max(second):>9.0f}")


if __name__ == "__main__":
    main()
