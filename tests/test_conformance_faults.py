"""The conformance suite's faults: every fault an emulator can inject, with the event or counted
error the driver must give for it.

:data:`FAULTS` is the table driver -> fault -> what it gives. A row is exercised either here
(``covered_by`` None: :func:`test_injected_fault_gives_its_event` injects it through the real
transport under the real recorder) or by the named existing test, whose code (its syntax tree:
not its comments or docstrings) must inject that fault and name what it gives
(:func:`test_each_row_covered_elsewhere_names_a_test_that_checks_it`).
:func:`test_every_emulator_fault_is_in_the_table` fails when an emulator gains an option that is
neither a fault in the table nor listed in :data:`SETTINGS`.

What a row expects (``gives``):

* ``error:KIND``: the driver counts an error of that kind (and the capture goes on);
* ``event:NAME``: the recorder logs that event (``gap_start``, ``reconnect``...);
* ``open:TEXT``: opening the source fails with one message containing TEXT;
* ``raise:EXC``: the source's read raises EXC (which the recorder turns into a gap, as
  tests/test_recorder.py checks);
* ``clean``: nothing to count, by the protocol (wattsup ignores bytes outside packets; a slow
  SCPI reply is still a reply): no error, every reading still the truth;
* ``no_loss``: a lost record of a streaming meter that carries a cumulative counter: nothing
  can tell the record was sent, so no error, and the counter loses no energy over the span.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import textwrap
from contextlib import contextmanager
from dataclasses import dataclass

import click
import numpy as np
import pytest

from hwval.emulators import EMULATORS
from hwval.runfile.documents import Event, Page
from hwval.sources.base import SourceUnavailable
from test_conformance_capture import (
    CASES, READINGS, Case, builder_fixtures, check_energy, record, spans_readings,
)

#: Upper bound for one fault capture (the slowest, wattsup, logs once a second).
FAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Fault:
    driver: str
    #: the emulator's option (CLI name without ``--``; for nvml the simulator's method/field)
    option: str
    gives: str
    #: ``module::test`` of an existing test that injects it and checks what it gives; None: here
    covered_by: str | None = None
    #: what the covering test's source must contain to check ``gives``, where it is not the
    #: kind itself (``energy_j`` for no_loss)
    checked_as: str | None = None


SERIAL_RATES = ("garbage-rate", "drop-rate", "truncate-rate", "bad-checksum-rate")
_TASMOTA_FAULTS = "test_tasmota_driver::test_capture_matches_truth_through_faults_stall_and_unplug"
_ESPHOME_FAULTS = "test_esphome::test_capture_matches_truth_through_faults_stall_and_unplug"
_PZEM_FAULTS = "test_pzem004t_capture::test_faults_become_counted_errors_gaps_and_a_reconnect"
_CSE_FAULTS = "test_cse7766_capture::test_faults_become_counted_errors_gaps_and_a_reconnect"
_WATTSUP_FAULTS = "test_wattsup::test_capture_matches_truth_through_faults_stall_and_unplug"

FAULTS: tuple[Fault, ...] = (
    # tasmota: a polled console; an answer that does not parse is bad_payload
    Fault("tasmota", "garbage-rate", "error:garbage"),
    Fault("tasmota", "drop-rate", "event:gap_start"),  # no answer to a poll: a gap until one comes
    Fault("tasmota", "truncate-rate", "error:bad_payload"),
    Fault("tasmota", "bad-checksum-rate", "error:bad_payload"),
    Fault("tasmota", "stall-at-s", "event:gap_start", _TASMOTA_FAULTS),
    Fault("tasmota", "disconnect-at-s", "event:reconnect", _TASMOTA_FAULTS),
    # esphome: a streaming logger with no checksum and no sequence number
    Fault("esphome", "garbage-rate", "error:garbage"),
    Fault("esphome", "drop-rate", "no_loss"),
    Fault("esphome", "truncate-rate", "error:bad_value"),
    Fault("esphome", "bad-checksum-rate", "error:bad_value"),
    Fault("esphome", "stall-at-s", "event:gap_start", _ESPHOME_FAULTS),
    Fault("esphome", "disconnect-at-s", "event:reconnect", _ESPHOME_FAULTS),
    # pzem004t: Modbus-RTU, polled, CRC-16
    Fault("pzem004t", "garbage-rate", "error:garbage"),
    Fault("pzem004t", "drop-rate", "error:no_reply"),
    Fault("pzem004t", "truncate-rate", "error:truncated"),
    Fault("pzem004t", "bad-checksum-rate", "error:bad_crc"),
    Fault("pzem004t", "stall-at-s", "event:gap_start", _PZEM_FAULTS),
    Fault("pzem004t", "disconnect-at-s", "event:reconnect", _PZEM_FAULTS),
    Fault("pzem004t", "exception-rate", "error:modbus_exception",
          "test_pzem004t_driver::test_exception_reply_is_counted_with_its_meaning"),
    # cse7766: a binary frame stream with a checksum and a cumulative CF counter
    Fault("cse7766", "garbage-rate", "error:garbage"),
    Fault("cse7766", "drop-rate", "no_loss"),
    Fault("cse7766", "truncate-rate", "error:truncated"),
    Fault("cse7766", "bad-checksum-rate", "error:bad_checksum"),
    Fault("cse7766", "stall-at-s", "event:gap_start", _CSE_FAULTS),
    Fault("cse7766", "disconnect-at-s", "event:reconnect", _CSE_FAULTS),
    Fault("cse7766", "uncalibrated", "error:not_calibrated",
          "test_cse7766_driver::test_no_load_overflow_is_zero_watts_and_uncalibrated_chip_is_counted"),
    # wattsup: '#...;' packets in a stream; bytes outside packets are to be ignored
    # (docs/protocols/wattsup.md)
    Fault("wattsup", "garbage-rate", "clean"),
    Fault("wattsup", "drop-rate", "no_loss"),
    Fault("wattsup", "truncate-rate", "error:truncated"),
    Fault("wattsup", "bad-checksum-rate", "error:bad_packet"),
    Fault("wattsup", "stall-at-s", "event:gap_start", _WATTSUP_FAULTS),
    Fault("wattsup", "disconnect-at-s", "event:reconnect", _WATTSUP_FAULTS),
    # SCPI analyzers (hwval/emulators/scpi_server.py Faults)
    Fault("wt300", "delay-s", "clean"),
    Fault("wt300", "stall-after", "event:gap_start",
          "test_wt300::test_connection_drop_and_timeout_become_gap_and_reconnect"),
    Fault("wt300", "drop-after", "event:reconnect",
          "test_wt300::test_connection_drop_and_timeout_become_gap_and_reconnect"),
    Fault("wt300", "malformed-every", "error:malformed",
          "test_wt300::test_malformed_replies_are_counted_not_fatal"),
    Fault("wt300", "idn", "open:right instrument", "test_wt300::test_wrong_instrument_is_a_clear_error"),
    Fault("hmc8015", "delay-s", "clean"),
    Fault("hmc8015", "stall-after", "event:gap_start"),
    Fault("hmc8015", "drop-after", "event:reconnect",
          "test_hmc8015::test_wrong_instrument_and_drop_under_recorder"),
    Fault("hmc8015", "malformed-every", "error:malformed"),
    Fault("hmc8015", "idn", "open:WT310", "test_hmc8015::test_wrong_instrument_and_drop_under_recorder"),
    Fault("n6705", "delay-s", "clean"),
    Fault("n6705", "stall-after", "event:gap_start"),
    Fault("n6705", "drop-after", "event:reconnect",
          "test_n6705::test_malformed_array_and_drop_under_recorder"),
    Fault("n6705", "malformed-every", "error:malformed",
          "test_n6705::test_malformed_array_and_drop_under_recorder"),
    Fault("n6705", "idn", "open:WT310"),
    # rapl: the powercap tree
    Fault("rapl", "max-energy-range-uj", "no_loss",
          "test_powercap::test_counters_wrap_and_the_source_follows_them_to_the_microjoule",
          checked_as="total_uj"),
    Fault("rapl", "unreadable", "open:permission denied",
          "test_rapl_permissions::test_emulator_unreadable_mode_and_doctor_as_a_normal_user"),
    # nvml: the simulated driver (hwval/emulators/nvml_sim.py)
    Fault("nvml", "fail", "raise:TransientError",
          "test_nvml::test_transient_error_on_the_only_gpu_is_a_gap_of_the_source"),
    Fault("nvml", "lose", "event:gap_start",
          "test_nvml_capture::test_capture_records_both_gpus_and_a_lost_gpu_becomes_a_gap"),
    Fault("nvml", "init_error", "open:--no-nvml", "test_nvml::test_no_driver_is_a_clear_message"),
)

#: Options of each emulator that configure the device rather than inject a fault, or that are a
#: fault's parameter (its duration, its seed); every other option must be a row of FAULTS.
_PTY_PARAMETERS = {"stall-s", "disconnect-s", "fault-seed", "counts-file"}
_SCPI_SETTINGS = {"port", "log-file"}
SETTINGS: dict[str, set[str]] = {
    "tasmota": _PTY_PARAMETERS | {"baudrate", "mqtt", "topic", "heap", "channels", "old-firmware",
                                  "tele-period", "watt-res", "volt-res", "amp-res", "energy-res",
                                  "frequency"},
    "esphome": _PTY_PARAMETERS | {"baudrate", "interval-s", "power-unit", "energy-unit", "task",
                                  "frequency", "power-factor"},
    # the exception's code is the exception-rate fault's parameter; alarm and holding registers
    # and the address are how a module is set up
    "pzem004t": _PTY_PARAMETERS | {"address", "update-s", "energy-start-wh", "exception-code",
                                   "alarm-threshold-w", "holding"},
    "cse7766": _PTY_PARAMETERS | {"frame-period-s", "cf-start", "min-power-w"},
    "wattsup": _PTY_PARAMETERS,
    "wt300": _SCPI_SETTINGS | {"model-name", "update-s", "rate-header"},
    "hmc8015": _SCPI_SETTINGS,
    "n6705": _SCPI_SETTINGS | {"rail-v"},
    "rapl": {"layout", "nested", "packages", "psys", "nvml", "rapl-root", "root", "start-uj",
             "update-s", "max-power-w"},
    # SimNvml/SimGpu fields and methods that describe the GPUs or serve the test
    "nvml": {"gpus", "profile", "clock_ns", "t0_ns", "driver_version", "restore", "patch",
             "true_energy_j", "counter_mj", "uuid", "name", "serial", "architecture",
             "power_limit_mw", "share", "update_s", "averaging", "base_mj", "unsupported",
             "mig_uuids"},
}
EMULATOR_OF = {"rapl": "powercap"}


def bench_option_names() -> set[str]:
    """The bench and meter-model options every emulator shares (hwval.emulators.options)."""
    from hwval.emulators.options import bench_options

    @click.command()
    @bench_options()
    def probe(**_kw) -> None:
        """Collect the shared options."""

    return {o.lstrip("-") for p in probe.params for o in p.opts} | {"duration", "help"}


def emulator_options(driver: str) -> set[str]:
    """Every option of ``driver``'s emulator (both names of an on/off flag count as one)."""
    if driver == "nvml":
        from hwval.emulators.nvml_sim import SimGpu, SimNvml

        names = {f.name for f in dataclasses.fields(SimNvml)} | {f.name for f in dataclasses.fields(SimGpu)}
        return names | {n for n, v in vars(SimNvml).items() if callable(v) and not n.startswith("_")}
    module, _, attr = EMULATORS[EMULATOR_OF.get(driver, driver)].partition(":")
    command = getattr(importlib.import_module(module), attr)
    names = set()
    for param in command.params:
        names.add(param.opts[0].lstrip("-"))
    return names - bench_option_names()


def test_every_driver_has_faults_in_the_table():
    assert {f.driver for f in FAULTS} == set(CASES) - {"synthetic"}
    assert len({(f.driver, f.option) for f in FAULTS}) == len(FAULTS)  # one row per fault


@pytest.mark.parametrize("driver", sorted(CASES.keys() - {"synthetic"}))
def test_every_emulator_fault_is_in_the_table(driver):
    options = emulator_options(driver)
    faults = {f.option for f in FAULTS if f.driver == driver}
    assert faults <= options, f"{driver}: table rows for options its emulator lacks: {faults - options}"
    unclassified = options - faults - SETTINGS[driver]
    assert unclassified == set(), (f"{driver}: emulator options neither a fault row in FAULTS nor "
                                   f"a setting in SETTINGS: {sorted(unclassified)}")


def test_synthetic_injects_no_fault():
    # the synthetic source has no emulator and no fault: only its clean capture is checked
    assert [f for f in FAULTS if f.driver == "synthetic"] == []
    assert "synthetic" not in EMULATORS


#: how a test may inject a fault other than by the option's own name (the emulator's method or
#: the argument the option feeds)
INJECTED_AS = {"max-energy-range-uj": {"max_range_uj"}}


def identifier(option: str) -> str:
    return option.replace("-", "_")


def code_words(test) -> tuple[set[str], list[str]]:
    """``(identifiers, string constants)`` of a test function's code, decorators included: names,
    attributes and keyword names (not its parameters: naming a fixture injects nothing);
    strings without the bare string statements (docstrings). Comments are not in the tree at all, so a name mentioned only in a comment or
    a docstring does not count as the test using it."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(test)))
    bare = {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    names: set[str] = set()
    strings: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in bare:
            strings.append(node.value)
    return names, strings


def uses(words: tuple[set[str], list[str]], wanted: set[str]) -> bool:
    """Whether the code has one of ``wanted`` as an identifier or within a string constant (as a
    whole word: ``drop-after`` is not found in ``--no-drop-after-x``)."""
    names, strings = words
    if names & wanted:
        return True
    return any(re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text)
               for w in wanted for text in strings)


def covering_test(row: Fault):
    module_name, _, test_name = row.covered_by.partition("::")
    test = getattr(importlib.import_module(module_name), test_name, None)
    assert inspect.isfunction(test) and test_name.startswith("test_"), f"{row.covered_by} does not exist"
    return test


@pytest.mark.parametrize("row", [f for f in FAULTS if f.covered_by], ids=lambda f: f"{f.driver}-{f.option}")
def test_each_row_covered_elsewhere_names_a_test_that_checks_it(row):
    words = code_words(covering_test(row))
    # the test injects this fault ...
    injects = {identifier(row.option), row.option, f"--{row.option}"}
    if row.option == "disconnect-at-s":
        injects.add("unplug")
    injects |= INJECTED_AS.get(row.option, set())
    assert uses(words, injects), f"{row.covered_by} does not inject {row.option}"
    # ... and checks what it gives
    what, _, name = row.gives.partition(":")
    expected = row.checked_as or {"no_loss": "energy_j"}.get(what, name)
    assert uses(words, {expected}), f"{row.covered_by} does not check {row.gives!r}"


def test_a_covering_test_is_judged_by_its_code_not_its_comments():
    """The check above must not be satisfied by a fault's name in a comment or a docstring."""
    def row(test: str) -> Fault:
        return Fault("tasmota", "stall-at-s", "event:gap_start", f"coverage_decoys::{test}")

    with pytest.raises(AssertionError, match="does not inject stall-at-s"):
        test_each_row_covered_elsewhere_names_a_test_that_checks_it(row("test_only_mentions_the_fault"))
    with pytest.raises(AssertionError, match="does not check 'event:gap_start'"):
        test_each_row_covered_elsewhere_names_a_test_that_checks_it(
            row("test_injects_and_only_mentions_the_event"))
    test_each_row_covered_elsewhere_names_a_test_that_checks_it(row("test_injects_and_checks"))
    with pytest.raises(AssertionError, match="does not exist"):
        test_each_row_covered_elsewhere_names_a_test_that_checks_it(row("test_no_such_test"))
    # a part of a name is not the name
    assert not uses(code_words(importlib.import_module("coverage_decoys").test_injects_and_checks),
                    {"stall", "gap"})


# ---- the faults injected here ------------------------------------------------------------------

def error_kinds(docs: list) -> set[str]:
    return {d.detail.get("kind") for d in docs if isinstance(d, Event) and d.name == "error"}


def has_readings(docs: list) -> bool:
    return any(isinstance(d, Page) and len(d.t) for d in docs)


def event_names(docs: list) -> set[str]:
    return {d.name for d in docs if isinstance(d, Event)}


#: driver options that make each fault show fast (short timeouts) without changing its meaning
FAULT_QUERY = {"esphome": {"stale_s": 2.0}, "pzem004t": {"timeout_s": 0.15}}
#: the per-frame probability: often enough to land in a short capture, rare enough that the
#: driver opens (a polled driver's open needs answers)
RATE = 0.3


@contextmanager
def serial_fault(row: Fault, request):
    from hwval.emulators.pty import FaultPlan

    plan = FaultPlan(**{identifier(row.option): RATE}, seed=3)
    builder = CASES[row.driver]
    with builder(plan, **FAULT_QUERY.get(row.driver, {}), **builder_fixtures(builder, request)) as case:
        yield case


@contextmanager
def scpi_fault(row: Fault):
    from hwval.benchmodel import MeterModel
    from hwval.emulators.scpi_server import Faults, ScpiServer
    from hwval.sources.registry import Registry
    from test_conformance_capture import TRUE_W, bench, spec

    value = {"delay-s": 0.05, "stall-after": 4, "drop-after": 4, "malformed-every": 3,
             "idn": "YOKOGAWA,WT310,C2PH13047V,F1.03"}[row.option]
    if row.driver == "hmc8015":
        from hwval.emulators.hmc8015 import Hmc8015 as Instrument
        instrument, options = Instrument(bench(), MeterModel()), {}
    elif row.driver == "n6705":
        from hwval.emulators.n6705 import N6705
        instrument, options = N6705(bench(), MeterModel(), rail_v=12.0), {"points": 100, "interval_s": 0.001}
    else:
        from hwval.emulators.wt300 import Wt300
        instrument, options = Wt300(bench(), MeterModel(), update_s=0.1), {}
    server = ScpiServer(instrument, faults=Faults(**{identifier(row.option): value})).start()
    try:
        # a 1 s reply timeout: a stall shows within it; a loaded machine does not hit it
        source = Registry().create(spec(row.driver, server.resource, timeout_s=1.0, **options))
        yield Case(source, {"wall": TRUE_W}, 0.01, emulator=server)
    finally:
        server.stop()


HERE = [f for f in FAULTS if f.covered_by is None]


@pytest.mark.parametrize("row", HERE, ids=lambda f: f"{f.driver}-{f.option}")
def test_injected_fault_gives_its_event(row, request):
    what, _, name = row.gives.partition(":")
    serial = row.option in SERIAL_RATES
    with (serial_fault(row, request) if serial else scpi_fault(row)) as case:
        if what == "open":
            with pytest.raises(SourceUnavailable, match=name):
                record(case.source, lambda docs, infos: True, timeout_s=0)
            return
        if what == "error":
            recorded = record(case.source, lambda docs, infos: name in error_kinds(docs) and has_readings(docs),
                              FAULT_TIMEOUT_S)
        elif what == "event":
            recorded = record(case.source, lambda docs, infos: name in event_names(docs), FAULT_TIMEOUT_S)
        else:  # clean, no_loss: enough readings over a span after the fault was injected
            span_s = case.energy.min_span_s if case.energy else 0.0
            enough = spans_readings(span_s)
            injected = (lambda: case.emulator.injected[identifier(row.option).removesuffix("_rate")] > 0) \
                if serial else (lambda: True)
            recorded = record(case.source, lambda docs, infos: enough(docs, infos) and injected(),
                              FAULT_TIMEOUT_S)
        if serial:  # the fault was injected (a row must not pass on a capture that saw none)
            kind = identifier(row.option).removesuffix("_rate")
            assert case.emulator.injected[kind] > 0, (row, dict(case.emulator.injected))
    stats = recorded.stats["wall"]
    if what == "error":
        # counted on the stream, or on the source for a failed read
        assert sum(s["error_counts"].get(name, 0) for s in recorded.stats.values()) >= 1, (row, recorded.stats)
        assert stats["readings"] >= 1, (row, stats)  # the capture went on
    elif what == "event":
        assert name in {e.name for e in recorded.events}, (row, recorded.events)
    else:
        assert stats["error_counts"] == {}, (row, stats)
        assert [e for e in recorded.events if e.name in ("error", "gap_start")] == [], recorded.events
        columns = recorded.readings["wall"]
        power = columns["power_w"][np.isfinite(columns["power_w"])]
        assert power.size >= READINGS
        assert np.all(np.abs(power - case.truth_w["wall"]) <= case.quantum_w), (row, power)
        if what == "no_loss":  # a lost record loses no energy: the next one carries the counter
            check_energy("wall", case, columns, recorded.times["wall"])
