"""A simulated NVML: GPUs whose power follows the emulated bench, behind the real ``pynvml`` API.

For tests, benchmarks and dry runs without a GPU. :meth:`SimNvml.patch` replaces the ``pynvml``
functions the ``nvml`` source calls with ``unittest.mock`` autospecs of the real functions (so a
call with the wrong arguments fails as it would against the library) whose side effects answer
from the simulated GPUs, and raise real ``pynvml.NVMLError`` codes for faults.

Each :class:`SimGpu` draws ``share`` of the bench's true power. Its readings change only every
``update_s`` (like the firmware's ~10-100 ms refresh): ``nvmlDeviceGetPowerUsage`` is the 1 s
mean (Ampere+) or the instant power (``averaging=False``) at the last update, in integer mW;
``nvmlDeviceGetTotalEnergyConsumption`` is ``base_mj + floor(true energy * 1000)`` at the last
update; the POWER_INSTANT / POWER_AVERAGE field values likewise.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterator
from unittest import mock

import pynvml

from hwval.benchmodel import Bench, MeterModel, PowerProfile
from hwval.sources.emulated import EMULATOR_MARK


@dataclass
class SimGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    serial: str = "1650923000001"
    architecture: int = pynvml.NVML_DEVICE_ARCH_HOPPER
    power_limit_mw: int = 700_000
    share: float = 1.0
    update_s: float = 0.02
    #: ``True``: power usage is a 1 s mean (Ampere+ except GA100); ``False``: instantaneous.
    averaging: bool = True
    base_mj: int = 123_456_789
    #: Readings this GPU does not support: any of ``power``, ``energy``, ``instant``,
    #: ``average``, ``fields`` (the whole nvmlDeviceGetFieldValues call).
    unsupported: frozenset[str] = frozenset()
    mig_uuids: tuple[str, ...] = ()


class _Handle:
    """Stands for a ``c_nvmlDevice_t``: the simulated GPU it designates."""

    def __init__(self, gpu: SimGpu, mig_uuid: str | None = None) -> None:
        self.gpu = gpu
        self.mig_uuid = mig_uuid

    def __repr__(self) -> str:
        return f"<sim handle {self.mig_uuid or self.gpu.uuid}>"


@dataclass
class SimNvml:
    """A simulated driver with ``gpus`` in NVML (PCI) order."""

    gpus: list[SimGpu]
    profile: PowerProfile = field(default_factory=lambda: PowerProfile.parse("steps"))
    t0_ns: int = field(default_factory=time.monotonic_ns)
    #: the simulated driver says it is one (hwval.sources.emulated): its GPUs are recorded as emulated
    driver_version: str = f"560.35.03 {EMULATOR_MARK}"
    #: NVML error code ``nvmlInit`` fails with (``NVML_ERROR_LIBRARY_NOT_FOUND``: no driver).
    init_error: int | None = None

    def __post_init__(self) -> None:
        self.bench = Bench(self.profile, t0_ns=self.t0_ns)
        self._faults: dict[tuple[str, str], list[int]] = defaultdict(list)
        self._lost: set[str] = set()
        self.calls: dict[str, int] = defaultdict(int)
        self.initialised = 0

    # -- fault injection -----------------------------------------------------------------------
    def fail(self, uuid: str, function: str, code: int, times: int = 1) -> None:
        """The next ``times`` calls of ``function`` (e.g. ``nvmlDeviceGetPowerUsage``) on GPU
        ``uuid`` raise ``NVMLError(code)``."""
        self._faults[(uuid, function)].extend([code] * times)

    def lose(self, uuid: str) -> None:
        """From now on every call on this GPU raises GPU_IS_LOST."""
        self._lost.add(uuid)

    def restore(self, uuid: str) -> None:
        self._lost.discard(uuid)

    # -- truth -----------------------------------------------------------------------------------
    def _tick_ns(self, gpu: SimGpu, t_ns: int) -> int:
        """Monotonic time of the GPU's last update at or before ``t_ns``."""
        step = int(gpu.update_s * 1e9)
        return self.t0_ns + ((t_ns - self.t0_ns) // step) * step

    def true_energy_j(self, gpu: SimGpu, t0_ns: int, t1_ns: int) -> float:
        return gpu.share * self.bench.true_energy_j(t0_ns, t1_ns)

    def counter_mj(self, gpu: SimGpu, t_ns: int) -> int:
        tick = self._tick_ns(gpu, t_ns)
        return gpu.base_mj + math.floor(gpu.share * self.profile.energy_to_j(self.bench.t_s(tick)) * 1e3)

    def _power_mw(self, gpu: SimGpu, t_ns: int, window_s: float) -> int:
        tick = self._tick_ns(gpu, t_ns)
        return int(round(gpu.share * self.bench.read(MeterModel(window_s=window_s), tick) * 1e3))

    # -- the API ------------------------------------------------------------------------------------
    def _gpu(self, handle: _Handle, function: str) -> SimGpu:
        self.calls[function] += 1
        if not self.initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        gpu = handle.gpu
        if gpu.uuid in self._lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        queue = self._faults.get((gpu.uuid, function))
        if queue:
            raise pynvml.NVMLError(queue.pop(0))
        return gpu

    def _unsupported(self, gpu: SimGpu, what: str) -> None:
        if what in gpu.unsupported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def _implementations(self) -> dict:
        def nvmlInit():
            self.calls["nvmlInit"] += 1
            if self.init_error is not None:
                raise pynvml.NVMLError(self.init_error)
            self.initialised += 1

        def nvmlShutdown():
            self.calls["nvmlShutdown"] += 1
            if not self.initialised:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
            self.initialised -= 1

        def need_init(function: str) -> None:
            # Like the library: every call but nvmlInit fails before nvmlInit succeeded.
            self.calls[function] += 1
            if not self.initialised:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

        def nvmlSystemGetDriverVersion():
            need_init("nvmlSystemGetDriverVersion")
            return self.driver_version

        def nvmlDeviceGetCount():
            need_init("nvmlDeviceGetCount")
            return len(self.gpus)

        def nvmlDeviceGetHandleByIndex(index):
            need_init("nvmlDeviceGetHandleByIndex")
            if not 0 <= index < len(self.gpus):
                raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            return _Handle(self.gpus[index])

        def nvmlDeviceGetUUID(handle):
            self._gpu(handle, "nvmlDeviceGetUUID")
            return handle.mig_uuid or handle.gpu.uuid

        def nvmlDeviceGetName(handle):
            return self._gpu(handle, "nvmlDeviceGetName").name

        def nvmlDeviceGetSerial(handle):
            return self._gpu(handle, "nvmlDeviceGetSerial").serial

        def nvmlDeviceGetArchitecture(device):
            return self._gpu(device, "nvmlDeviceGetArchitecture").architecture

        def nvmlDeviceGetEnforcedPowerLimit(handle):
            return self._gpu(handle, "nvmlDeviceGetEnforcedPowerLimit").power_limit_mw

        def nvmlDeviceGetPowerUsage(handle):
            gpu = self._gpu(handle, "nvmlDeviceGetPowerUsage")
            self._unsupported(gpu, "power")
            return self._power_mw(gpu, time.monotonic_ns(), 1.0 if gpu.averaging else 0.0)

        def nvmlDeviceGetTotalEnergyConsumption(handle):
            gpu = self._gpu(handle, "nvmlDeviceGetTotalEnergyConsumption")
            self._unsupported(gpu, "energy")
            return self.counter_mj(gpu, time.monotonic_ns())

        def nvmlDeviceGetFieldValues(handle, fieldIds):
            gpu = self._gpu(handle, "nvmlDeviceGetFieldValues")
            self._unsupported(gpu, "fields")
            now = time.monotonic_ns()
            values = (pynvml.c_nvmlFieldValue_t * len(fieldIds))()
            for i, fid in enumerate(fieldIds):
                v = values[i]
                v.fieldId = fid
                v.timestamp = now // 1000
                v.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
                if fid == pynvml.NVML_FI_DEV_POWER_INSTANT and "instant" not in gpu.unsupported:
                    v.nvmlReturn = pynvml.NVML_SUCCESS
                    v.value.uiVal = self._power_mw(gpu, now, 0.0)
                elif fid == pynvml.NVML_FI_DEV_POWER_AVERAGE and "average" not in gpu.unsupported:
                    v.nvmlReturn = pynvml.NVML_SUCCESS
                    v.value.uiVal = self._power_mw(gpu, now, 1.0)
                else:
                    v.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
            return values

        def nvmlDeviceGetMaxMigDeviceCount(device):
            gpu = self._gpu(device, "nvmlDeviceGetMaxMigDeviceCount")
            if not gpu.mig_uuids:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return 7

        def nvmlDeviceGetMigDeviceHandleByIndex(device, index):
            gpu = self._gpu(device, "nvmlDeviceGetMigDeviceHandleByIndex")
            if index >= len(gpu.mig_uuids):
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
            return _Handle(gpu, gpu.mig_uuids[index])

        return {f.__name__: f for f in (
            nvmlInit, nvmlShutdown, nvmlSystemGetDriverVersion, nvmlDeviceGetCount,
            nvmlDeviceGetHandleByIndex, nvmlDeviceGetUUID, nvmlDeviceGetName, nvmlDeviceGetSerial,
            nvmlDeviceGetArchitecture, nvmlDeviceGetEnforcedPowerLimit, nvmlDeviceGetPowerUsage,
            nvmlDeviceGetTotalEnergyConsumption, nvmlDeviceGetFieldValues,
            nvmlDeviceGetMaxMigDeviceCount, nvmlDeviceGetMigDeviceHandleByIndex)}

    @contextlib.contextmanager
    def patch(self) -> Iterator[dict[str, mock.MagicMock]]:
        """Install the simulation into ``pynvml`` (autospec of each real function)."""
        with contextlib.ExitStack() as stack:
            mocks = {name: stack.enter_context(
                         mock.patch.object(pynvml, name, autospec=True, side_effect=impl))
                     for name, impl in self._implementations().items()}
            yield mocks
