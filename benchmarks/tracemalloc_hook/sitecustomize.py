"""Benchmark-only start-up hook: tracemalloc snapshots of a process at fixed times.

``benchmarks/soak.py --tracemalloc-dir DIR`` puts this folder on the capture's PYTHONPATH, so
Python imports this file at start-up (the ``sitecustomize`` hook of the ``site`` module). It is
not part of the hwval package and does nothing unless HWVAL_TRACEMALLOC_DIR is set. It starts
tracemalloc with few frames (each frame kept costs time on every allocation: 25 slowed a 1 kHz
capture too much) and, from a daemon thread, dumps a snapshot at HWVAL_TRACEMALLOC_FIRST_S
(default 120 s) and then every HWVAL_TRACEMALLOC_EVERY_S (default 300 s), with one line per
snapshot in DIR/log.jsonl: RSS, the traced Python heap and tracemalloc's own overhead, so that
Python heap growth can be told from native (HDF5, C library) growth.
"""

import os

_DIR = os.environ.get("HWVAL_TRACEMALLOC_DIR")

if _DIR:
    import json
    import threading
    import time
    import tracemalloc

    tracemalloc.start(int(os.environ.get("HWVAL_TRACEMALLOC_FRAMES", "8")))

    def _rss_kib() -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return -1

    def _snapshots() -> None:
        t0 = time.monotonic()
        first_s = float(os.environ.get("HWVAL_TRACEMALLOC_FIRST_S", "120"))
        every_s = float(os.environ.get("HWVAL_TRACEMALLOC_EVERY_S", "300"))
        due_s, n = first_s, 0
        while True:
            time.sleep(max(0.0, due_s - (time.monotonic() - t0)))
            rss_before = _rss_kib()  # before the dump: taking a snapshot allocates a lot
            current, peak = tracemalloc.get_traced_memory()
            overhead = tracemalloc.get_tracemalloc_memory()
            snap = tracemalloc.take_snapshot()
            path = os.path.join(_DIR, f"snap-{n:03d}-{int(due_s)}s.tracemalloc")
            snap.dump(path)
            del snap
            with open(os.path.join(_DIR, "log.jsonl"), "a") as fh:
                fh.write(json.dumps({"t_s": round(time.monotonic() - t0, 1), "due_s": due_s, "file": path,
                                     "rss_kib": rss_before, "traced_kib": current // 1024,
                                     "traced_peak_kib": peak // 1024,
                                     "tracemalloc_overhead_kib": overhead // 1024}) + "\n")
            n += 1
            due_s += every_s

    os.makedirs(_DIR, exist_ok=True)
    threading.Thread(target=_snapshots, name="tracemalloc-snapshots", daemon=True).start()
