"""The wt300 driver through pyvisa-sim with the shipped definition (hwval/sources/visa/sim/wt300.yaml):
a WT310E whose firmware knows ':RATE' but not ':SAMP:RATE'."""

from __future__ import annotations

import pytest

from hwval.sources.base import SourceSpec, SourceUnavailable
from hwval.sources.visa.wt300 import create
from test_visa_support import RecordingContext

RESOURCE = "TCPIP::127.0.0.1::10001::SOCKET"


def sim_source(resource: str = RESOURCE, **options):
    return create(SourceSpec("wt300", resource, "wall", None, {"backend": "sim", "update_s": 0.5, **options}))


def test_setup_rate_fallback_and_values_through_pyvisa_sim():
    src = sim_source(ranging="fixed", voltage_range_v=300, current_range_a=2)
    ctx = RecordingContext()
    info = src.open(ctx)[0]
    out = src.read()["wall"]
    rate, current_range = src.session.query(":RATE?"), src.session.query(":INP:CURR:RANG?")
    src.close()
    assert info.identity["model"] == "WT310E" and info.emulated
    assert out["power_w"] == 250.31 and out["voltage_v"] == 230.12 and out["current_a"] == 1.145
    assert out["power_uncertainty_w"] == pytest.approx(0.001 * 250.31 + 0.0005 * 300 * 2)
    # ':SAMP:RATE' was rejected by this firmware and ':RATE' accepted: not an error to report
    assert ctx.errors == {}
    assert (rate, current_range) == ("5.00E-01", "2.0E+00")


def test_wrong_instrument_through_pyvisa_sim():
    with pytest.raises(SourceUnavailable, match=r"no wt300 profile matches .*Rohde&Schwarz,HMC8015"):
        sim_source("TCPIP::127.0.0.1::10002::SOCKET").open(RecordingContext())


def test_unknown_command_surfaces_the_scpi_message_through_pyvisa_sim(tmp_path):
    from hwval.sources.visa.profile import profile_dir

    profile = tmp_path / "p.toml"
    profile.write_text((profile_dir() / "wt310e.toml").read_text().replace('"*CLS", ', '"*CLS", ":SYST:NOPE", '))
    src = sim_source(profile=str(profile))
    ctx = RecordingContext()
    src.open(ctx)
    src.close()
    assert ctx.errors == {"scpi_-113": 1} and '-113,"Undefined header"' in ctx.messages[0]
