"""One clean capture per driver, through its real transport against its emulator, under the real
recorder: zero counted errors (so no ``undeclared_key``), every declared key present, power
equal to the bench's constant truth within half the meter's quantum where the meter rounds to
it (within a justified bound where it does not), and the stream marked emulated.

The bench is a constant power that no meter's resolution represents exactly, so every driver's
scaling and rounding is checked (a 1 W meter must read 123 W, a 0.1 W meter 123.5 W, ...).
"""

from __future__ import annotations

import inspect
import math
import time
import typing
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pytest

from hwval.benchmodel import Bench, MeterModel, PowerProfile
from hwval.capture.recorder import Recorder
from hwval.clock import now_ns
from hwval.runfile.documents import Event, Page, Start
from hwval.sources.base import Semantics, Source, SourceSpec, StreamInfo
from hwval.sources.registry import BUILTIN_DRIVERS, Registry

TRUE_W = 123.4567
#: The semantics a key may declare (hwval.sources.base.Semantics); a key may also declare none.
SEMANTICS = typing.get_args(Semantics)
PROFILE = f"constant:{TRUE_W}"
#: Readings per stream a clean capture must reach; the capture ends as soon as it has them.
READINGS = 3
#: Upper bound on one capture (a 1 Hz meter needs ~4 s idle; a loaded machine gets margin).
TIMEOUT_S = 30.0


@dataclass
class Case:
    source: Source
    #: stream name -> true power (W) each of its readings must show
    truth_w: dict[str, float]
    #: the meter's resolution in power (W)
    quantum_w: float
    #: for a meter whose power resolution depends on the reading (an energy counter over the
    #: measured interval): columns -> quantum of each reading
    quantum_of: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None
    #: the meter rounds the power to its quantum, so a reading is within half a quantum of the
    #: truth (123.4567 W must read 123 W at 1 W, not 124); False: within one quantum (the
    #: reading is not one value rounded to the quantum; each case says why)
    rounds: bool = False


def spec(driver: str, resource: str, period_s: float | None = None, name: str = "wall",
         **options) -> SourceSpec:
    return SourceSpec(driver, resource, name, period_s, options)


def bench() -> Bench:
    return Bench(PowerProfile.parse(PROFILE))


@contextmanager
def serial_case(emulator_cls, driver: str, quantum_w: float, query: dict | None = None,
                rounds: bool = True, **emulator_kw) -> Iterator[Case]:
    with emulator_cls(bench(), MeterModel(), **emulator_kw) as emu:
        yield Case(Registry().create(spec(driver, emu.path, **(query or {}))), {"wall": TRUE_W}, quantum_w,
                   rounds=rounds)


@contextmanager
def tasmota():
    from hwval.emulators.tasmota import TasmotaEmulator

    # WattRes 0 (the firmware default): integer watts
    with serial_case(TasmotaEmulator, "tasmota", 1.0) as case:
        yield case


@contextmanager
def esphome():
    from hwval.emulators.esphome import EspHomeEmulator

    # "Sending state %.5f W": 1e-5 W steps
    # the emulated plug has power, voltage, current and energy sensors; frequency and power
    # factor are switched off as an operator does for a plug without them
    with serial_case(EspHomeEmulator, "esphome", 1e-5, {"frequency": "", "power_factor": ""},
                     interval_s=0.1) as case:
        yield case


@contextmanager
def pzem004t():
    from hwval.emulators.pzem004t import Pzem004tEmulator

    # power register in 0.1 W (PZEM-004T v3.0 manual)
    with serial_case(Pzem004tEmulator, "pzem004t", 0.1, update_s=0.2) as case:
        yield case


@contextmanager
def cse7766():
    from hwval.emulators.cse7766 import Cse7766Emulator

    # power from the coefficient / period registers: the period is an integer count, so the
    # resolution is about P / period (a few mW near 123 W) and the power is not one value rounded
    # to a fixed step; 0.01 W bounds it
    with serial_case(Cse7766Emulator, "cse7766", 0.01, rounds=False) as case:
        yield case


@contextmanager
def wattsup():
    from hwval.emulators.wattsup import WattsUpEmulator

    # W field in tenths of a watt; it logs once a second (the slowest case here, ~2.5 s)
    with serial_case(WattsUpEmulator, "wattsup", 0.1, {"interval_s": 1}) as case:
        yield case


@contextmanager
def visa_case(instrument, driver: str, quantum_w: float, rounds: bool = True, **options) -> Iterator[Case]:
    from hwval.emulators.scpi_server import ScpiServer

    server = ScpiServer(instrument).start()
    try:
        yield Case(Registry().create(spec(driver, server.resource, **options)), {"wall": TRUE_W}, quantum_w,
                   rounds=rounds)
    finally:
        server.stop()


@contextmanager
def wt300():
    from hwval.emulators.wt300 import Wt300

    # NR3 with 5 significant digits (WT300 ASCII numeric format, 1.2346E+02): 0.01 W at 123 W
    with visa_case(Wt300(bench(), MeterModel(), update_s=0.1), "wt300", 0.01) as case:
        yield case


@contextmanager
def hmc8015():
    from hwval.emulators.hmc8015 import Hmc8015

    # NR3 with 5 significant digits, as the WT300: 0.01 W at 123 W
    with visa_case(Hmc8015(bench(), MeterModel()), "hmc8015", 0.01) as case:
        yield case


@contextmanager
def n6705():
    from hwval.emulators.n6705 import N6705

    # power = V x I of the array samples; both in NR3 with ~6 digits: a product of two rounded
    # values is not one value rounded to a step (its relative error is up to the sum of both),
    # so a whole 1 mW bounds it
    with visa_case(N6705(bench(), MeterModel(), rail_v=12.0), "n6705", 1e-3, rounds=False,
                   points=100, interval_s=0.001) as case:
        yield case


class CountersFollowTheSource:
    """A clock for the rapl source that also advances the powercap counters.

    The source reads ``energy_uj`` and then asks the time. Returning the instant the counters were
    last written, and writing them anew for the next read, pairs each counter with its exact
    instant: the power the source computes is then the truth to the microjoule, whatever a loaded
    machine does to the threads (with a writer thread the pairing would be off by its lag)."""

    def __init__(self, writer) -> None:
        self.writer = writer
        self.written_ns = now_ns()
        writer.update(self.written_ns)

    def __call__(self) -> int:
        t_ns, self.written_ns = self.written_ns, now_ns()
        self.writer.update(self.written_ns)
        return t_ns


@contextmanager
def rapl(tmp_path):
    from hwval.emulators.powercap import PowercapWriter, build_tree, plan_zones, SHARES
    from hwval.sources.rapl.source import RaplSource

    zones = plan_zones(1, ("dram",), False, "sysfs")
    max_range_uj = 262_143_328_850
    build_tree(tmp_path, zones, max_range_uj, {z.zone: int(300e6) for z in zones}, 0, "sysfs")
    writer = PowercapWriter(tmp_path, zones, bench(), max_range_uj)
    try:
        source = RaplSource(spec("rapl", str(tmp_path), 0.05, name="rapl"),
                            clock_ns=CountersFollowTheSource(writer))
        # a counter in whole microjoules: the difference of two floored (not rounded) counters is
        # within 1 uJ of the true energy, so the power within a whole 1 uJ / the measured interval
        yield Case(source, {"rapl_package_0": TRUE_W * SHARES["package"],
                            "rapl_dram_0": TRUE_W * SHARES["dram"]}, math.nan,
                   lambda columns: 1e-6 / columns["interval_s"])
    finally:
        writer.close()


@contextmanager
def nvml(monkeypatch):
    from hwval.emulators.nvml_sim import SimGpu, SimNvml

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    sim = SimNvml([SimGpu("GPU-cccccccc-0000-0000-0000-000000000000", update_s=0.02)],
                  profile=PowerProfile.parse(PROFILE))
    with sim.patch():
        # nvmlDeviceGetPowerUsage is in integer milliwatts (the simulator rounds to them)
        yield Case(Registry().create(spec("nvml", "", 0.02, name="nvml")), {"nvml_gpu0": TRUE_W}, 1e-3,
                   rounds=True)


@contextmanager
def synthetic():
    # no quantum (quantum_w=0): the bench's value itself, within float error
    yield Case(Registry().create(spec("synthetic", PROFILE, 0.02)), {"wall": TRUE_W}, 1e-9)


CASES: dict[str, Callable[..., contextmanager]] = {
    "tasmota": tasmota, "esphome": esphome, "pzem004t": pzem004t, "cse7766": cse7766,
    "wattsup": wattsup, "wt300": wt300, "hmc8015": hmc8015, "n6705": n6705,
    "rapl": rapl, "nvml": nvml, "synthetic": synthetic,
}


@dataclass
class Recorded:
    infos: dict[str, StreamInfo]
    readings: dict[str, dict[str, np.ndarray]]
    events: list[Event]
    stats: dict[str, dict]


def record_clean(source: Source) -> Recorded:
    """Run ``source`` under the real recorder until every stream it declares has
    :data:`READINGS` readings with a finite power (or :data:`TIMEOUT_S`)."""
    origin = now_ns()
    docs: list = []
    recorder = Recorder(Start("conformance", "now", "host", [], origin, time.time_ns(), "{}", "0"),
                        [docs.append])
    infos = {i.name: i for i in recorder.add_source("src", source)}
    recorder.start()
    deadline = time.monotonic() + TIMEOUT_S

    def enough() -> bool:
        counts = dict.fromkeys(infos, 0)
        for d in list(docs):
            if isinstance(d, Page) and d.stream in counts:
                counts[d.stream] += int(np.count_nonzero(np.isfinite(d.values["power_w"])))
        return min(counts.values()) >= READINGS

    while not enough() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop = recorder.finish(0)
    pages = [d for d in docs if isinstance(d, Page)]
    readings = {}
    for name in {p.stream for p in pages}:
        mine = [p for p in pages if p.stream == name]
        readings[name] = {k: np.concatenate([p.values[k] for p in mine]) for k in mine[0].values}
    return Recorded(infos, readings, [d for d in docs if isinstance(d, Event)], stop.stream_stats)


def test_every_driver_has_a_case():
    assert sorted(CASES) == sorted(BUILTIN_DRIVERS)


@pytest.mark.parametrize("driver", sorted(CASES))
def test_clean_capture_has_no_errors_every_declared_key_and_the_true_power(driver, request):
    builder = CASES[driver]
    fixtures = {name: request.getfixturevalue(name) for name in inspect.signature(builder).parameters}
    with builder(**fixtures) as case:
        recorded = record_clean(case.source)
    assert sorted(recorded.infos) == sorted(case.truth_w)
    for name, info in recorded.infos.items():
        stats = recorded.stats[name]
        assert info.emulated, name  # an emulator never passes for the meter it imitates
        assert stats["error_counts"] == {}, (name, stats)
        assert stats["dropped"] == 0 and stats["readings"] >= READINGS, (name, stats)
        columns = recorded.readings[name]
        assert set(columns) == set(info.key_names())
        for key in info.keys:
            assert isinstance(key.unit, str) and key.unit.strip(), (name, key)
            assert key.semantics in (*SEMANTICS, None), (name, key)
            if key.name in ("power_w", "energy_j"):  # what the analysis relies on must be declared
                assert key.semantics in SEMANTICS, (name, key)
            # every declared key carries values (a counter or a derived key may start with NaN)
            assert np.isfinite(columns[key.name]).any(), (name, key.name)
        finite = np.isfinite(columns["power_w"])
        power = columns["power_w"][finite]
        quantum = case.quantum_w if case.quantum_of is None else case.quantum_of(columns)[finite]
        bound = quantum / 2 if case.rounds else quantum
        err = np.abs(power - case.truth_w[name])
        assert np.all(err <= bound + 1e-9), (name, power, case.truth_w[name], bound)
    errors = [e for e in recorded.events if e.name in ("error", "gap_start", "reconnect")]
    assert errors == []

