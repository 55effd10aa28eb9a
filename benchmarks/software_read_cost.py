"""Cost of reading the software meters, and the highest rate each sustains.

Prints:
1. microseconds per RAPL domain read (``RaplSource.read`` over a powercap tree built by the
   emulator in a temporary folder; a real sysfs read adds the kernel's MSR read, ~1-3 us);
2. microseconds per NVML call path against the simulated driver (``hwval.sources.nvml_sim``:
   autospec'd pynvml functions), split into the fake calls and the source's own work;
3. the highest polling rate each source sustains on the recorder's absolute-deadline scheduler
   (``hwval.clock.PeriodicSchedule``) with fewer than 1 % missed deadlines;
4. with ``--real-nvml`` on a machine with an NVIDIA GPU (and torch with CUDA): real call costs,
   the detected update period, and an idle / load / idle run comparing the energy counter with
   integrated power.

Usage: ``python benchmarks/software_read_cost.py [--seconds-per-rate 1.0]``. Figures depend on
the machine and on its load; the run prints the CPU count and load average with them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pynvml

from hwval.clock import PeriodicSchedule
from hwval.emulators.powercap import build_tree, plan_zones
from hwval.sources.base import SourceSpec
from hwval.sources.nvml import NvmlSource
from hwval.sources.nvml_sim import SimGpu, SimNvml
from hwval.sources.rapl import RaplSource

RATES_HZ = (100, 250, 500, 1000, 2000, 5000, 10000)


class NullCtx:
    stop = threading.Event()

    def emit(self, *a, **k):
        pass

    def event(self, *a, **k):
        pass

    def count_error(self, *a, **k):
        pass


def per_call_us(func, n: int) -> float:
    func()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        func()
    return (time.perf_counter_ns() - t0) / n / 1e3


def sustained_rate(read, seconds: float) -> tuple[int | None, list[tuple[int, float]]]:
    """Highest rate of RATES_HZ at which it and every lower rate had < 1 % missed deadlines,
    and (rate, missed %) per rate tried (it stops after the first rate that fails)."""
    results = []
    best = None
    for rate in RATES_HZ:
        stop = threading.Event()
        schedule = PeriodicSchedule(1.0 / rate, stop)
        end = time.monotonic() + seconds
        while schedule.wait() is not None:
            read()
            if time.monotonic() >= end:
                break
        total = schedule.stats.ticks + schedule.stats.missed
        missed_pct = 100.0 * schedule.stats.missed / total if total else 100.0
        results.append((rate, missed_pct))
        if missed_pct >= 1.0:
            break
        best = rate
    return best, results


def bench_rapl(seconds: float) -> None:
    root = Path(tempfile.mkdtemp(prefix="hwval-bench-rapl-"))
    try:
        for packages, nested in ((1, ("core", "dram")), (2, ("core", "uncore", "dram"))):
            sub = root / f"p{packages}"
            sub.mkdir()
            zones = plan_zones(packages, nested, psys=True)
            build_tree(sub, zones, 262143328850, {z.zone: 200_000_000 for z in zones}, 10**9)
            src = RaplSource(SourceSpec("rapl", str(sub), "rapl", 0.001, {}))
            src.open(NullCtx())
            n_domains = len(src.states)
            read_us = per_call_us(src.read, 20000)
            fd = src.states[0].fd
            raw_us = per_call_us(lambda: os.pread(fd, 64, 0), 50000)
            print(f"RAPL {n_domains} domains: read() {read_us:.1f} us = {read_us / n_domains:.2f} us "
                  f"per domain (of which pread {raw_us:.2f} us)")
            best, results = sustained_rate(src.read, seconds)
            table = ", ".join(f"{r} Hz: {m:.1f} %" for r, m in results)
            print(f"  missed deadlines: {table}")
            print(f"  highest rate with < 1 % missed: {best} Hz")
            src.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_nvml(seconds: float) -> None:
    sim = SimNvml([SimGpu(f"GPU-{i:08d}-0000-0000-0000-000000000000") for i in range(2)])
    with sim.patch():
        src = NvmlSource(SourceSpec("nvml", "", "nvml", 0.01, {"detect_s": 0.0}), environ={})
        src.open(NullCtx())
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        ids = [pynvml.NVML_FI_DEV_POWER_INSTANT, pynvml.NVML_FI_DEV_POWER_AVERAGE]
        calls = {
            "nvmlDeviceGetPowerUsage": per_call_us(lambda: pynvml.nvmlDeviceGetPowerUsage(h), 5000),
            "nvmlDeviceGetTotalEnergyConsumption": per_call_us(
                lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h), 5000),
            "nvmlDeviceGetFieldValues(2 fields)": per_call_us(
                lambda: pynvml.nvmlDeviceGetFieldValues(h, ids), 5000),
        }
        for name, us in calls.items():
            print(f"NVML fake {name}: {us:.1f} us per call")
        read_us = per_call_us(src.read, 3000)
        per_gpu = read_us / 2
        own = per_gpu - sum(calls.values())
        print(f"NVML read() of 2 GPUs: {read_us:.1f} us = {per_gpu:.1f} us per GPU "
              f"(fake calls {sum(calls.values()):.1f} us, source's own work {own:.1f} us)")
        best, results = sustained_rate(src.read, seconds)
        table = ", ".join(f"{r} Hz: {m:.1f} %" for r, m in results)
        print(f"  missed deadlines: {table}")
        print(f"  highest rate with < 1 % missed: {best} Hz (the fake's cost included; the real "
              "driver's calls cost ~10-100 us each, and NVML values update every ~10-100 ms)")
        src.close()


def _torch_load(stop: threading.Event) -> None:
    """Keep cuda:0 busy with matrix products until ``stop`` is set."""
    import torch

    a = torch.randn(8192, 8192, device="cuda:0")
    b = torch.randn(8192, 8192, device="cuda:0")
    while not stop.is_set():
        for _ in range(10):
            a = (a @ b) * 1e-4
        torch.cuda.synchronize()


def real_nvml(idle_s: float, load_s: float) -> None:
    """On a machine with an NVIDIA GPU: idle / torch load / idle through the real driver;
    prints the detected update period, read costs and counter energy vs integrated power."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        print(f"real NVML: skipped ({exc})")
        return
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        ids = [pynvml.NVML_FI_DEV_POWER_INSTANT, pynvml.NVML_FI_DEV_POWER_AVERAGE]
        for name, func in (("nvmlDeviceGetPowerUsage", lambda: pynvml.nvmlDeviceGetPowerUsage(h)),
                           ("nvmlDeviceGetTotalEnergyConsumption",
                            lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h)),
                           ("nvmlDeviceGetFieldValues(2 fields)",
                            lambda: pynvml.nvmlDeviceGetFieldValues(h, ids))):
            try:
                print(f"real NVML {name}: {per_call_us(func, 2000):.1f} us per call")
            except pynvml.NVMLError as exc:
                print(f"real NVML {name}: {exc}")
    finally:
        pynvml.nvmlShutdown()
    src = NvmlSource(SourceSpec("nvml", "", "nvml", 0.01, {"detect_s": 1.0}))
    infos = src.open(NullCtx())
    for info in infos:
        print(f"{info.name}: {info.identity['name']} {info.identity['uuid']} "
              f"update period {info.identity['update_period_s']}")
        for note in info.notes:
            print(f"  note: {note}")
    print(f"real NVML read() of {len(infos)} GPU(s): {per_call_us(src.read, 500):.1f} us")
    stream = infos[0].name
    rows: list[tuple[float, dict]] = []
    stop_load = threading.Event()
    loader = threading.Thread(target=_torch_load, args=(stop_load,), daemon=True)
    stop = threading.Event()
    schedule = PeriodicSchedule(0.01, stop)
    t_start = time.monotonic()
    phases = ((idle_s, "idle"), (idle_s + load_s, "load"), (2 * idle_s + load_s, "idle"))
    while schedule.wait() is not None:
        now = time.monotonic() - t_start
        if now >= phases[-1][0]:
            break
        if now >= idle_s and loader.ident is None:
            loader.start()  # once: a loader that died (no CUDA) is not restarted
        if now >= idle_s + load_s:
            stop_load.set()
        values = src.read().get(stream)
        if values:
            rows.append((now, dict(values)))
    stop_load.set()
    src.close()
    t = np.array([r[0] for r in rows])
    for key in ("power_w", "power_instant_w", "power_average_w"):
        if key in rows[0][1]:
            p = np.array([r[1].get(key, np.nan) for r in rows])
            print(f"energy from integrating {key}: {np.trapezoid(p, t):.1f} J")
    if "energy_j" in rows[0][1]:
        e = np.array([r[1]["energy_j"] for r in rows])
        print(f"energy from the counter: {e[-1] - e[0]:.1f} J over {t[-1] - t[0]:.1f} s")
    for start, end, label in ((0, idle_s, "idle"), (idle_s, idle_s + load_s, "load"),
                              (idle_s + load_s, 2 * idle_s + load_s, "idle")):
        sel = (t >= start) & (t < end)
        if sel.any() and "power_w" in rows[0][1]:
            p = np.array([r[1]["power_w"] for r in rows])[sel]
            print(f"{label} {start:.0f}-{end:.0f} s: mean power_w {np.nanmean(p):.1f} W")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds-per-rate", type=float, default=1.0)
    parser.add_argument("--real-nvml", action="store_true",
                        help="also measure the real driver with an idle / torch load / idle run")
    parser.add_argument("--idle-s", type=float, default=3.0)
    parser.add_argument("--load-s", type=float, default=6.0)
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    bench_rapl(args.seconds_per_rate)
    bench_nvml(args.seconds_per_rate)
    if args.real_nvml:
        real_nvml(args.idle_s, args.load_s)


if __name__ == "__main__":
    main()
