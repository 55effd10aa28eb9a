"""Which NVML device is ``cuda:i``, what each GPU is, and what its power readings mean.

``CUDA_VISIBLE_DEVICES`` lists integer indices (in PCI bus order when
``CUDA_DEVICE_ORDER=PCI_BUS_ID``, NVML's own order), ``GPU-<uuid>`` (a unique prefix is enough) or
MIG instance ids (``MIG-<uuid>``, legacy ``MIG-GPU-<uuid>/<gi>/<ci>``). CUDA stops at the first
entry it cannot resolve: the devices before it stay visible, the rest are hidden. We resolve
every entry to an NVML device UUID, so stream ``nvml_gpu<i>`` is the device the workload calls
``cuda:i`` whatever the ordering. A MIG instance has no power sensor of its own: it maps to its
parent GPU (whose board power it shares), and a parent listed twice is measured once.

Sources: CUDA C Programming Guide, "CUDA Environment Variables" (CUDA_VISIBLE_DEVICES,
CUDA_DEVICE_ORDER); NVML API reference (nvmlDeviceGetPowerUsage: "On Ampere (except GA100) or
newer GPUs, the API returns power averaged over 1 sec interval. On GA100 and older
architectures, instantaneous power is returned"; nvmlDeviceGetTotalEnergyConsumption: mJ since
the driver was last reloaded, Volta and newer); docs/measurement.md#errors-and-device-identity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
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

#: NVML errors after which the same call may succeed (a gap, then retry).
TRANSIENT_CODES = frozenset({
    pynvml.NVML_ERROR_UNKNOWN, pynvml.NVML_ERROR_TIMEOUT, pynvml.NVML_ERROR_IRQ_ISSUE,
    pynvml.NVML_ERROR_INSUFFICIENT_POWER, pynvml.NVML_ERROR_MEMORY,
    pynvml.NVML_ERROR_OPERATING_SYSTEM, pynvml.NVML_ERROR_INSUFFICIENT_SIZE,
    pynvml.NVML_ERROR_NOT_READY, pynvml.NVML_ERROR_NO_DATA, pynvml.NVML_ERROR_IN_USE,
})
#: NVML errors meaning this GPU cannot give this value at all (old board, old driver, MIG).
UNSUPPORTED_CODES = frozenset({pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND})
#: NVML errors meaning the library lost its state (driver reloaded, NVML shut down by someone
#: else): the source must be closed and opened again.
REOPEN_CODES = frozenset({pynvml.NVML_ERROR_UNINITIALIZED, pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
                          pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH})
#: NVML errors meaning the GPU is gone until it is reset.
LOST_CODES = frozenset({pynvml.NVML_ERROR_GPU_IS_LOST, pynvml.NVML_ERROR_RESET_REQUIRED,
                        pynvml.NVML_ERROR_GPU_NOT_FOUND})


def error_name(exc: pynvml.NVMLError) -> str:
    """``NVML_ERROR_GPU_IS_LOST``-style name of an NVML error code (for events and counts)."""
    for name in dir(pynvml):
        if name.startswith("NVML_ERROR_") and getattr(pynvml, name) == exc.value:
            return name
    return f"NVML_ERROR_{exc.value}"


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


@dataclass(frozen=True)
class VisibleEntries:
    """``CUDA_VISIBLE_DEVICES`` split into entries; ``None`` = every device is visible."""

    entries: tuple[str, ...] | None
    notes: tuple[str, ...] = ()


_ENTRY_RE = re.compile(r"^(\d+|GPU-[0-9A-Fa-f-]+|MIG-[0-9A-Za-z/-]+)$")


def parse_visible(value: str | None) -> VisibleEntries:
    """Split a ``CUDA_VISIBLE_DEVICES`` value the way CUDA reads it.

    ``None`` (unset) means every GPU; ``""`` means none. Parsing stops at the first malformed
    entry (e.g. ``-1``, which people use to hide every GPU): CUDA ignores it and all after it.
    """
    if value is None:
        return VisibleEntries(None)
    entries: list[str] = []
    notes: list[str] = []
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        if not _ENTRY_RE.match(item):
            notes.append(f"CUDA_VISIBLE_DEVICES entry {item!r} is invalid: CUDA ignores it and "
                         "every entry after it")
            break
        entries.append(item)
    return VisibleEntries(tuple(entries), tuple(notes))


@dataclass
class NvmlDevice:
    """One physical GPU as NVML enumerates it."""

    nvml_index: int
    handle: Any
    uuid: str
    mig_uuids: tuple[str, ...] = ()


@dataclass
class VisibleGpu:
    """A GPU the workload can see, as ``cuda:<cuda_index>``."""

    cuda_index: int
    device: NvmlDevice
    #: The CUDA_VISIBLE_DEVICES entry it came from (``None`` when the variable is unset).
    entry: str | None = None
    via_mig: str | None = None
    notes: list[str] = field(default_factory=list)


def enumerate_devices() -> list[NvmlDevice]:
    """Every GPU NVML sees, in NVML (PCI bus) order, with the UUIDs of its MIG instances."""
    devices = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        devices.append(NvmlDevice(index, handle, pynvml.nvmlDeviceGetUUID(handle)))
    return devices


def _mig_uuids(device: NvmlDevice) -> tuple[str, ...]:
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


def resolve_visible(visible: VisibleEntries, devices: list[NvmlDevice]) -> tuple[list[VisibleGpu], list[str]]:
    """Map visible entries to devices; returns the GPUs (``cuda_index`` order) and notes."""
    notes = list(visible.notes)
    if visible.entries is None:
        return [VisibleGpu(d.nvml_index, d) for d in devices], notes
    out: list[VisibleGpu] = []
    seen: dict[str, int] = {}
    mig_loaded = False
    for cuda_index, entry in enumerate(visible.entries):
        device, via_mig, matches = None, None, []
        if entry.isdigit():
            k = int(entry)
            device = devices[k] if k < len(devices) else None
        elif entry.startswith("GPU-"):
            # CUDA accepts a UUID prefix only when it names one device.
            matches = [d for d in devices if d.uuid.startswith(entry)]
            device = matches[0] if len(matches) == 1 else None
        else:  # MIG-<uuid> or legacy MIG-GPU-<uuid>/<gi>/<ci>
            if entry.startswith("MIG-GPU-"):
                parent = entry[4:].split("/", 1)[0]
                matches = [d for d in devices if d.uuid == parent]
            else:
                if not mig_loaded:
                    for d in devices:
                        d.mig_uuids = _mig_uuids(d)
                    mig_loaded = True
                matches = [d for d in devices if entry in d.mig_uuids]
            device = matches[0] if matches else None
            via_mig = entry
        if device is None:
            what = f"matches {len(matches)} GPUs" if len(matches) > 1 else "matches no GPU"
            notes.append(f"CUDA_VISIBLE_DEVICES entry {entry!r} {what}: CUDA ignores it and "
                         "every entry after it")
            break
        if device.uuid in seen:
            notes.append(f"{entry!r} is on the same GPU as cuda:{seen[device.uuid]} "
                         f"({device.uuid}): measured once, as nvml_gpu{seen[device.uuid]}")
            continue
        seen[device.uuid] = cuda_index
        gpu = VisibleGpu(cuda_index, device, entry, via_mig)
        if via_mig:
            gpu.notes.append(f"MIG instance {via_mig}: power and energy are the whole parent GPU "
                             f"{device.uuid}, shared with its other instances")
        out.append(gpu)
    return out, notes


def order_note(visible: VisibleEntries, names: list[str], device_order: str | None) -> str | None:
    """A warning when integer indices may not mean what NVML thinks (mixed GPUs, fastest first)."""
    uses_indices = visible.entries is None or any(e.isdigit() for e in visible.entries)
    if uses_indices and (device_order or "FASTEST_FIRST") != "PCI_BUS_ID" and len(set(names)) > 1:
        return ("CUDA_DEVICE_ORDER is not PCI_BUS_ID and the GPUs differ: CUDA numbers the fastest "
                "first, NVML by PCI bus; set CUDA_DEVICE_ORDER=PCI_BUS_ID (or list GPU UUIDs) so "
                "nvml_gpu<i> is cuda:i")
    return None


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
