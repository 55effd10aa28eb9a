"""``hwval emulate powercap``: a live fake Linux powercap tree for ``--rapl-root``.

The tree mirrors ``/sys/class/powercap`` (drivers/powercap/intel_rapl_common.c,
Documentation/power/powercap/powercap.rst): zone folders ``devices/intel-rapl/intel-rapl:N``
with nested ``intel-rapl:N:M``, and a flat symlink per zone at the top, each with ``name``,
``energy_uj``, ``max_energy_range_uj``, ``enabled`` and ``constraint_0_*`` files.

Every domain draws a fixed share of the bench's true power (table :data:`SHARES`); its counter
is ``(start_uj + floor(share * E(t) * 1e6)) mod (max_energy_range_uj + 1)`` where ``E(t)`` is
the bench profile's exact energy since bench time 0, rewritten every ``--update-s`` (RAPL
updates about every 1 ms). So the energy any reader should find between two instants is known
exactly: ``share * bench.true_energy_j(t0, t1)``; the shares are in the ``--ready-file`` and
``true_energy_uj.json`` (in the root) holds the true cumulative energy of each zone as of the
last update.

Counters are rewritten in place with a fixed-width ``pwrite`` (the number right-aligned, then a
newline) instead of a rename, so a reader holding the file open sees every update, and never an
empty file.

Example::

    hwval emulate powercap --root /tmp/pc --packages 2 --max-energy-range-uj 50000000
    hwval capture --rapl-root /tmp/pc --duration 10 -o dry.h5
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import click

from hwval.clock import PeriodicSchedule, now_ns
from hwval.sources.rapl.zones import EMULATOR_MARKER
from hwval.benchmodel import Bench, MeterModel
from hwval.emulators.options import announce, bench_options

#: The kernel's value on most Intel parts (2^32 - 1 units of 61.035 uJ).
DEFAULT_MAX_ENERGY_RANGE_UJ = 262143328850
#: Share of the bench's true power each domain draws. A package takes the bench profile split
#: over the packages; core and uncore are parts of their package (as on real hardware), DRAM is
#: separate, psys covers the platform (more than packages + DRAM).
SHARES = {"package": 1.0, "core": 0.6, "uncore": 0.1, "dram": 0.15, "psys": 1.3}
MARKER = EMULATOR_MARKER  # the rapl source recognises emulated trees by it
TRUTH_FILE = "true_energy_uj.json"
TRUTH_INTERVAL_S = 0.1


@dataclass(frozen=True)
class Zone:
    zone: str           # intel-rapl:0:1
    rel: str            # devices/intel-rapl/intel-rapl:0/intel-rapl:0:1 (path below the root)
    name: str           # dram
    share: float        # fraction of the bench's true power


def plan_zones(packages: int = 1, nested: tuple[str, ...] = ("core", "dram"),
               psys: bool = False, layout: str = "sysfs") -> list[Zone]:
    """The zones of a tree with ``packages`` packages, each with the ``nested`` subdomains."""
    if packages < 1:
        raise ValueError(f"packages must be >= 1, got {packages}")
    for kind in nested:
        if kind not in ("core", "uncore", "dram"):
            raise ValueError(f"nested domain {kind!r} unknown; use core, uncore, dram")
    base = "devices/intel-rapl/" if layout == "sysfs" else ""
    zones = []
    for p in range(packages):
        pkg = f"intel-rapl:{p}"
        zones.append(Zone(pkg, f"{base}{pkg}", f"package-{p}", SHARES["package"] / packages))
        for m, kind in enumerate(nested):
            sub = f"{pkg}:{m}"
            zones.append(Zone(sub, f"{base}{pkg}/{sub}", kind, SHARES[kind] / packages))
    if psys:
        z = f"intel-rapl:{packages}"
        zones.append(Zone(z, f"{base}{z}", "psys", SHARES["psys"]))
    return zones


def _width(max_energy_range_uj: int) -> int:
    return len(str(max_energy_range_uj))


def format_counter(value_uj: int, max_energy_range_uj: int) -> bytes:
    """The fixed-width text of ``energy_uj`` (``int()`` parses it like the kernel's)."""
    return f"{value_uj:>{_width(max_energy_range_uj)}d}\n".encode()


def build_tree(root: str | os.PathLike, zones: list[Zone], max_energy_range_uj: int,
               max_power_uw: dict[str, int], start_uj: int = 0, layout: str = "sysfs") -> None:
    """Create the zone folders and files under ``root`` (which must exist)."""
    root = Path(root)
    (root / MARKER).write_text("hwval powercap emulator tree\n")
    if layout == "sysfs":
        ctl = root / "devices" / "intel-rapl"
        ctl.mkdir(parents=True, exist_ok=True)
        (ctl / "enabled").write_text("1\n")
        os.symlink("devices/intel-rapl", root / "intel-rapl")
    for z in zones:
        d = root / z.rel
        d.mkdir(parents=True, exist_ok=True)
        (d / "name").write_text(z.name + "\n")
        (d / "max_energy_range_uj").write_text(f"{max_energy_range_uj}\n")
        (d / "enabled").write_text("1\n")
        (d / "constraint_0_name").write_text("long_term\n")
        (d / "constraint_0_max_power_uw").write_text(f"{max_power_uw[z.zone]}\n")
        (d / "constraint_0_power_limit_uw").write_text(f"{max_power_uw[z.zone]}\n")
        (d / "constraint_0_time_window_us").write_text("999424\n")
        (d / "energy_uj").write_bytes(format_counter(start_uj % (max_energy_range_uj + 1),
                                                      max_energy_range_uj))
        if layout == "sysfs":
            os.symlink(z.rel, root / z.zone)


class PowercapWriter:
    """Advances the counters of a built tree from a bench profile."""

    def __init__(self, root: str | os.PathLike, zones: list[Zone], bench: Bench,
                 max_energy_range_uj: int, start_uj: int = 0, model: MeterModel | None = None) -> None:
        self.root = Path(root)
        # A software meter is rarely right: the counters advance by gain x true energy plus
        # offset_w x elapsed time (per zone share), so a dry run can show a biased RAPL.
        self.gain = model.gain if model else 1.0
        self.offset_w = model.offset_w if model else 0.0
        # The counter may also trail the true energy (a firmware that updates its register late):
        # it then holds the energy up to t - latency_s, what `hwval sync` measures as a lag.
        self.latency_s = model.latency_s if model else 0.0
        self.zones = zones
        self.bench = bench
        self.max_energy_range_uj = max_energy_range_uj
        self.modulus_uj = max_energy_range_uj + 1
        self.start_uj = start_uj
        self.fds = [os.open(self.root / z.rel / "energy_uj", os.O_WRONLY | os.O_CLOEXEC)
                    for z in zones]
        self.true_uj = [0] * len(zones)
        self.counter_uj = [0] * len(zones)
        self.last_t_ns = bench.t0_ns
        self._energy_t_ns, self._energy_j = None, 0.0

    def true_uj_at(self, zone_index: int, t_ns: int) -> int:
        """True energy of a zone from bench time 0 to ``t_ns``, floored to whole microjoules."""
        if t_ns != self._energy_t_ns:
            # every zone is a share of one bench energy: compute it once per instant (a host
            # bench reads its ring for it, and this runs every update, for every zone)
            self._energy_t_ns, self._energy_j = t_ns, self.bench.profile.energy_to_j(self.bench.t_s(t_ns))
        return math.floor(self.zones[zone_index].share * self._energy_j * 1e6)

    def counter_uj_at(self, zone_index: int, t_ns: int) -> int:
        """What the zone's counter has accumulated by ``t_ns``: the true energy seen through the
        meter's gain and offset (equal to :meth:`true_uj_at` with the defaults)."""
        if self.latency_s:
            t_ns -= int(round(self.latency_s * 1e9))
        true_uj = self.true_uj_at(zone_index, t_ns)
        if self.gain == 1.0 and self.offset_w == 0.0:
            return true_uj
        offset_uj = self.offset_w * self.zones[zone_index].share * self.bench.t_s(t_ns) * 1e6
        return math.floor(self.gain * true_uj + offset_uj)

    def update(self, t_ns: int | None = None) -> None:
        t_ns = now_ns() if t_ns is None else t_ns
        for i, fd in enumerate(self.fds):
            self.true_uj[i] = self.true_uj_at(i, t_ns)
            # a counter never runs backwards (a negative offset cannot undo energy)
            counter_uj = self.counter_uj[i] = max(self.counter_uj[i], self.counter_uj_at(i, t_ns))
            os.pwrite(fd, format_counter((self.start_uj + counter_uj) % self.modulus_uj,
                                         self.max_energy_range_uj), 0)
        self.last_t_ns = t_ns

    def write_truth(self) -> None:
        doc = {"t_monotonic_ns": self.last_t_ns, "t0_monotonic_ns": self.bench.t0_ns,
               "start_uj": self.start_uj, "max_energy_range_uj": self.max_energy_range_uj,
               "gain": self.gain, "offset_w": self.offset_w, "latency_s": self.latency_s,
               "zones": {z.zone: {"name": z.name, "share": z.share, "true_uj": uj, "counter_uj": cuj}
                         for z, uj, cuj in zip(self.zones, self.true_uj, self.counter_uj)}}
        tmp = self.root / (TRUTH_FILE + ".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.root / TRUTH_FILE)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def _prepare_root(root: str | None) -> tuple[Path, bool]:
    if root is None:
        path = Path(tempfile.mkdtemp(prefix="hwval-powercap-"))
        # mkdtemp makes it 0700; 0755 lets other users test their access to the counters.
        path.chmod(0o755)
        return path, True
    path = Path(root)
    if path.exists():
        leftovers = [p for p in path.iterdir()]
        if leftovers and not (path / MARKER).exists():
            raise click.BadParameter(f"{path} is not empty and not an emulator tree; choose an "
                                     "empty or new folder", param_hint="--root")
        for p in leftovers:  # an earlier emulator's tree: start afresh
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    else:
        path.mkdir(parents=True)
    return path, False


@click.command("powercap")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="folder to build the tree in (default: a new temporary folder)")
@click.option("--packages", type=click.IntRange(1, 8), default=1, show_default=True,
              help="number of packages (2 = a dual-socket or dual-die machine)")
@click.option("--nested", default="core,dram", show_default=True,
              help="subdomains of each package: any of core,uncore,dram ('' for none)")
@click.option("--psys/--no-psys", default=False, show_default=True, help="add a platform (psys) zone")
@click.option("--layout", type=click.Choice(["sysfs", "nested"]), default="sysfs", show_default=True,
              help="sysfs: zone folders under devices/ plus a symlink per zone (as the kernel); "
                   "nested: plain nested folders")
@click.option("--max-energy-range-uj", type=click.IntRange(min=1000), default=DEFAULT_MAX_ENERGY_RANGE_UJ,
              show_default=True, help="counter wrap point; small values force frequent wraps")
@click.option("--start-uj", type=click.IntRange(min=0), default=None,
              help="counter value at bench time 0 (default: half the range)")
@click.option("--max-power-w", type=float, default=None,
              help="constraint_0_max_power_uw of each package (default: 1.5x the profile's peak share)")
@click.option("--update-s", type=click.FloatRange(min=0.0001), default=0.001, show_default=True,
              help="how often the counters advance (RAPL: about 1 ms)")
@click.option("--unreadable", is_flag=True,
              help="make energy_uj mode 000 (root-only since Linux 5.10: try a non-root reader)")
@bench_options()
def cli(root: str | None, packages: int, nested: str, psys: bool, layout: str,
        max_energy_range_uj: int, start_uj: int | None, max_power_w: float | None,
        update_s: float, unreadable: bool, bench: Bench, model, ready_file: str | None) -> None:
    """Run a live fake powercap (RAPL) tree whose counters follow the bench profile and wrap.

    \b
    Example:
      hwval emulate powercap --root /tmp/pc --packages 2 --max-energy-range-uj 50000000
      hwval capture --rapl-root /tmp/pc --no-nvml --duration 10 -o dry.h5
    """
    try:
        zones = plan_zones(packages, tuple(k for k in nested.split(",") if k.strip()), psys, layout)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--nested") from None
    peak_w = bench.profile.peak_w
    max_power_uw = {z.zone: int(1e6 * (max_power_w * z.share / (SHARES["package"] / packages)
                                       if max_power_w else 1.5 * peak_w * z.share))
                    for z in zones}
    start = max_energy_range_uj // 2 if start_uj is None else start_uj
    path, created = _prepare_root(root)
    stop = threading.Event()

    def on_signal(signum, frame):  # SIGINT/SIGTERM: finish the current update and exit
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    build_tree(path, zones, max_energy_range_uj, max_power_uw, start, layout)
    writer = PowercapWriter(path, zones, bench, max_energy_range_uj, start, model)
    writer.update()
    writer.write_truth()  # before the announcement: whoever reads it may read the truth at once
    if unreadable:
        for z in zones:
            (path / z.rel / "energy_uj").chmod(0o000)
    announce("rapl", str(path), bench, ready_file, rapl_root=str(path),
             zones={z.zone: {"name": z.name, "share": z.share} for z in zones},
             max_energy_range_uj=max_energy_range_uj, start_uj=start, update_s=update_s)
    print(f"or: hwval capture --rapl-root {path}", flush=True)
    schedule = PeriodicSchedule(update_s, stop)
    next_truth_ns = 0
    try:
        while schedule.wait() is not None:
            writer.update()
            if writer.last_t_ns >= next_truth_ns:
                writer.write_truth()
                next_truth_ns = writer.last_t_ns + int(TRUTH_INTERVAL_S * 1e9)
        writer.write_truth()
    finally:
        writer.close()
        if created:
            shutil.rmtree(path, ignore_errors=True)
