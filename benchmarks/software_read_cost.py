"""Cost of reading the software meters, and the highest rate each sustains.

Prints:
1. microseconds per RAPL domain read (``RaplSource.read`` over a powercap tree built by the
   emulator in a temporary folder; a real sysfs read adds the kernel's MSR read, ~1-3 us);
2. microseconds per NVML call path against the simulated driver (``hwval.emulators.nvml_sim``:
   autospec'd pynvml functions), split into the fake calls and the source's own work;
3. microseconds per ``synthetic`` read (the bench model: profile, meter window and noise), for
   the default meter model and for a 1 s window mean;
4. the highest polling rate each source sustains on the recorder's absolute-deadline scheduler
   (``hwval.clock.PeriodicSchedule``) with fewer than 1 % missed deadlines;
5. with ``--real-nvml`` on a machine with an NVIDIA GPU (and torch with CUDA): real call costs,
   the update period of each value, the ``nvml`` source's read cost and sustained rate, and an
   idle / load / idle run comparing the energy counter with integrated power per phase.

Usage: ``python benchmarks/software_read_cost.py [--seconds-per-rate 1.0]``; on a GPU machine
``python benchmarks/software_read_cost.py --real-nvml --real-only --json nvml.json`` (about 30 s). Figures depend on
the machine and on its load; the run prints the CPU count and load average with them.
"""

from __future__ import annotations

import argparse
import json
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
from hwval.sources.nvml.detect import smallest_change_interval_s
from hwval.sources.nvml.devices import field_value
from hwval.sources.nvml.source import NvmlSource
from hwval.emulators.nvml_sim import SimGpu, SimNvml
from hwval.sources.rapl.source import RaplSource
from hwval.sources.synthetic import create as create_synthetic

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


def bench_synthetic() -> None:
    # Not free: every read evaluates the bench's profile and meter model (and the exact energy).
    for options in ({}, {"window_s": 1.0}, {"energy": False}):
        src = create_synthetic(SourceSpec("synthetic", "idle-load", "synthetic", 0.01, options))
        src.open(NullCtx())
        read_us = per_call_us(src.read, 20000)
        shown = "&".join(f"{k}={v}" for k, v in options.items()) or "default options"
        print(f"synthetic:idle-load ({shown}): read() {read_us:.1f} us")
        src.close()


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


class TorchLoad:
    """Matrix products on ``cuda:0`` (the workload's first GPU) in a thread, on demand.

    CUDA is initialised and the operands allocated in :meth:`prepare`, before the first idle
    phase, so the load phase is the load alone (not seconds of context creation) and the idle
    phases are what a training job's idle looks like (a CUDA context open). The operands never
    change, so the products neither grow nor decay to zeros: data-dependent power stays the
    same for the whole phase.
    """

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self.stop = threading.Event()
        self.error: str | None = None
        self.products = 0
        self.thread = threading.Thread(target=self._run, name="torch-load", daemon=True)

    def prepare(self) -> str | None:
        """Set up CUDA; ``None`` when ready, else why there is no load."""
        try:
            import torch
        except ImportError as exc:
            return f"torch is not installed ({exc})"
        if not torch.cuda.is_available():
            return "torch sees no CUDA device"
        self.torch = torch
        gen = torch.Generator(device="cuda:0").manual_seed(0)
        self.a = torch.randn(self.size, self.size, device="cuda:0", generator=gen)
        self.b = torch.randn(self.size, self.size, device="cuda:0", generator=gen)
        self.c = torch.empty_like(self.a)
        torch.mm(self.a, self.b, out=self.c)  # first call loads the kernels
        torch.cuda.synchronize()
        return None

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                for _ in range(10):
                    self.torch.mm(self.a, self.b, out=self.c)
                self.torch.cuda.synchronize()
                self.products += 10
        except Exception as exc:  # reported after the run: the figures then show no load
            self.error = f"{type(exc).__name__}: {exc}"


def detect_update_period_s(func, seconds: float) -> tuple[float | None, int]:
    """The source's own method (back-to-back reads; smallest interval between well-timed
    changes) applied to one NVML call; returns (period or None, number of changes seen)."""
    changes, widths = [], []
    last_value, last_start = None, None
    end = time.monotonic_ns() + int(seconds * 1e9)
    while time.monotonic_ns() < end:
        before = time.monotonic_ns()
        value = func()
        after = time.monotonic_ns()
        if last_start is not None:
            widths.append(after - last_start)
            if value != last_value:
                changes.append((last_start, after))
        last_value, last_start = value, before
    return smallest_change_interval_s(changes, widths), len(changes)


def _field_pair(h, ids):
    values = pynvml.nvmlDeviceGetFieldValues(h, ids)
    return tuple((v.nvmlReturn, field_value(v) if v.nvmlReturn == pynvml.NVML_SUCCESS else None)
                 for v in values)


def real_nvml(idle_s: float, load_s: float, seconds_per_rate: float) -> dict:
    """On a machine with an NVIDIA GPU: idle / torch load / idle through the real driver.

    Prints (and returns) the cost of each call, the update period of each value, the read cost
    and sustained rate of the ``nvml`` source, and per phase the energy from the counter against
    the integral of each power reading (power_w is a 1 s mean on Ampere and newer except GA100,
    so it lags a step by about half a second: compare whole phases, idle margins included).
    """
    figures: dict = {}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        print(f"real NVML: skipped ({exc})")
        return {"skipped": str(exc)}
    load = TorchLoad()
    why_no_load = load.prepare()  # before the first NVML reading: the context is part of idle
    print(f"torch load: {why_no_load or 'ready on cuda:0'}")
    figures["load"] = why_no_load or "ready"
    try:
        count = pynvml.nvmlDeviceGetCount()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        print(f"real NVML: {count} GPU(s); nvml index 0 is {pynvml.nvmlDeviceGetName(h)}, "
              f"driver {pynvml.nvmlSystemGetDriverVersion()}")
        ids = [pynvml.NVML_FI_DEV_POWER_INSTANT, pynvml.NVML_FI_DEV_POWER_AVERAGE]
        calls = (("nvmlDeviceGetPowerUsage", lambda: pynvml.nvmlDeviceGetPowerUsage(h)),
                 ("nvmlDeviceGetTotalEnergyConsumption",
                  lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h)),
                 ("nvmlDeviceGetFieldValues(2 fields)", lambda: _field_pair(h, ids)))
        figures["call_us"], figures["update_period_s"] = {}, {}
        for name, func in calls:
            try:
                us = per_call_us(func, 2000)
                period, n = detect_update_period_s(func, 1.0)
            except pynvml.NVMLError as exc:
                print(f"real NVML {name}: {exc}")
                continue
            figures["call_us"][name], figures["update_period_s"][name] = us, period
            shown = "not detected" if period is None else f"{period * 1e3:.1f} ms"
            print(f"real NVML {name}: {us:.1f} us per call; update period {shown} "
                  f"({n} changes in 1 s of back-to-back reads, idle)")
    finally:
        pynvml.nvmlShutdown()

    src = NvmlSource(SourceSpec("nvml", "", "nvml", 0.01, {"detect_s": 1.0}))
    infos = src.open(NullCtx())
    for info in infos:
        print(f"{info.name}: {info.identity['name']} {info.identity['uuid']} keys "
              f"{', '.join(info.key_names())}; detected update period "
              f"{info.identity['update_period_s']} s")
        for note in info.notes:
            print(f"  note: {note}")
    figures["source_update_period_s"] = {i.name: i.identity["update_period_s"] for i in infos}
    read_us = per_call_us(src.read, 500)
    best, results = sustained_rate(src.read, seconds_per_rate)
    figures["read_us"], figures["sustained_hz"] = read_us, best
    print(f"real NVML read() of {len(infos)} GPU(s): {read_us:.1f} us; highest rate with < 1 % "
          f"missed deadlines: {best} Hz ({', '.join(f'{r} Hz: {m:.1f} %' for r, m in results)})")

    # cuda:0 is the stream nvml_gpu0 whatever CUDA_VISIBLE_DEVICES says (matched by UUID).
    stream = "nvml_gpu0" if "nvml_gpu0" in src.streams else infos[0].name
    rows: list[tuple[float, dict]] = []
    stop = threading.Event()
    schedule = PeriodicSchedule(0.01, stop)
    t_start = time.monotonic()
    load_from, load_to, end = idle_s, idle_s + load_s, 2 * idle_s + load_s
    while schedule.wait() is not None:
        if time.monotonic() - t_start >= end:
            break
        since = time.monotonic() - t_start
        if since >= load_from and why_no_load is None and load.thread.ident is None:
            load.thread.start()
        if since >= load_to:
            load.stop.set()
        values = src.read().get(stream)
        if values:
            rows.append((time.monotonic() - t_start, dict(values)))  # stamped at receipt
    load.stop.set()
    src.close()
    if load.error:
        print(f"torch load failed: {load.error}")
        figures["load"] = load.error
    print(f"torch load: {load.products} products of {load.size}x{load.size} fp32 matrices")
    t = np.array([r[0] for r in rows])
    keys = sorted({k for _, v in rows for k in v})
    data = {k: np.array([v.get(k, np.nan) for _, v in rows]) for k in keys}
    figures["phases"] = []
    for start, stop_s, label in ((0.0, load_from, "idle"), (load_from, load_to, "load"),
                                 (load_to, end, "idle"), (0.0, end, "whole run")):
        sel = (t >= start) & (t <= stop_s)
        if np.count_nonzero(sel) < 2:
            continue
        tt = t[sel]
        phase = {"label": label, "from_s": start, "to_s": stop_s, "span_s": float(tt[-1] - tt[0])}
        line = f"{label} {start:.1f}-{stop_s:.1f} s:"
        if "energy_j" in data:
            e = data["energy_j"][sel]
            phase["counter_j"] = float(e[-1] - e[0])
            line += f" counter {phase['counter_j']:.1f} J;"
        for key in ("power_w", "power_instant_w", "power_average_w"):
            if key in data:
                p = data[key][sel]
                ok = ~np.isnan(p)
                phase[f"{key}_mean"] = float(np.mean(p[ok])) if ok.any() else None
                phase[f"{key}_integral_j"] = float(np.trapezoid(p[ok], tt[ok])) if ok.sum() > 1 else None
                if phase[f"{key}_integral_j"] is not None:
                    line += (f" {key} mean {phase[f'{key}_mean']:.1f} W, integral "
                             f"{phase[f'{key}_integral_j']:.1f} J;")
        figures["phases"].append(phase)
        print(line)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds-per-rate", type=float, default=1.0)
    parser.add_argument("--real-nvml", action="store_true",
                        help="also measure the real driver with an idle / torch load / idle run")
    parser.add_argument("--real-only", action="store_true",
                        help="with --real-nvml: skip the RAPL and simulated NVML figures")
    parser.add_argument("--idle-s", type=float, default=3.0)
    parser.add_argument("--load-s", type=float, default=6.0)
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the real-NVML figures to this JSON file")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if not (args.real_nvml and args.real_only):
        bench_rapl(args.seconds_per_rate)
        bench_nvml(args.seconds_per_rate)
        bench_synthetic()
    if args.real_nvml:
        figures = real_nvml(args.idle_s, args.load_s, args.seconds_per_rate)
        if args.json is not None:
            args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
