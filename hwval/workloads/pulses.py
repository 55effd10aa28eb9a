"""Sync pulses: a load pattern with one sharp correlation peak, recorded through the marker
channel so ``hwval sync`` can fit every meter's lag and window against it.

``python -m hwval.workloads.pulses [--pattern barker13] [--chip-s S] [--blocks N] [--settle-s S]``

Each block idles ``--settle-s``, then plays the pattern: during a 1 chip every CPU core runs a
busy loop (one *process* per core, so the GIL cannot blunt the edges) and, where CUDA is present,
every visible GPU runs back-to-back matrix products; during a 0 chip everything idles. The
worker processes start once, before the first block, and are gated by a shared flag and a
pipe each: an idle worker blocks reading a pipe (no polling), a busy one checks the flag every ~50 us,
so a chip edge reaches every core within well under a millisecond.

Marks (the contract ``hwval sync`` reads, see the README's *Run file*): ``pulse_start``
(``pattern``, ``chip_s``, ``levels``, ``targets``), one ``pulse_chip`` (``index``, ``level``)
stamped right after each chip's level is commanded, and ``pulse_end`` when the last chip ends.

Patterns: ``barker13`` (13 chips; the longest binary code whose aperiodic autocorrelation
sidelobes are all at most 1, Barker 1953), and maximal-length sequences ``mseq5``..``mseq9``
(2^n - 1 chips from a linear-feedback shift register with a primitive polynomial: a two-valued
periodic autocorrelation; longer, for meters that need many edges).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import threading
import time
from typing import Callable

import hwval
from hwval.runfile.schema import EventName

BARKER13 = (1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 0, 1)
#: Feedback taps (1-based register positions) of primitive polynomials x^n + x^k + 1 (or the
#: 4-tap one for n = 8), from the standard tables of maximal-length LFSRs (e.g. Xilinx XAPP052).
MSEQ_TAPS = {5: (5, 3), 6: (6, 5), 7: (7, 6), 8: (8, 6, 5, 4), 9: (9, 5)}
DEFAULT_CHIP_S = 0.5
_SPIN = 2000   # busy-loop iterations between flag checks (~50 us of Python arithmetic)
#: How CPU workers start (see :class:`LoadPool`): a fork server where the platform has one.
CPU_START_METHOD = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


class PulseError(ValueError):
    """Bad options for the pulse generator; the message says what is accepted."""


def mseq(n: int) -> tuple[int, ...]:
    """The maximal-length sequence of degree ``n`` (2^n - 1 chips) from a Fibonacci LFSR seeded
    with all ones."""
    if n not in MSEQ_TAPS:
        raise PulseError(f"m-sequence degree {n}: expected one of {', '.join(map(str, MSEQ_TAPS))}")
    taps = MSEQ_TAPS[n]
    state = [1] * n
    out = []
    for _ in range(2 ** n - 1):
        out.append(state[-1])
        bit = 0
        for t in taps:
            bit ^= state[t - 1]
        state = [bit] + state[:-1]
    return tuple(out)


def pattern_levels(name: str) -> tuple[int, ...]:
    if name == "barker13":
        return BARKER13
    if name.startswith("mseq") and name[4:].isdigit():
        return mseq(int(name[4:]))
    raise PulseError(f"pattern {name!r}: expected barker13 or mseq5..mseq9")


def chip_length_s(meters: list[tuple[float, float]]) -> float:
    """A chip length for meters given as ``(period_s, window_s)`` (the capture's
    ``--sync-pulses`` uses it unless ``--pulse-chip-s`` is given).

    Long enough that the slowest meter shows a settled plateau in every chip (1.25 x its period
    plus window), plus 0.382 of the slowest period (the golden ratio's fraction), so that chip
    edges fall at ever new phases of every meter's reporting grid: readings that straddle an
    edge at many different fractions are what pin the lag below the reporting period. At least
    0.1 s (a 1 Hz plug with a 1 s window: 2.882 s; 13 chips take 37 s).
    """
    if not meters:
        return DEFAULT_CHIP_S
    slowest = max(p + w for p, w in meters)
    period = max(p for p, _ in meters)
    return max(0.1, round(1.25 * slowest + 0.382 * period, 3))


def _nice() -> None:
    # A session of its own first: with autogroup scheduling (Linux's default on desktops and
    # many servers, sched(7)) CPU time is shared between sessions first, so workers in the
    # session of a busy shell or test run would get only their nice-weighted part of that
    # session's share (measured on 2 cores beside two busy loops: 5 % instead of 28 %).
    try:
        os.setsid()
    except OSError:
        pass
    # Below the generator's own priority: when every core is busy, the timing loop must still
    # wake on time to command the next chip (CFS lets a higher-weight task preempt at once).
    try:
        os.nice(5)
    except OSError:
        pass


def _cpu_worker(level, wake, stop, ready, results) -> None:
    _nice()
    x = 1.0
    ready.put(("cpu", os.getpid()))
    while not stop.value:
        wake.recv_bytes()                  # idle: blocked in read(2), no polling
        while level.value and not stop.value:
            for _ in range(_SPIN):
                x = x * 1.0000001 + 1e-9
    results.put(("cpu", time.process_time()))


def _gpu_worker(index, level, wake, stop, ready, results) -> None:  # pragma: no cover - needs CUDA
    import torch

    _nice()
    dev = torch.device(f"cuda:{index}")
    a = torch.randn(2048, 2048, device=dev)
    b = torch.randn(2048, 2048, device=dev)
    torch.cuda.synchronize(dev)
    ready.put((f"cuda:{index}", os.getpid()))
    busy_s = 0.0
    while not stop.value:
        wake.recv_bytes()
        while level.value and not stop.value:
            t0 = time.perf_counter()
            for _ in range(4):
                a = torch.mm(a, b).clamp_(-1.0, 1.0)
            torch.cuda.synchronize(dev)   # a short queue: the GPU stops soon after the flag
            busy_s += time.perf_counter() - t0
    results.put((f"cuda:{index}", busy_s))


def visible_gpus() -> int:
    """CUDA devices torch can see (0 without torch or CUDA)."""
    try:
        import torch
    except ImportError:
        return 0
    try:
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # a broken driver counts as no GPU
        return 0


class LoadPool:
    """The worker processes, started once, gated by :meth:`set`.

    The level is a shared byte every busy worker polls; an idle worker blocks reading its own
    pipe, and a rising edge writes one byte to each pipe. (A multiprocessing Event would do,
    but its ``set()`` waits until every sleeper has woken: milliseconds on a loaded machine,
    between the command and its stamp.)

    CPU workers start from a fork server (``cpu_start``, default ``forkserver``), never by forking
    the caller: under ``hwval capture`` the caller runs the recorder's threads, and a child forked
    from a threaded process inherits whatever lock another thread held at the fork (Python's
    multiprocessing docs warn against fork with threads). The fork server is a fresh,
    single-threaded process, so it costs one interpreter start the first time (measured by
    ``benchmarks/pulse_worker_start.py``, see the README). GPU workers are spawned, since CUDA
    must not be initialised in a forked child. The constructor returns once every worker is
    ready, so callers time their chips from then.
    """

    def __init__(self, cpus: int, gpus: list[int] | None = None, start_timeout_s: float = 120.0,
                 cpu_start: str = CPU_START_METHOD) -> None:
        self.cpus, self.gpus = cpus, list(gpus or [])
        self.level = 0
        self._groups = []     # (level, stop, [write ends], ready, results, procs)
        for kind, n in (("cpu", cpus), ("gpu", len(self.gpus))):
            if not n:
                continue
            ctx = mp.get_context(cpu_start if kind == "cpu" else "spawn")
            if kind == "cpu" and cpu_start == "forkserver":
                # The server imports this module once; each worker forked from it then starts
                # without importing anything (a no-op once the server runs).
                ctx.set_forkserver_preload(["hwval.workloads.pulses"])
            level, stop = ctx.RawValue("b", 0), ctx.RawValue("b", 0)
            ready, results = ctx.Queue(), ctx.Queue()
            writers, procs = [], []
            for i in range(n):
                r, w = ctx.Pipe(duplex=False)
                if kind == "cpu":
                    proc = ctx.Process(target=_cpu_worker, args=(level, r, stop, ready, results), daemon=True,
                                       name=f"hwval-pulse-cpu{i}")
                else:
                    proc = ctx.Process(target=_gpu_worker, args=(self.gpus[i], level, r, stop, ready, results),
                                       daemon=True, name=f"hwval-pulse-cuda{self.gpus[i]}")
                proc.start()
                writers.append(w)
                procs.append(proc)
            self._groups.append((level, stop, writers, ready, results, procs))
        deadline = time.monotonic() + start_timeout_s
        #: The workers' process ids, as each reported ready.
        self.pids: list[int] = []
        for _, _, _, ready, _, procs in self._groups:
            for _ in procs:
                self.pids.append(ready.get(timeout=max(deadline - time.monotonic(), 0.1))[1])

    @property
    def targets(self) -> list[str]:
        return (["cpu"] if self.cpus else []) + [f"cuda:{i}" for i in self.gpus]

    def set(self, level: int) -> None:
        rising = level and not self.level
        self.level = level
        for lv, _, writers, _, _, _ in self._groups:
            lv.value = level
            if rising:
                for w in writers:
                    w.send_bytes(b"1")

    def close(self) -> dict[str, float]:
        """Stop every worker; returns the busy seconds each target spent (CPU: summed over cores)."""
        self.set(0)
        busy: dict[str, float] = {}
        for _, stop, writers, _, results, procs in self._groups:
            stop.value = 1
            for w in writers:
                w.send_bytes(b"0")
            for _ in procs:
                try:
                    target, seconds = results.get(timeout=10.0)
                except Exception:
                    continue
                busy[target] = busy.get(target, 0.0) + float(seconds)
            for p in procs:
                p.join(timeout=5.0)
                if p.is_alive():
                    p.kill()
        return busy


def _sleep_until(deadline_ns: int, stop: threading.Event | None = None) -> bool:
    """Sleep until the deadline; False (at once) when ``stop`` is set."""
    while True:
        remaining = (deadline_ns - time.monotonic_ns()) / 1e9
        if stop is not None and stop.is_set():
            return False
        if remaining <= 0:
            return True
        if stop is None:
            time.sleep(remaining)
        else:
            stop.wait(remaining)


def play_block(pool: LoadPool, pattern: str, levels: tuple[int, ...], chip_s: float,
               mark: Callable[..., None], stop: threading.Event | None = None) -> list[int]:
    """One block: pulse_start, the chips on absolute deadlines, pulse_end. Returns the chips'
    commanded starts (CLOCK_MONOTONIC ns).

    When ``stop`` is set the block ends at once: the load idles and ``pulse_end`` (detail
    ``aborted: true``) closes it, so the chips played so far still form a usable block.
    """
    chip_ns = round(chip_s * 1e9)
    mark(EventName.PULSE_START, pattern=pattern, chip_s=chip_s, levels=list(levels), targets=pool.targets)
    t0 = time.monotonic_ns() + 5_000_000      # a little lead: the first chip starts on a deadline
    starts = []
    for i, lv in enumerate(levels):
        if not _sleep_until(t0 + i * chip_ns, stop):
            break
        pool.set(lv)
        starts.append(time.monotonic_ns())
        mark(EventName.PULSE_CHIP, index=i, level=lv)
    else:
        _sleep_until(t0 + len(levels) * chip_ns, stop)
    pool.set(0)
    if stop is not None and stop.is_set():
        mark(EventName.PULSE_END, aborted=True)
    else:
        mark(EventName.PULSE_END)
    return starts


def run_pulses(pattern: str = "barker13", chip_s: float = DEFAULT_CHIP_S, blocks: int = 1, settle_s: float = 2.0,
               tail_s: float | None = None, cpus: int | None = None, gpus: str = "auto",
               mark: Callable[..., None] = hwval.mark) -> dict:
    """Play ``blocks`` blocks of ``pattern``; see the module docstring.

    Parameters
    ----------
    chip_s : float
        Chip length (s); :func:`chip_length_s` picks one from the meters' periods and windows.
    settle_s, tail_s : float
        Idle before every block, and after the last one (default: ``settle_s``).
    cpus : int, optional
        CPU worker processes (default: every core this process may run on; 0: none).
    gpus : str
        ``auto`` (every visible CUDA device when torch has CUDA), ``none``, or indices ``0,1``.
    mark : callable
        ``mark(name, **detail)``; :func:`hwval.mark` (the capture's marker channel) by default.

    Returns
    -------
    dict
        ``targets``, ``chip_starts_ns`` (per block), ``busy_s`` (per target) and ``levels``.
    """
    levels = pattern_levels(pattern)
    if not chip_s > 0:
        raise PulseError(f"--chip-s {chip_s}: must be > 0")
    if blocks < 1:
        raise PulseError(f"--blocks {blocks}: must be at least 1")
    if settle_s < 0 or (tail_s is not None and tail_s < 0):
        raise PulseError("--settle-s and --tail-s must be >= 0")
    n_cpu = len(os.sched_getaffinity(0)) if cpus is None else cpus
    if n_cpu < 0:
        raise PulseError(f"--cpus {cpus}: must be >= 0")
    if gpus == "auto":
        gpu_list = list(range(visible_gpus()))
    elif gpus == "none":
        gpu_list = []
    else:
        try:
            gpu_list = [int(g) for g in gpus.split(",") if g.strip()]
        except ValueError:
            raise PulseError(f"--gpus {gpus!r}: expected auto, none or indices such as 0,1") from None
    if not n_cpu and not gpu_list:
        raise PulseError("nothing to drive: --cpus 0 and no GPU")
    pool = LoadPool(n_cpu, gpu_list)
    starts = []
    try:
        for _ in range(blocks):
            time.sleep(settle_s)
            starts.append(play_block(pool, pattern, levels, chip_s, mark))
        time.sleep(settle_s if tail_s is None else tail_s)
    finally:
        busy = pool.close()
    return {"targets": pool.targets, "chip_starts_ns": starts, "busy_s": busy, "levels": list(levels)}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m hwval.workloads.pulses",
                                 description="sync-pulse load blocks (CPU cores and GPUs) recorded as hwval marks")
    ap.add_argument("--pattern", default="barker13", help="barker13 (default) or mseq5..mseq9")
    ap.add_argument("--chip-s", type=float, default=DEFAULT_CHIP_S, help="chip length in s (default 0.5)")
    ap.add_argument("--blocks", type=int, default=1, help="blocks to play (default 1)")
    ap.add_argument("--settle-s", type=float, default=2.0, help="idle seconds before each block (default 2)")
    ap.add_argument("--tail-s", type=float, default=None, help="idle seconds after the last block (default: settle)")
    ap.add_argument("--cpus", type=int, default=None, help="CPU worker processes (default: all cores; 0: none)")
    ap.add_argument("--gpus", default="auto", help="auto (every visible CUDA GPU), none, or indices such as 0,1")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not os.environ.get(hwval.markers.ENV_SOCKET):
        print("hwval pulses: not under `hwval capture`: the pulses are played but not recorded", file=sys.stderr)
    try:
        out = run_pulses(args.pattern, args.chip_s, args.blocks, args.settle_s, args.tail_s, args.cpus, args.gpus)
    except PulseError as exc:
        print(f"hwval: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(f"hwval pulses: {args.blocks} block(s) of {args.pattern} ({len(out['levels'])} chips of {args.chip_s:g} s) "
          f"on {', '.join(out['targets'])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
