"""A bench whose true power follows this host's real load (``--profile host``).

True power = ``idle_w + cpu_dynamic_w * cpu_busy + gpu_dynamic_w * gpu_busy``, where ``cpu_busy``
is the share of all CPUs that were busy (from ``/proc/stat``) and ``gpu_busy`` the mean GPU
utilisation NVML reports (0 where there is no GPU). This is what lets a real sync-pulse capture
on this machine be checked against a known answer: the pulse generator loads the CPUs, the
bench's power follows, and every emulated meter sees that power through its own model.

One **sampler** process (:class:`HostLoadSampler`, ``hwval emulate host-bench``) reads the load
at ``rate_hz`` (>= 200 Hz) and appends to a shared ring file; any number of emulator processes
open the same file read-only through :class:`HostProfile`, which has the
:class:`~hwval.benchmodel.model.PowerProfile` interface (``power_w``, ``energy_to_j``,
``energy_j``, ``mean_w`` over bench seconds), so a :class:`~hwval.benchmodel.model.Bench` and
every :class:`~hwval.benchmodel.model.MeterModel` work on it unchanged.

The ring stores *cumulative* busy seconds, not per-sample fractions: ``/proc/stat`` counts in
USER_HZ ticks (10 ms per CPU on Linux, ``sysconf(SC_CLK_TCK)``), far coarser than a 2-5 ms
sampling interval, so a per-sample fraction would be 0 or a multiple of 2.5. The cumulative
curve, interpolated linearly between samples, defines the true energy exactly (power is its
slope), its mean over any window is right to one tick, and true energy is conserved.

Ring layout (little-endian): a 64-byte header ``magic[8] t0_ns:i64 capacity:i64 period_ns:i64
idle_w:f64 cpu_dynamic_w:f64 gpu_dynamic_w:f64 count:i64`` and ``capacity`` records of
``t_ns:i64 cpu_busy_s:f64 gpu_busy_s:f64 reserved:f64`` (32 bytes). Record ``i`` lives in slot
``i % capacity``; the writer fills a record before it advances ``count``, and readers re-check
``count`` after reading, so they never use a slot being overwritten.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

MAGIC = b"HWVALHB1"
_HEADER = struct.Struct("<8sqqqdddq")
HEADER_BYTES = 64
_RECORD = np.dtype([("t_ns", "<i8"), ("cpu_busy_s", "<f8"), ("gpu_busy_s", "<f8"), ("reserved", "<f8")])
RECORD_BYTES = _RECORD.itemsize
_COUNT_OFFSET = _HEADER.size - 8


#: Records read before the one a query needs (see HostProfile._window).
_WINDOW_MARGIN = 32


def _count_view(buf) -> np.ndarray:
    """The header's ``count`` as a one-element int64 array: written and read as one aligned
    8-byte access, which another process never sees half-done (x86-64 and AArch64 make aligned
    8-byte loads and stores single-copy atomic)."""
    return np.frombuffer(buf, dtype="<i8", count=1, offset=_COUNT_OFFSET)

#: The issue's floor for following CPU edges: >= 200 Hz.
MIN_RATE_HZ = 200.0
#: /proc/stat columns that count as busy (user nice system irq softirq steal); idle and iowait do not.
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)
USER_HZ = os.sysconf("SC_CLK_TCK")


def _read_aggregate_ticks(stat_path: str) -> tuple[list[int], int]:
    """The aggregate ``cpu`` line of ``/proc/stat`` (proc(5)) as USER_HZ ticks, and the CPU count."""
    with open(stat_path, "rb") as f:
        lines = f.read().decode().splitlines()
    fields = lines[0].split()
    if fields[0] != "cpu":
        raise ValueError(f"{stat_path}: first line is not the aggregate 'cpu' line")
    ncpu = sum(1 for line in lines[1:] if line.startswith("cpu"))
    return [int(v) for v in fields[1:]], max(ncpu, 1)


def read_cpu_busy_s(stat_path: str = "/proc/stat") -> tuple[float, int]:
    """Busy CPU-seconds since boot summed over all CPUs, and the number of CPUs.

    From the aggregate ``cpu`` line of ``/proc/stat`` (proc(5)): columns are in USER_HZ ticks.
    """
    ticks, ncpu = _read_aggregate_ticks(stat_path)
    return sum(ticks[i] for i in _BUSY_COLUMNS if i < len(ticks)) / USER_HZ, ncpu


#: /proc/stat's ``nice`` column: user time of processes with a positive nice value.
_NICE_COLUMN = 1


def read_niced_busy_s(stat_path: str = "/proc/stat") -> tuple[float, int]:
    """Like :func:`read_cpu_busy_s`, but only the user time of niced processes (proc(5)'s ``nice``
    column). The pulse generator's workers run at nice 5, so a bench following this sees the
    pulses even on a machine that other (un-niced) work keeps 100 % busy, where the total busy
    share cannot change; the ``--cpu-load niced`` of ``hwval emulate host-bench``."""
    ticks, ncpu = _read_aggregate_ticks(stat_path)
    return ticks[_NICE_COLUMN] / USER_HZ, ncpu


def nvml_utilisation_reader() -> Callable[[], float] | None:
    """A function returning the mean GPU utilisation (0..1) over visible GPUs, or None when NVML
    is not usable here (no driver, no GPU): the bench then has no GPU term."""
    try:
        import pynvml
        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # pynvml raises NVMLError subclasses or OSError when no driver: no GPU term
        return None
    if not handles:
        return None

    def utilisation() -> float:
        return sum(pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles) / (100.0 * len(handles))

    return utilisation


@dataclass(frozen=True)
class HostPowerModel:
    """The bench's power law: watts at idle and the extra watts when all CPUs / GPUs are busy."""

    idle_w: float = 60.0
    cpu_dynamic_w: float = 120.0
    gpu_dynamic_w: float = 0.0

    def __post_init__(self) -> None:
        for name in ("idle_w", "cpu_dynamic_w", "gpu_dynamic_w"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"host bench: {name} must be a finite number >= 0, got {value!r}")


class HostLoadSampler:
    """Writes the host's load into a ring file at ``rate_hz`` until :meth:`stop`.

    ``cpu_busy_s`` in the ring is busy CPU-seconds divided by the number of CPUs, so its slope is
    the busy share in 0..1; ``gpu_busy_s`` likewise from NVML utilisation (integrated here, as
    NVML reports a percentage over its own sample period).
    """

    def __init__(self, path: str | os.PathLike, model: HostPowerModel = HostPowerModel(),
                 rate_hz: float = 500.0, capacity_s: float = 1800.0,
                 read_busy: Callable[[], tuple[float, int]] = read_cpu_busy_s,
                 read_gpu: Callable[[], float] | None = None,
                 clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        # clock_ns stamps the records (CLOCK_MONOTONIC, the capture's timebase); a test may step
        # it to check the ring's arithmetic without a scheduler's timing in the figures
        if not rate_hz >= MIN_RATE_HZ:
            raise ValueError(f"host bench: rate_hz must be >= {MIN_RATE_HZ:g} to follow load edges, got {rate_hz!r}")
        if not capacity_s > 0:
            raise ValueError(f"host bench: capacity_s must be > 0, got {capacity_s!r}")
        self.path = Path(path)
        self.model = model
        self.period_ns = int(round(1e9 / rate_hz))
        self.capacity = int(capacity_s * rate_hz) + 1
        self._read_busy = read_busy
        self._read_gpu = read_gpu
        self._stop = threading.Event()
        self._clock_ns = clock_ns
        self.t0_ns = clock_ns()
        size = HEADER_BYTES + self.capacity * RECORD_BYTES
        # Created under a temporary name and renamed: a reader never sees a half-made header.
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        _HEADER.pack_into(self._map, 0, MAGIC, self.t0_ns, self.capacity, self.period_ns,
                          model.idle_w, model.cpu_dynamic_w, model.gpu_dynamic_w, 0)
        self._records = np.frombuffer(self._map, dtype=_RECORD, count=self.capacity, offset=HEADER_BYTES)
        self._count_cell = _count_view(self._map)
        self.count = 0
        self._busy0: float | None = None
        self._gpu_s = 0.0
        self._last_ns = self.t0_ns
        self.sample()  # the first record exists before anyone can open the ring
        os.replace(tmp, self.path)

    def sample(self) -> None:
        """Append one record (the current cumulative load)."""
        busy_s, ncpu = self._read_busy()
        t_ns = self._clock_ns()
        if self._busy0 is None:
            self._busy0 = busy_s
        if self._read_gpu is not None:
            self._gpu_s += self._read_gpu() * (t_ns - self._last_ns) / 1e9
        self._last_ns = t_ns
        slot = self._records[self.count % self.capacity]
        slot["t_ns"] = t_ns
        slot["cpu_busy_s"] = (busy_s - self._busy0) / ncpu
        slot["gpu_busy_s"] = self._gpu_s
        self.count += 1
        # One aligned 8-byte store. (struct.pack_into zero-fills its target before writing the
        # bytes one by one: a reader in another process then sees count 0 now and then.)
        self._count_cell[0] = self.count

    def run(self) -> None:
        """Sample on absolute deadlines until :meth:`stop` (a late sample is taken at once)."""
        deadline = time.monotonic_ns()
        while not self._stop.is_set():
            deadline += self.period_ns
            delay = (deadline - time.monotonic_ns()) / 1e9
            if delay > 0:
                self._stop.wait(delay)
            else:
                deadline = time.monotonic_ns()  # fell behind (a loaded host): resynchronise
            self.sample()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._records = self._count_cell = None  # release the views before the map
        self._map.close()


class HostProfile:
    """The true power recorded in a host-bench ring, as a power profile over bench seconds
    (seconds since the ring's ``t0_ns``).

    Times before the first record read the first record's level (idle then); times after the
    newest record hold the newest level, which a meter with latency never needs.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise ValueError(f"host bench ring {self.path}: cannot open ({exc.strerror}); start "
                             "`hwval emulate host-bench --ring FILE` first") from None
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_BYTES:
                raise ValueError(f"host bench ring {self.path}: too short to be a ring ({size} bytes)")
            self._map = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        magic, t0_ns, capacity, period_ns, idle_w, cpu_w, gpu_w, _ = _HEADER.unpack_from(self._map, 0)
        if magic != MAGIC or size != HEADER_BYTES + capacity * RECORD_BYTES:
            raise ValueError(f"host bench ring {self.path}: not a hwval host-bench ring file")
        self.t0_ns = int(t0_ns)
        self.capacity = int(capacity)
        self.period_s = period_ns / 1e9
        self.model = HostPowerModel(idle_w, cpu_w, gpu_w)
        self._records = np.frombuffer(self._map, dtype=_RECORD, count=self.capacity, offset=HEADER_BYTES)
        self._count_cell = _count_view(self._map)

    # -- the ring ----------------------------------------------------------------------------
    def _count(self) -> int:
        return int(self._count_cell[0])

    def history(self, since_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(t_s, cumulative energy J)`` of every record still in the ring (after ``since_s``
        when given, keeping one record before it so intervals that start there can be integrated)."""
        for _ in range(5):
            count = self._count()
            first = max(0, count - self.capacity)
            idx = np.arange(first, count) % self.capacity
            rec = self._records[idx].copy()
            if self._count() - self.capacity < first + 1:  # nothing we read was overwritten meanwhile
                break
        else:
            raise RuntimeError(f"host bench ring {self.path}: the writer laps the reader")
        t_s = (rec["t_ns"] - self.t0_ns) / 1e9
        m = self.model
        energy = m.idle_w * t_s + m.cpu_dynamic_w * rec["cpu_busy_s"] + m.gpu_dynamic_w * rec["gpu_busy_s"]
        if since_s is not None and len(t_s) > 2:
            k = max(int(np.searchsorted(t_s, since_s)) - 1, 0)
            t_s, energy = t_s[k:], energy[k:]
        return t_s, energy

    def close(self) -> None:
        self._records = self._count_cell = None
        self._map.close()

    # -- the PowerProfile interface ------------------------------------------------------------
    def energy_to_j(self, t_s: float) -> float:
        """True energy from bench time 0 to ``t_s`` (idle power outside the recorded span)."""
        t, e = self._window(t_s)
        if t_s <= t[0]:
            return float(e[0] - self.model.idle_w * (t[0] - t_s))
        if t_s >= t[-1]:
            slope = (e[-1] - e[-2]) / (t[-1] - t[-2]) if len(t) > 1 and t[-1] > t[-2] else self.model.idle_w
            return float(e[-1] + slope * (t_s - t[-1]))
        return float(np.interp(t_s, t, e))

    def energy_j(self, t0_s: float, t1_s: float) -> float:
        return self.energy_to_j(t1_s) - self.energy_to_j(t0_s)

    def mean_w(self, t0_s: float, t1_s: float) -> float:
        if t1_s - t0_s <= 1e-12:
            return float(self.power_w(t1_s))
        return self.energy_j(t0_s, t1_s) / (t1_s - t0_s)

    @property
    def peak_w(self) -> float:
        """The highest power the model can reach (every CPU and GPU busy)."""
        m = self.model
        return m.idle_w + m.cpu_dynamic_w + m.gpu_dynamic_w

    def power_w(self, t_s: float | np.ndarray) -> float | np.ndarray:
        """The power over the sample interval containing ``t_s`` (scalar or array)."""
        if np.ndim(t_s) > 0:
            return np.array([self.power_w(float(x)) for x in np.ravel(t_s)]).reshape(np.shape(t_s))
        t, e = self._window(t_s)
        if len(t) < 2:
            return self.model.idle_w
        i = int(np.clip(np.searchsorted(t, t_s), 1, len(t) - 1))
        dt = t[i] - t[i - 1]
        return float((e[i] - e[i - 1]) / dt) if dt > 0 else self.model.idle_w

    def _window(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        # Meters ask about the last few seconds: read only the records around t_s, not the ring.
        count = self._count()
        newest_t = (int(self._records[(count - 1) % self.capacity]["t_ns"]) - self.t0_ns) / 1e9
        # records come at most every period_s (a late sampler takes fewer), so this many reach
        # back to t_s; the margin covers stamp jitter
        back = int(max(0.0, newest_t - t_s) / self.period_s) + _WINDOW_MARGIN
        n = min(count, self.capacity, back)
        idx = np.arange(count - n, count) % self.capacity
        rec = self._records[idx]
        t = (rec["t_ns"] - self.t0_ns) / 1e9
        if t_s < t[0] and n < min(count, self.capacity):  # further back than expected: read it all
            idx = np.arange(count - min(count, self.capacity), count) % self.capacity
            rec = self._records[idx]
            t = (rec["t_ns"] - self.t0_ns) / 1e9
        m = self.model
        e = m.idle_w * t + m.cpu_dynamic_w * rec["cpu_busy_s"] + m.gpu_dynamic_w * rec["gpu_busy_s"]
        return t, e
