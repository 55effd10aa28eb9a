"""``emulated`` comes from what a device says it is, never from where it is: an emulator's
identity carries the mark, and a real-looking identity is real even on 127.0.0.1 or on a pty an
emulator made."""

from __future__ import annotations

import pytest

from hwval.benchmodel import Bench, MeterModel, PowerProfile
from hwval.sources.base import SourceSpec
from hwval.sources.emulated import EMULATOR_MARK, says_emulated
from hwval.sources.registry import Registry
from hwval.sources.testing import RecordingContext
from test_visa_support import serve  # noqa: F401  (fixture)

REAL_IDN = {"wt300": "YOKOGAWA,WT310,C2PH13047V,F1.03",
            "hmc8015": "Rohde&Schwarz,HMC8015,021123456,01.400",
            "n6705": "Keysight Technologies,N6705C,MY56004321,D.03.03.1234"}


def bench() -> Bench:
    return Bench(PowerProfile.parse("constant:100"))


def instrument(driver: str):
    if driver == "wt300":
        from hwval.emulators.wt300 import Wt300
        return Wt300(bench(), MeterModel(), update_s=0.1)
    if driver == "hmc8015":
        from hwval.emulators.hmc8015 import Hmc8015
        return Hmc8015(bench(), MeterModel())
    from hwval.emulators.n6705 import N6705
    return N6705(bench(), MeterModel())


def open_info(driver: str, resource: str):
    source = Registry().create(SourceSpec(driver, resource, "wall", None, {}))
    ctx = RecordingContext()
    try:
        (info,) = source.open(ctx)
    finally:
        ctx.stop.set()  # a final close (the analyzer's integrator is stopped)
        source.close()
    return info


def test_the_mark_is_found_in_any_field_and_only_there():
    assert says_emulated(["YOKOGAWA", "WT310", EMULATOR_MARK, "F1.03"])
    assert not says_emulated(["YOKOGAWA", "WT310", "C2PH13047V", "F1.03"])
    assert not says_emulated([])


@pytest.mark.parametrize("driver", sorted(REAL_IDN))
def test_analyzer_on_localhost_is_emulated_only_when_its_idn_says_so(serve, driver):
    emulator = serve(instrument(driver))
    assert "127.0.0.1" in emulator.resource
    info = open_info(driver, emulator.resource)
    assert EMULATOR_MARK in info.identity["idn"] and info.emulated
    # the same emulator answering a real instrument's *IDN? (as a real analyzer reached through
    # an SSH tunnel on 127.0.0.1 would): real, whatever the address
    tunnel = serve(instrument(driver), idn=REAL_IDN[driver])
    info = open_info(driver, tunnel.resource)
    assert info.identity["idn"] == REAL_IDN[driver] and not info.emulated


def test_tasmota_plug_is_emulated_from_its_status2_answer(monkeypatch):
    from hwval.emulators import tasmota

    with tasmota.TasmotaEmulator(bench(), MeterModel()) as emu:
        info = open_info("tasmota", emu.path)
    assert EMULATOR_MARK in info.identity["hardware"] and info.emulated
    monkeypatch.setattr(tasmota, "EMULATOR_MARK", "")  # answers as a real plug's firmware does
    with tasmota.TasmotaEmulator(bench(), MeterModel()) as emu:
        info = open_info("tasmota", emu.path)
    assert info.identity["hardware"].strip() == "ESP8266EX" and not info.emulated


def test_wattsup_is_emulated_from_its_version_answer(monkeypatch):
    from hwval.emulators import wattsup

    with wattsup.WattsUpEmulator(bench(), MeterModel()) as emu:
        info = open_info("wattsup", emu.path)
    assert info.identity["extra"] == EMULATOR_MARK and info.emulated
    monkeypatch.setattr(wattsup, "VERSION_FIELDS", wattsup.VERSION_FIELDS[:8])  # the documented #v
    with wattsup.WattsUpEmulator(bench(), MeterModel()) as emu:
        info = open_info("wattsup", emu.path)
    assert info.identity["fw_timestamp"] == "200712212301" and "extra" not in info.identity
    assert not info.emulated
