"""Which NVML device is ``cuda:i``: ``CUDA_VISIBLE_DEVICES`` read the way CUDA reads it.

``CUDA_VISIBLE_DEVICES`` lists integer indices (in PCI bus order when
``CUDA_DEVICE_ORDER=PCI_BUS_ID``, NVML's own order), ``GPU-<uuid>`` (a unique prefix is enough) or
MIG instance ids (``MIG-<uuid>``, legacy ``MIG-GPU-<uuid>/<gi>/<ci>``). CUDA stops at the first
entry it cannot resolve: the devices before it stay visible, the rest are hidden. We resolve
every entry to an NVML device UUID, so stream ``nvml_gpu<i>`` is the device the workload calls
``cuda:i`` whatever the ordering. A MIG instance has no power sensor of its own: it maps to its
parent GPU (whose board power it shares), and a parent listed twice is measured once.

Sources: CUDA C Programming Guide, "CUDA Environment Variables" (CUDA_VISIBLE_DEVICES,
CUDA_DEVICE_ORDER); docs/measurement.md#errors-and-device-identity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hwval.sources.nvml.devices import NvmlDevice, mig_uuids


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
class VisibleGpu:
    """A GPU the workload can see, as ``cuda:<cuda_index>``."""

    cuda_index: int
    device: NvmlDevice
    #: The CUDA_VISIBLE_DEVICES entry it came from (``None`` when the variable is unset).
    entry: str | None = None
    via_mig: str | None = None
    notes: list[str] = field(default_factory=list)


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
                        d.mig_uuids = mig_uuids(d)
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
