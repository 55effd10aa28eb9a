"""Discovery of RAPL domains in a Linux powercap tree (``/sys/class/powercap``).

The kernel's ``intel_rapl_common`` driver (also used for AMD Zen) registers one powercap *zone*
per RAPL domain: ``intel-rapl:N`` for each package (``name`` = ``package-N``) or the platform
(``psys``), and nested ``intel-rapl:N:M`` subzones for ``core``, ``uncore`` and ``dram`` of
package N. Every zone has ``name``, ``energy_uj`` (a counter in microjoules that wraps at
``max_energy_range_uj``) and optional ``constraint_K_*`` files. ``/sys/class/powercap`` lists
every zone, nested ones included, as a symlink into ``/sys/devices/virtual/powercap``; a plain
directory tree with nested subdirectories is accepted too (the emulator builds both).

Some Intel client parts also expose the package through MMIO (``intel-rapl-mmio:0``, name
``package-0``): the same energy read through another path. It is skipped when the MSR zone of
the same name exists, so a package is never counted twice.

Sources: Linux Documentation/power/powercap/powercap.rst and drivers/powercap/intel_rapl_common.c
(zone layout, file names); docs/measurement.md#rapl (wrap, root-only since 5.10, AMD dual-die
packages).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_POWERCAP_ROOT = "/sys/class/powercap"
#: File the powercap emulator puts in the root of the trees it builds: streams read from such a
#: tree are recorded as ``emulated`` so a dry run is never mistaken for a measurement.
EMULATOR_MARKER = ".hwval-powercap"

#: Zone directory names of the RAPL control types (MSR and MMIO interfaces).
_ZONE_RE = re.compile(r"^(intel-rapl|intel-rapl-mmio):(\d+)(?::(\d+))?$")

#: Domain name (``name`` file, ``package-N`` reduced to ``package``) -> stream scope.
SCOPES = {"package": "cpu_package", "core": "core", "uncore": "uncore", "dram": "dram",
          "psys": "psys"}

#: Which domains the kernel counts inside another one: ``core`` and ``uncore`` are parts of their
#: package; ``psys`` covers the whole platform. ``dram`` is separate from the package.
#: Recorded in the identity so a total over streams never sums a part with its whole.
PART_OF_PACKAGE = frozenset({"core", "uncore"})


@dataclass(frozen=True)
class RaplDomain:
    """One readable RAPL domain.

    ``zone`` is the powercap zone id (``intel-rapl:0:1``), ``kind`` the domain name without its
    package number (``package``, ``core``, ``uncore``, ``dram``, ``psys`` or another name the
    kernel reports), ``package`` the package index it belongs to (nested zones belong to their
    parent's package), ``stream`` the stable stream name (``rapl_dram_0``).
    """

    zone: str
    path: Path
    name: str
    kind: str
    package: int
    stream: str
    max_energy_range_uj: int
    #: Largest ``constraint_*_max_power_uw`` of the zone in watts, ``None`` when absent.
    max_power_w: float | None
    parent_stream: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def energy_path(self) -> Path:
        return self.path / "energy_uj"

    @property
    def scope(self) -> str:
        return SCOPES.get(self.kind, self.kind)


class PowercapError(Exception):
    """The tree exists but a zone is malformed (message names the file)."""


def _read_text(path: Path) -> str:
    with open(path, "rb") as fh:
        return fh.read().decode("ascii", "replace").strip()


def _max_power_w(zone_dir: Path) -> float | None:
    """Largest ``constraint_K_max_power_uw`` of a zone: the power the domain may reach."""
    best = None
    for item in zone_dir.glob("constraint_*_max_power_uw"):
        try:
            value_uw = int(_read_text(item))
        except (OSError, ValueError):
            continue  # optional file; a zone without it falls back to the default bound
        if value_uw > 0:
            best = max(best or 0.0, value_uw / 1e6)
    return best


def _zone_dirs(root: Path) -> dict[str, Path]:
    """Every zone directory below ``root`` (flat symlinks and nested folders), by zone id."""
    found: dict[str, Path] = {}
    seen_real: set[str] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue  # a vanished or unreadable subfolder is simply not a zone
        for entry in entries:
            if not _ZONE_RE.match(entry.name):
                continue
            try:
                if not entry.is_dir():
                    continue
            except OSError:
                continue
            real = os.path.realpath(entry.path)
            if real in seen_real:
                continue
            seen_real.add(real)
            found[entry.name] = Path(entry.path)
            stack.append(Path(entry.path))
    return found


def _sort_key(zone: str) -> tuple:
    m = _ZONE_RE.match(zone)
    assert m is not None
    return (m.group(1) != "intel-rapl", int(m.group(2)), -1 if m.group(3) is None else int(m.group(3)))


def discover(root: str | os.PathLike = DEFAULT_POWERCAP_ROOT, prefix: str = "rapl") -> list[RaplDomain]:
    """List the RAPL domains under ``root`` with stable stream names.

    Stream names are ``<prefix>_<kind>_<package>`` (``rapl_package_0``, ``rapl_dram_1``,
    ``rapl_psys_0``): they depend only on each domain's ``name`` and package, never on the
    order the kernel enumerated zones in. A name used twice (two dies reporting the same
    ``package-0``) gets the zone numbers appended (``rapl_package_0_z1``) so both stay separate
    streams and neither is dropped or summed into the other.

    Returns an empty list when there is no powercap tree or no RAPL zone in it.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    zones = _zone_dirs(root)
    # First pass: names and parents.
    raw: list[tuple[str, Path, str, str | None]] = []
    for zone in sorted(zones, key=_sort_key):
        path = zones[zone]
        try:
            name = _read_text(path / "name")
        except OSError as exc:
            raise PowercapError(f"cannot read {path / 'name'}: {exc.strerror or exc}") from None
        m = _ZONE_RE.match(zone)
        assert m is not None
        parent = f"{m.group(1)}:{m.group(2)}" if m.group(3) is not None else None
        raw.append((zone, path, name, parent))

    msr_names = {name for zone, _, name, parent in raw
                 if zone.startswith("intel-rapl:") and parent is None}
    names_by_zone = {zone: name for zone, _, name, _ in raw}
    domains: list[RaplDomain] = []
    used: dict[str, int] = {}
    psys_count = 0
    stream_by_zone: dict[str, str] = {}
    for zone, path, name, parent in raw:
        notes: list[str] = []
        if zone.startswith("intel-rapl-mmio:") and parent is None and name in msr_names:
            continue  # same package energy as the MSR zone: reading both would double it
        m_pkg = re.match(r"^package-(\d+)$", name)
        if m_pkg:
            kind, package = "package", int(m_pkg.group(1))
        else:
            kind = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "domain"
            if parent is not None:
                pm = re.match(r"^package-(\d+)$", names_by_zone.get(parent, ""))
                package = int(pm.group(1)) if pm else int(_ZONE_RE.match(parent).group(2))
            elif kind == "psys":
                package, psys_count = psys_count, psys_count + 1
            else:
                package = int(_ZONE_RE.match(zone).group(2))
        stream = f"{prefix}_{kind}_{package}"
        if stream in used:
            suffix = zone.split(":", 1)[1].replace(":", "_")
            notes.append(f"another zone is also named {name!r}; this one is {zone}")
            stream = f"{stream}_z{suffix}"
        used[stream] = 1
        try:
            max_range_uj = int(_read_text(path / "max_energy_range_uj"))
        except (OSError, ValueError) as exc:
            raise PowercapError(
                f"cannot read {path / 'max_energy_range_uj'} as an integer: {exc}") from None
        if max_range_uj <= 0:
            raise PowercapError(f"{path / 'max_energy_range_uj'} is {max_range_uj}; expected > 0")
        stream_by_zone[zone] = stream
        parent_stream = None
        if parent is not None and kind in PART_OF_PACKAGE:
            parent_stream = stream_by_zone.get(parent)
        domains.append(RaplDomain(zone=zone, path=path, name=name, kind=kind, package=package,
                                  stream=stream, max_energy_range_uj=max_range_uj,
                                  max_power_w=_max_power_w(path), parent_stream=parent_stream,
                                  notes=tuple(notes)))
    return domains
