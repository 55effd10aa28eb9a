"""One clean capture per driver, through its real transport against its emulator, under the real
recorder: zero counted errors (so no ``undeclared_key``), every declared key present, every
quantity equal to the emulator's truth within the meter's quantum, and the stream marked
emulated.

The bench is a constant power that no meter's resolution represents exactly, so every driver's
scaling and rounding is checked (a 1 W meter must read 123 W, a 0.1 W meter 123.5 W, ...). The
other quantities follow from it as one consistent set: voltage V (the emulator's mains), power
factor PF (the bench's), current I = P / (V PF), apparent power S = V I, reactive power
Q = sqrt(S^2 - P^2), frequency (the emulator's mains). Each case's table gives every quantity its
driver declares, with the quantum of the protocol note that fixes it (docs/protocols/*.md); a
declared key missing from the table (and not in :data:`NOT_MEASURED`) fails the capture test. Energy is
checked over the recorded span (see :class:`EnergyCheck`).
"""

from __future__ import annotations

import inspect
import math
import time
import typing
from contextlib import contextmanager
from dataclasses import dataclass, field
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
#: Longest a reading may wait between the emulator computing it and the capture stamping its
#: receipt (pty or socket transfer plus two threads being scheduled): sub-millisecond idle, tens
#: of milliseconds on a loaded 2-core machine (the same bound as tests/serial_e2e.py).
MAX_RECEIPT_DELAY_S = 0.25
#: Declared keys that are not a measured quantity, with where they are checked instead.
NOT_MEASURED = {
    # the driver's figure from the profile's accuracy table (tests/test_visa_codec.py,
    # tests/test_wt300.py, tests/test_hmc8015.py check it)
    "power_uncertainty_w",
    # the interval between two counter reads, which the power check already depends on
    "interval_s",
}


@dataclass(frozen=True)
class Quantity:
    """One quantity's truth and the meter's resolution at it (``quantum``). ``rounds``: the meter
    rounds to the quantum (within half of it); False: within one quantum (each case says why)."""

    truth: float
    quantum: float
    rounds: bool = True

    @property
    def bound(self) -> float:
        return self.quantum / 2 if self.rounds else self.quantum


@dataclass(frozen=True)
class EnergyCheck:
    """The energy a stream counts between its first and its last reading equals the true power
    times the time between them, within ``quantum_j`` (the counter's step: the difference of two
    rounded or floored counters is within one step of the difference of the truths) plus the true
    power times ``timing_s``: how far the instants the two readings describe may be from their
    stamps, relative to each other (an update period of the meter's counter plus the receipt delay
    for a receipt-stamped reading; 0 where the stamp is the counter's own instant)."""

    quantum_j: float
    timing_s: float
    #: the capture spans at least this long, so that the bound is small against the energy
    #: (a factor-of-ten or Wh/J mistake fails; a coarse counter only bounds it by its step)
    min_span_s: float = 0.0
    #: a key holding, per reading, the time since the previous one as the source measured it at
    #: its counter reads: the span is their sum instead of the difference of the receipt stamps
    interval_key: str | None = None


def nr3_quantum(value: float, digits: int = 5) -> float:
    """The step of ``value`` printed in NR3 with ``digits`` significant digits."""
    return 10.0 ** (math.floor(math.log10(abs(value))) - (digits - 1))


def mains(voltage_v: float, power_factor: float, power_w: float = TRUE_W) -> dict[str, float]:
    """The consistent set of a load of ``power_w`` at ``voltage_v`` and ``power_factor``."""
    current_a = power_w / (voltage_v * power_factor)
    apparent_va = voltage_v * current_a
    return {"voltage_v": voltage_v, "current_a": current_a, "power_factor": power_factor,
            "apparent_power_va": apparent_va,
            "reactive_power_var": math.sqrt(apparent_va ** 2 - power_w ** 2)}


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
    #: every other declared quantity (voltage, current, ...): key -> truth and quantum; the same
    #: table for every stream of the source
    quantities: dict[str, Quantity] = field(default_factory=dict)
    #: how ``energy_j`` is checked, for a driver that declares it
    energy: EnergyCheck | None = None
    #: the emulator serving the source (its ``injected`` counts, for the fault tests)
    emulator: object | None = None


def spec(driver: str, resource: str, period_s: float | None = None, name: str = "wall",
         **options) -> SourceSpec:
    return SourceSpec(driver, resource, name, period_s, options)


def bench() -> Bench:
    return Bench(PowerProfile.parse(PROFILE))


@contextmanager
def serial_case(emulator_cls, driver: str, quantum_w: float, query: dict | None = None,
                rounds: bool = True, quantities: dict[str, Quantity] | None = None,
                energy: EnergyCheck | None = None, faults=None, **emulator_kw) -> Iterator[Case]:
    with emulator_cls(bench(), MeterModel(), faults, **emulator_kw) as emu:
        yield Case(Registry().create(spec(driver, emu.path, **(query or {}))), {"wall": TRUE_W}, quantum_w,
                   rounds=rounds, quantities=quantities or {}, energy=energy, emulator=emu)


def table(truths: dict[str, float], quanta: dict[str, float], rounds: bool = True) -> dict[str, Quantity]:
    """The quantities named in ``quanta``, with their truth from ``truths``."""
    return {key: Quantity(truths[key], quantum, rounds) for key, quantum in quanta.items()}


@contextmanager
def tasmota(faults=None, **query):
    from hwval.emulators.tasmota import LINE_FREQUENCY_HZ, TasmotaEmulator

    b = bench()
    truths = {**mains(b.voltage_v, b.power_factor), "frequency_hz": LINE_FREQUENCY_HZ}
    # docs/protocols/tasmota.md#resolution, firmware defaults: WattRes 0 (Power, ApparentPower,
    # ReactivePower in whole W/VA/var), VoltRes 0, AmpRes 3, FreqRes 0; Factor has 2 decimals.
    # EnergyRes 5 (the most) makes Total move in 1e-5 kWh = 36 J, so the span can check it.
    # The plug reports Frequency (--frequency) so that key is declared and checked too.
    quanta = {"voltage_v": 1.0, "current_a": 1e-3, "power_factor": 0.01, "apparent_power_va": 1.0,
              "reactive_power_var": 1.0, "frequency_hz": 1.0}
    with serial_case(TasmotaEmulator, "tasmota", 1.0, quantities=table(truths, quanta),
                     # Total is computed when the poll arrives: only the receipt delay blurs it
                     energy=EnergyCheck(1e-5 * 3.6e6, MAX_RECEIPT_DELAY_S, min_span_s=2.0),
                     frequency=True, resolution={"EnergyRes": 5}, faults=faults, query=query) as case:
        yield case


@contextmanager
def esphome(faults=None, **query):
    from hwval.emulators.esphome import LINE_FREQUENCY_HZ, EspHomeEmulator

    b = bench()
    truths = {**mains(b.voltage_v, b.power_factor), "frequency_hz": LINE_FREQUENCY_HZ}
    # "Sending state %.5f <unit>" (docs/protocols/esphome.md#sensor-state-message): 1e-5 of the
    # unit sent, for every sensor; the energy sensor in Wh, so 1e-5 Wh = 0.036 J
    quanta = dict.fromkeys(("voltage_v", "current_a", "frequency_hz", "power_factor"), 1e-5)
    with serial_case(EspHomeEmulator, "esphome", 1e-5, quantities=table(truths, quanta),
                     # the energy state is computed at the tick that prints it
                     energy=EnergyCheck(1e-5 * 3600, MAX_RECEIPT_DELAY_S, min_span_s=2.0),
                     interval_s=0.1, faults=faults, query=query) as case:
        yield case


@contextmanager
def pzem004t(faults=None, **query):
    from hwval.emulators.pzem004t import LINE_FREQUENCY_HZ, Pzem004tEmulator

    b = bench()
    update_s = 0.2
    truths = {**mains(b.voltage_v, b.power_factor), "frequency_hz": LINE_FREQUENCY_HZ}
    # input registers (docs/protocols/pzem004t.md#input-registers): power 0.1 W, voltage 0.1 V,
    # current 1 mA, frequency 0.1 Hz, power factor 0.01, energy 1 Wh (floored: a short capture
    # only bounds it by one step)
    quanta = {"voltage_v": 0.1, "current_a": 1e-3, "frequency_hz": 0.1, "power_factor": 0.01}
    with serial_case(Pzem004tEmulator, "pzem004t", 0.1, quantities=table(truths, quanta),
                     # registers refresh every update_s: a reply may be that much older
                     energy=EnergyCheck(3600.0, update_s + MAX_RECEIPT_DELAY_S),
                     update_s=update_s, faults=faults, query=query) as case:
        yield case


@contextmanager
def cse7766(faults=None, **query):
    from hwval.emulators.cse7766 import I_PARAM, P_PARAM, V_PARAM, Cse7766Emulator

    b = bench()
    truths = mains(b.voltage_v, b.power_factor)
    # power from the coefficient / period registers: the period is an integer count, so the
    # resolution is about P / period (a few mW near 123 W) and the power is not one value rounded
    # to a fixed step; 0.01 W bounds it. Voltage and current the same way (docs/protocols/
    # cse7766.md: value = parameter / cycle): one cycle count is value^2 / parameter. The CF
    # counter moves in pulses of P_PARAM uJ, floored.
    quanta = {"voltage_v": truths["voltage_v"] ** 2 / V_PARAM, "current_a": truths["current_a"] ** 2 / I_PARAM}
    with serial_case(Cse7766Emulator, "cse7766", 0.01, rounds=False,
                     quantities=table(truths, quanta, rounds=False),
                     # each frame carries the counter at the instant it is sent
                     energy=EnergyCheck(P_PARAM * 1e-6, MAX_RECEIPT_DELAY_S, min_span_s=2.0),
                     faults=faults, query=query) as case:
        yield case


@contextmanager
def wattsup(faults=None, **query):
    from hwval.emulators.wattsup import LINE_FREQUENCY_HZ, LINE_VOLTAGE_V, WattsUpEmulator

    b = bench()
    truths = {**mains(LINE_VOLTAGE_V, b.power_factor), "frequency_hz": LINE_FREQUENCY_HZ}
    # record fields (docs/protocols/wattsup.md): W 0.1 W, V 0.1 V, A 1 mA, PF percent, HZ 0.1 Hz,
    # VA 0.1 VA, WH 0.1 Wh (360 J: the span only bounds it by one step). It logs once a second
    # (the slowest case here, ~2.5 s)
    quanta = {"voltage_v": 0.1, "current_a": 1e-3, "power_factor": 0.01, "frequency_hz": 0.1,
              "apparent_power_va": 0.1}
    with serial_case(WattsUpEmulator, "wattsup", 0.1, {"interval_s": 1, **query}, quantities=table(truths, quanta),
                     # each record carries the counter at the instant it is sent
                     energy=EnergyCheck(360.0, MAX_RECEIPT_DELAY_S), faults=faults) as case:
        yield case


@contextmanager
def visa_case(instrument, driver: str, quantum_w: float, rounds: bool = True,
              quantities: dict[str, Quantity] | None = None, **options) -> Iterator[Case]:
    from hwval.emulators.scpi_server import ScpiServer

    server = ScpiServer(instrument).start()
    try:
        yield Case(Registry().create(spec(driver, server.resource, **options)), {"wall": TRUE_W}, quantum_w,
                   rounds=rounds, quantities=quantities or {})
    finally:
        server.stop()


def nr3_table(truths: dict[str, float], keys: tuple[str, ...]) -> dict[str, Quantity]:
    return {key: Quantity(truths[key], nr3_quantum(truths[key])) for key in keys}


@contextmanager
def wt300():
    from hwval.emulators.wt300 import Wt300

    b = bench()
    # NR3 with 5 significant digits (docs/protocols/wt300.md, 104.75E+00): 0.01 W at 123 W,
    # 0.01 V at 230 V, 1e-5 A at 0.565 A
    with visa_case(Wt300(b, MeterModel(), update_s=0.1), "wt300", 0.01,
                   quantities=nr3_table(mains(b.voltage_v, b.power_factor), ("voltage_v", "current_a"))) as case:
        yield case


@contextmanager
def hmc8015():
    from hwval.emulators.hmc8015 import Hmc8015

    b = bench()
    # NR3 with 5 significant digits, as the WT300 (docs/protocols/hmc8015.md): 0.01 W at 123 W,
    # 1e-5 for the power factor 0.95
    with visa_case(Hmc8015(b, MeterModel()), "hmc8015", 0.01,
                   quantities=nr3_table(mains(b.voltage_v, b.power_factor),
                                        ("voltage_v", "current_a", "power_factor"))) as case:
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
        # the clock pairs each counter with its instant (the interval_s the source measures, not
        # the recorder's stamps, spans the readings): no timing term; floored microjoules
        yield Case(source, {"rapl_package_0": TRUE_W * SHARES["package"],
                            "rapl_dram_0": TRUE_W * SHARES["dram"]}, math.nan,
                   lambda columns: 1e-6 / columns["interval_s"],
                   energy=EnergyCheck(1e-6, 0.0, interval_key="interval_s"))
    finally:
        writer.close()


@contextmanager
def nvml(monkeypatch):
    from hwval.emulators.nvml_sim import SimGpu, SimNvml

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    sim = SimNvml([SimGpu("GPU-cccccccc-0000-0000-0000-000000000000", update_s=0.02)],
                  profile=PowerProfile.parse(PROFILE))
    with sim.patch():
        # nvmlDeviceGetPowerUsage (and the instant and average field values) in integer
        # milliwatts, nvmlDeviceGetTotalEnergyConsumption in millijoules floored, refreshed every
        # update_s (NVML API reference; hwval/emulators/nvml_sim.py)
        quanta = dict.fromkeys(("power_instant_w", "power_average_w"), Quantity(TRUE_W, 1e-3))
        yield Case(Registry().create(spec("nvml", "", 0.02, name="nvml")), {"nvml_gpu0": TRUE_W}, 1e-3,
                   rounds=True, quantities=quanta,
                   energy=EnergyCheck(1e-3, 0.02 + MAX_RECEIPT_DELAY_S, min_span_s=2.0))


@contextmanager
def synthetic():
    # no quantum (quantum_w=0): the bench's value itself, within float error; the exact energy at
    # the instant read() asks the clock, which the recorder's stamp brackets
    yield Case(Registry().create(spec("synthetic", PROFILE, 0.02)), {"wall": TRUE_W}, 1e-9,
               energy=EnergyCheck(1e-9, MAX_RECEIPT_DELAY_S, min_span_s=2.0))


CASES: dict[str, Callable[..., contextmanager]] = {
    "tasmota": tasmota, "esphome": esphome, "pzem004t": pzem004t, "cse7766": cse7766,
    "wattsup": wattsup, "wt300": wt300, "hmc8015": hmc8015, "n6705": n6705,
    "rapl": rapl, "nvml": nvml, "synthetic": synthetic,
}


@dataclass
class Recorded:
    infos: dict[str, StreamInfo]
    readings: dict[str, dict[str, np.ndarray]]
    #: stream -> receipt times (s since the run origin) of its readings
    times: dict[str, np.ndarray]
    events: list[Event]
    stats: dict[str, dict]


def record(source: Source, done: Callable[[list, dict[str, StreamInfo]], bool],
           timeout_s: float = TIMEOUT_S) -> Recorded:
    """Run ``source`` under the real recorder until ``done(documents so far, stream infos)``
    (or ``timeout_s``), then finish the run and return what was recorded."""
    origin = now_ns()
    docs: list = []
    recorder = Recorder(Start("conformance", "now", "host", [], origin, time.time_ns(), "{}", "0"),
                        [docs.append])
    infos = {i.name: i for i in recorder.add_source("src", source)}
    recorder.start()
    deadline = time.monotonic() + timeout_s
    while not done(list(docs), infos) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop = recorder.finish(0)
    pages = [d for d in docs if isinstance(d, Page)]
    readings, times = {}, {}
    for name in {p.stream for p in pages}:
        mine = [p for p in pages if p.stream == name]
        readings[name] = {k: np.concatenate([p.values[k] for p in mine]) for k in mine[0].values}
        times[name] = np.concatenate([p.t for p in mine])
    return Recorded(infos, readings, times, [d for d in docs if isinstance(d, Event)], stop.stream_stats)


def spans_readings(min_span_s: float = 0.0) -> Callable[[list, dict[str, StreamInfo]], bool]:
    """Done once every stream has :data:`READINGS` readings with a finite power spanning at
    least ``min_span_s``."""
    def done(docs: list, infos: dict[str, StreamInfo]) -> bool:
        times: dict[str, list] = {name: [] for name in infos}
        for d in docs:
            if isinstance(d, Page) and d.stream in times:
                times[d.stream].extend(d.t[np.isfinite(d.values["power_w"])])
        return all(len(t) >= READINGS and t[-1] - t[0] >= min_span_s for t in times.values())
    return done


def record_clean(source: Source, min_span_s: float = 0.0) -> Recorded:
    """Run ``source`` until every stream it declares has :data:`READINGS` readings with a finite
    power spanning at least ``min_span_s`` (or :data:`TIMEOUT_S`)."""
    return record(source, spans_readings(min_span_s))


def test_every_driver_has_a_case():
    assert sorted(CASES) == sorted(BUILTIN_DRIVERS)


def builder_fixtures(builder: Callable, request) -> dict:
    """The pytest fixtures a case builder asks for (its parameters without a default)."""
    return {name: request.getfixturevalue(name)
            for name, p in inspect.signature(builder).parameters.items()
            if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD}


def check_energy(name: str, case: Case, columns: dict[str, np.ndarray], t_s: np.ndarray) -> None:
    """The counted energy over the recorded span against the truth (see :class:`EnergyCheck`)."""
    check = case.energy
    assert check is not None, f"{name} declares energy_j: its case needs an EnergyCheck"
    ok = np.flatnonzero(np.isfinite(columns["energy_j"]))
    energy = columns["energy_j"][ok]
    assert energy.size >= 2, (name, columns["energy_j"])
    assert np.all(np.diff(energy) >= -check.quantum_j), (name, energy)  # a counter never goes back
    if check.interval_key is None:
        span_s = t_s[ok[-1]] - t_s[ok[0]]
    else:
        span_s = float(np.sum(columns[check.interval_key][ok[0] + 1:ok[-1] + 1]))
    assert span_s >= check.min_span_s, (name, span_s)
    truth_w = case.truth_w[name]
    bound = check.quantum_j + truth_w * check.timing_s
    counted = energy[-1] - energy[0]
    assert abs(counted - truth_w * span_s) <= bound * (1 + 1e-9), (name, counted, truth_w * span_s, bound)


@pytest.mark.parametrize("driver", sorted(CASES))
def test_clean_capture_has_no_errors_every_declared_key_and_the_true_power(driver, request):
    builder = CASES[driver]
    fixtures = builder_fixtures(builder, request)
    with builder(**fixtures) as case:
        recorded = record_clean(case.source, case.energy.min_span_s if case.energy else 0.0)
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
        # every declared quantity is checked against the truth, not only power
        unchecked = set(info.key_names()) - {"power_w", "energy_j"} - set(case.quantities) - NOT_MEASURED
        assert unchecked == set(), (name, unchecked)
        for key in set(info.key_names()) & set(case.quantities):
            q = case.quantities[key]
            values = columns[key][np.isfinite(columns[key])]
            assert values.size >= READINGS, (name, key)
            assert np.all(np.abs(values - q.truth) <= q.bound * (1 + 1e-9) + 1e-12), (name, key, values, q)
        if "energy_j" in info.key_names():
            check_energy(name, case, columns, recorded.times[name])
    errors = [e for e in recorded.events if e.name in ("error", "gap_start", "reconnect")]
    assert errors == []

