"""What each GPU is (the identity the run file keeps) and what its power readings mean.

Sources: NVML API reference (nvmlDeviceGetPowerUsage: "On Ampere (except GA100) or
newer GPUs, the API returns power averaged over 1 sec interval. On GA100 and older
architectures, instantaneous power is returned"; nvmlDeviceGetTotalEnergyConsumption: mJ since
the driver was last reloaded, Volta and newer; nvmlDeviceGetFieldValues, nvmlValueType_t);
docs/measurement.md#errors-and-device-identity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pynvml

ARCHITECTURES = {
    pynvml.NVML_DEVICE_ARCH_KEPLER: "kepler",
    pynvml.NVML_DEVICE_ARCH_MAXWELL: "maxwell",
    pynvml.NVML_DEVICE_ARCH_PASCAL: "pascal",
    pynvml.NVML_DEVICE_ARCH_VOLTA: "volta",
    pynvml.NVML_DEVICE_ARCH_TURING: "turing",
    pynvml.NVML_DEVICE_ARCH_AMPERE: "ampere",
    pynvml.NVML_DEVICE_ARCH_ADA: "ada",
    pynvml.NVML_DEVICE_ARCH_HOPPER: "hopper",
    pynvml.NVML_DEVICE_ARCH_BLACKWELL: "blackwell",
}
#: GA100 boards (A100, A800, A30) report instantaneous power although they are Ampere.
_GA100_RE = re.compile(r"\bA(100|800|30)\b")


def architecture_name(code: int | None) -> str:
    if code is None:
        return "unknown"
    return ARCHITECTURES.get(code, f"unknown({code})")


def power_usage_semantics(arch_code: int | None, name: str) -> tuple[str, float | None]:
    """``(semantics, window_s)`` of ``nvmlDeviceGetPowerUsage`` for this GPU (NVIDIA's docs)."""
    if arch_code is not None and arch_code in ARCHITECTURES and arch_code >= pynvml.NVML_DEVICE_ARCH_AMPERE \
            and not _GA100_RE.search(name):
        return "window_mean", 1.0
    return "instant", None


@dataclass
class NvmlDevice:
    """One physical GPU as NVML enumerates it."""

    nvml_index: int
    handle: Any
    uuid: str
    mig_uuids: tuple[str, ...] = ()


def enumerate_devices() -> list[NvmlDevice]:
    """Every GPU NVML sees, in NVML (PCI bus) order, with the UUIDs of its MIG instances."""
    devices = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        devices.append(NvmlDevice(index, handle, pynvml.nvmlDeviceGetUUID(handle)))
    return devices


def mig_uuids(device: NvmlDevice) -> tuple[str, ...]:
    """UUIDs of the MIG instances of one GPU (empty when MIG is off or unsupported)."""
    try:
        count = pynvml.nvmlDeviceGetMaxMigDeviceCount(device.handle)
    except pynvml.NVMLError:
        return ()  # not a MIG-capable GPU
    found = []
    for i in range(count):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(device.handle, i)
            found.append(pynvml.nvmlDeviceGetUUID(mig))
        except pynvml.NVMLError:
            continue  # this slot holds no instance
    return tuple(found)


def _optional(func, *args) -> Any:
    try:
        return func(*args)
    except pynvml.NVMLError:
        return None  # identity fields are best effort: an old board lacks serials


def identity(device: NvmlDevice) -> dict[str, Any]:
    """What the run file should remember about this GPU."""
    h = device.handle
    arch = _optional(pynvml.nvmlDeviceGetArchitecture, h)
    limit_mw = _optional(pynvml.nvmlDeviceGetEnforcedPowerLimit, h)
    return {
        "name": _optional(pynvml.nvmlDeviceGetName, h),
        "uuid": device.uuid,
        "serial": _optional(pynvml.nvmlDeviceGetSerial, h),
        "driver_version": _optional(pynvml.nvmlSystemGetDriverVersion),
        "architecture": architecture_name(arch),
        "architecture_code": arch,
        "power_limit_w": None if limit_mw is None else limit_mw / 1000.0,
        "nvml_index": device.nvml_index,
    }


def field_value(value: "pynvml.c_nvmlFieldValue_t") -> float:
    """The number held by an NVML field value, whatever its declared type."""
    member = {
        pynvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
        pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
        pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
        pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
        pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
        pynvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
        pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal",
    }.get(value.valueType)
    if member is None:
        raise ValueError(f"NVML field {value.fieldId} has unknown value type {value.valueType}")
    return float(getattr(value.value, member))
