"""Pure SCPI codecs and instrument profiles, with string/byte fixtures."""

from __future__ import annotations

import math
import struct

import pytest

from hwval.sources.base import SourceSpec, SourceUnavailable
from hwval.sources.visa import codec
from hwval.sources.visa.codec import MalformedReply
from hwval.sources.visa.profile import ProfileError, load_profile, load_profiles, profile_dir, select_profile
from hwval.sources.visa.scpi import resolve_backend, sim_definition


def test_numbers_with_yokogawa_sentinels():
    assert codec.parse_numbers("104.75E+00,0.4568E+00,47.85E+00\n") == [104.75, 0.4568, 47.85]
    no_data, over, neg = codec.parse_numbers("NAN,INF,-1.5E-01")
    assert math.isnan(no_data) and over == math.inf and neg == -0.15
    assert math.isnan(codec.parse_number("9.91E+37")) and codec.parse_number("9.9E+37") == math.inf
    assert codec.parse_number("+2.3012E+02") == 230.12 and codec.parse_number("5") == 5.0


@pytest.mark.parametrize("reply", ["", "1.0E+00,#~?x", "1.0E+0", "abc", "1.0E+00,,2"])
def test_garbage_and_truncation_are_malformed(reply):
    with pytest.raises(MalformedReply):
        codec.parse_numbers(reply, expected=2)


def test_field_count_is_checked():
    with pytest.raises(MalformedReply, match="expected 3 values, got 2"):
        codec.parse_numbers("1,2", expected=3)


def test_idn_and_error_queue():
    idn = codec.parse_idn("YOKOGAWA,WT310,C2PH13047V,F1.03\n")
    assert (idn.manufacturer, idn.model, idn.serial, idn.firmware) == ("YOKOGAWA", "WT310", "C2PH13047V", "F1.03")
    with pytest.raises(MalformedReply):
        codec.parse_idn("WT310")
    assert codec.parse_error('-113,"Undefined header"') == (-113, "Undefined header")
    assert codec.parse_error('+0,"No error"\n') == (0, "No error")
    assert codec.parse_error("-224") == (-224, "")
    assert codec.parse_error(':STATUS:ERROR 813,"Not allowed during integration"') == (813, "Not allowed during integration")
    with pytest.raises(MalformedReply):
        codec.parse_error("garbage")


def test_definite_length_blocks():
    payload = struct.pack(">3f", 1.5, 250.0, -2.0)
    block = b"#212" + payload + b"\n"
    assert codec.parse_definite_block(block) == payload
    assert list(codec.decode_real32(payload)) == [1.5, 250.0, -2.0]
    assert list(codec.decode_real32(struct.pack("<2f", 3.0, 4.0), big_endian=False)) == [3.0, 4.0]
    for bad in (b"#212" + payload[:-1], b"212" + payload, b"#2x2" + payload, b"#212" + payload + b"zz", b"#0abc"):
        with pytest.raises(MalformedReply):
            codec.parse_definite_block(bad)
    with pytest.raises(MalformedReply):
        codec.decode_real32(b"\x00\x01\x02")


def test_range_choice_and_uncertainty():
    ranges = (0.5, 1.0, 2.0, 5.0)
    assert codec.pick_range(1.144, ranges, 1.1) == (2.0, True)  # 1.26 A -> 2 A
    assert codec.pick_range(0.9, ranges, 1.1) == (1.0, True)
    assert codec.pick_range(9.0, ranges) == (5.0, False)
    # WT310: 0.1 % of 250 W + 0.05 % of (300 V x 2 A)
    assert codec.power_uncertainty_w(250.0, 600.0, 0.1, 0.05) == pytest.approx(0.25 + 0.30)
    assert math.isnan(codec.power_uncertainty_w(math.nan, 600.0, 0.1, 0.05))


def test_shipped_profiles_load_and_match_their_instruments():
    assert {p.path.name for p in load_profiles("wt300")} == {"wt310.toml", "wt310e.toml", "wt330.toml",
                                                             "wt330e.toml"}
    wt310e = select_profile("wt300", codec.parse_idn("YOKOGAWA,WT310E,X,F1"))
    assert wt310e.path.name == "wt310e.toml" and wt310e.setup[0] == "*CLS" and 0.1 in wt310e.update_intervals_s
    # the pre-E and E series differ in range error (IM WT310-02EN vs IM WT310E-02EN, §7.3.2)
    wt310 = select_profile("wt300", codec.parse_idn("YOKOGAWA,WT310,X,F1"))
    assert (wt310.path.name, wt310.power_pct_range, wt310e.power_pct_range) == ("wt310.toml", 0.1, 0.05)
    assert select_profile("wt300", codec.parse_idn("YOKOGAWA,WT310HC,X,F1")).path.name == "wt310.toml"
    assert select_profile("wt300", codec.parse_idn("YOKOGAWA,WT333,X,F1")).extra["elements"] == 3
    assert select_profile("wt300", codec.parse_idn("YOKOGAWA,WT332E,X,F1")).path.name == "wt330e.toml"
    # every shipped Yokogawa profile waits for the falling edge of UPD (new data readable)
    assert all(p.extra["after_setup"] == [":STAT:FILT1 FALL"] for p in load_profiles("wt300"))
    assert select_profile("hmc8015", codec.parse_idn("Rohde&Schwarz,HMC8015,1,2")).error_query == "SYST:ERR?"
    assert select_profile("n6705", codec.parse_idn("Keysight Technologies,N6705C,MY1,D")).scope == "dc"
    with pytest.raises(ProfileError, match="ROHDE&SCHWARZ,HMC8015"):
        select_profile("wt300", codec.parse_idn("ROHDE&SCHWARZ,HMC8015,1,2"))
    assert (profile_dir() / "README.md").is_file()


def test_bad_profiles_name_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[profile]\ndriver = "wt300"\nname = "x"\n[identity]\nmanufacturer = "Y"\n')
    with pytest.raises(ProfileError, match=r"bad.toml: missing key 'identity.model'"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "missing.toml")
    bad.write_text("not = [toml")
    with pytest.raises(ProfileError, match="unreadable"):
        load_profile(bad)


def test_backend_option_resolution(tmp_path):
    assert resolve_backend("py", "wt300") == "@py"
    assert resolve_backend("sim", "wt300") == f"{sim_definition('wt300')}@sim"
    assert sim_definition("wt300").is_file()
    with pytest.raises(SourceUnavailable, match="does not exist"):
        resolve_backend(str(tmp_path / "nope.yaml") + "@sim", "wt300")


@pytest.mark.parametrize("module, options, message", [
    ("wt300", {"bogus": 1}, "unknown option 'bogus'"),
    ("wt300", {"ranging": "sometimes"}, "'ranging' must be one of auto, fixed, pass, got 'sometimes'"),
    ("wt300", {"ranging": "fixed", "voltage_range_v": 300.0}, "needs voltage_range_v=V and current_range_a=A"),
    ("wt300", {"element": "4"}, "'element' must be one of 1, 2, 3, SIGMA, got '4'"),
    ("wt300", {"profile": "/nonexistent.toml"}, "does not exist"),
    ("hmc8015", {"ranging": "pass"}, "'ranging' must be one of auto, fixed, got 'pass'"),
    ("n6705", {"format": "hex"}, "'format' must be one of ascii, real, got 'hex'"),
    ("n6705", {"channel": 7}, "'channel' must be a whole number >= 1 and <= 4, got 7"),
])
def test_drivers_reject_bad_options(module, options, message):
    import importlib

    create = importlib.import_module(f"hwval.sources.visa.{module}").create
    with pytest.raises(ValueError, match=message):
        create(SourceSpec(module, "TCPIP::127.0.0.1::1::SOCKET", "wall", None, options))
