"""Driver options as data: one declaration per driver checks specs, feeds ``hwval drivers`` and
generates the README's table (which this test keeps from going stale)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hwval.cli import cli
from hwval.config import load_config, parse_meter_spec
from hwval.sources.base import SourceSpec
from hwval.sources.options import (DriverOptions, Option, OptionError, all_driver_options,
                                   driver_options, markdown_table, readme_section)
from hwval.sources.registry import BUILTIN_DRIVERS, Registry

README = Path(__file__).resolve().parents[1] / "README.md"
#: A resource each driver's constructor accepts without opening anything.
RESOURCES = {"synthetic": "constant:100", "rapl": "/nonexistent-powercap"}


def spec(driver: str, **options) -> SourceSpec:
    return SourceSpec(driver, RESOURCES.get(driver, "/dev/null"), driver, None, options)


def test_readme_driver_table_is_generated_from_the_declarations():
    generated = markdown_table(all_driver_options())
    assert readme_section(README.read_text(encoding="utf-8")) == generated, (
        "README's driver table is stale: regenerate it with "
        "`python -m hwval.sources.options --markdown` between the driver-options markers")


@pytest.mark.parametrize("driver", list(BUILTIN_DRIVERS))
def test_every_driver_builds_from_its_defaults_and_names_itself_in_errors(driver):
    declared = driver_options(driver)
    assert declared.driver == driver and declared.summary and declared.resource
    parsed = declared.parse(spec(driver))
    assert sorted(parsed) == sorted(declared.names())
    for option in declared.options:
        assert option.help, f"{driver}.{option.name} has no help"
        # a fact still open is said plainly in help (what is known), never as a shouted mark
        assert "UNVERIFIED" not in option.help.upper(), f"{driver}.{option.name}"
        if option.default is not None:
            assert option.check(option.default) == option.default
    source = Registry().create(spec(driver))
    assert source.mode in ("polled", "streaming")
    with pytest.raises(OptionError) as err:
        Registry().create(spec(driver, no_such_option=1))
    message = str(err.value)
    assert message.startswith(f"{driver}: unknown option 'no_such_option' (accepted: ")
    assert "\n" not in message
    for name in declared.names():
        assert name in message


@pytest.mark.parametrize("driver, options, needle", [
    ("tasmota", {"mode": "push"}, "tasmota: option 'mode' must be one of poll, sensor, got 'push'"),
    ("pzem004t", {"retries": -1}, "pzem004t: option 'retries' must be a whole number >= 0, got -1"),
    ("cse7766", {"power_gain": 0}, "cse7766: option 'power_gain' must be a number > 0, got 0"),
    ("n6705", {"channel": 5}, "n6705: option 'channel' must be a whole number >= 1 and <= 4, got 5"),
    ("wt300", {"integrate": 1}, "wt300: option 'integrate' must be true or false, got 1"),
    ("nvml", {"detect_s": -1.0}, "nvml: option 'detect_s' must be a number >= 0 s, got -1.0"),
    ("rapl", {"max_power_w": "lots"}, "rapl: option 'max_power_w' must be a number > 0 W, got 'lots'"),
    ("wattsup", {"interval_s": 1.5}, "wattsup: option 'interval_s' must be a whole number >= 1 s, got 1.5"),
])
def test_a_bad_value_is_one_line_naming_driver_option_and_what_is_accepted(driver, options, needle):
    with pytest.raises(OptionError) as err:
        Registry().create(spec(driver, **options))
    assert str(err.value) == needle


def test_values_are_converted_to_the_declared_form():
    tasmota = driver_options("tasmota").parse(spec("tasmota", command="Status 10", channel=2))
    assert tasmota["command"] == "status10" and tasmota["channel"] == 2
    wt300 = driver_options("wt300").parse(spec("wt300", element=2, ranging="PASS", timeout_s=3))
    assert wt300["element"] == "2" and wt300["ranging"] == "pass"
    assert wt300["timeout_s"] == 3.0 and isinstance(wt300["timeout_s"], float)
    assert driver_options("wt300").parse(spec("wt300", element="sigma"))["element"] == "SIGMA"


def test_a_declaration_refuses_a_duplicate_or_an_untyped_option():
    with pytest.raises(ValueError, match="declared twice"):
        DriverOptions("x", "x", "x", (Option("a", int, 1, "a"), Option("a", int, 2, "a")))
    with pytest.raises(TypeError, match="type must be one of"):
        Option("a", list, [], "a")


def test_an_option_error_from_a_toml_file_names_the_file_and_comes_alone(tmp_path):
    lab = tmp_path / "lab.toml"
    lab.write_text('[[meters]]\nname = "plug"\ndriver = "tasmota"\nresource = "/dev/null"\n'
                   'options = { mode = "pol" }\n', encoding="utf-8")
    with pytest.raises(OptionError, match=rf"^{lab}: meters\[0\] \(meter 'plug', tasmota\): option 'mode'"):
        Registry().create(load_config(lab).meters[0])
    # auto NVML/RAPL (an empty powercap tree gives a RAPL note when RAPL is tried): the option
    # error must be checked before them, so it is the only line printed
    res = CliRunner().invoke(cli, ["capture", "-c", str(lab), "--rapl-root", str(tmp_path),
                                   "--duration", "1", "-o", str(tmp_path / "run.h5")])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert lines == [f"hwval: error: {lab}: meters[0] (meter 'plug', tasmota): option 'mode' "
                     "must be one of poll, sensor, got 'pol'"]
    assert not (tmp_path / "run.h5").exists()


WT300 = "wt300:TCPIP::127.0.0.1::1::SOCKET"


@pytest.mark.parametrize("meter, toml, expected, names", [
    # -m: the spec holds the driver (and any name=): quoted whole, nothing named again
    (f"{WT300}?update_s=abc", None,
     f"-m '{WT300}?update_s=abc': option 'update_s' must be a number > 0 s, got 'abc'", ["wt300"]),
    (f"{WT300}?name=ref&update_s=abc", None,
     f"-m '{WT300}?name=ref&update_s=abc': option 'update_s' must be a number > 0 s, got 'abc'",
     ["wt300", "ref"]),
    (f"{WT300}?bogus=1", None,
     f"-m '{WT300}?bogus=1': unknown option 'bogus' (accepted: backend, current_range_a, element, "
     "integrate, profile, ranging, ranging_s, timeout_s, update_s, voltage_range_v)", ["wt300"]),
    # a check the driver makes itself (two options together) is placed the same way
    (f"{WT300}?ranging=fixed", None,
     f"-m '{WT300}?ranging=fixed': ranging=fixed needs voltage_range_v=V and current_range_a=A",
     ["wt300"]),
    # TOML: the file and table, the meter's name, the driver only where the name differs
    (None, 'driver = "wt300"\noptions = { update_s = "abc" }',
     "{lab}: meters[0] (meter 'wt300'): option 'update_s' must be a number > 0 s, got 'abc'", ["wt300"]),
    (None, 'name = "bench"\ndriver = "wt300"\noptions = { update_s = 0 }',
     "{lab}: meters[0] (meter 'bench', wt300): option 'update_s' must be a number > 0 s, got 0",
     ["wt300", "bench"]),
])
def test_an_option_error_is_one_line_naming_the_meter_once(tmp_path, meter, toml, expected, names):
    lab = tmp_path / "lab.toml"
    if toml is None:
        where = ["-m", meter]
    else:
        lab.write_text(f'[[meters]]\n{toml}\nresource = "TCPIP::127.0.0.1::1::SOCKET"\n', encoding="utf-8")
        where = ["-c", str(lab)]
    res = CliRunner().invoke(cli, ["capture", *where, "--no-nvml", "--no-rapl", "--duration", "1",
                                   "-o", str(tmp_path / "run.h5")])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert lines == ["hwval: error: " + expected.format(lab=lab)]
    # the folder pytest made for this test may hold a meter's name: counted after the file
    said = lines[0].replace(str(lab), "")
    for name in names:
        assert said.count(name) == 1, (name, said)


def test_drivers_command_lists_every_driver_and_its_options():
    runner = CliRunner()
    text = runner.invoke(cli, ["drivers"])
    assert text.exit_code == 0, text.output
    for declared in all_driver_options():
        assert f"{declared.driver}: {declared.summary}" in text.output
        for option in declared.options:
            assert f"  {option.name} (" in text.output
    listed = json.loads(runner.invoke(cli, ["drivers", "--json"]).output)
    assert [d["driver"] for d in listed] == list(BUILTIN_DRIVERS)
    assert listed == [d.as_dict() for d in all_driver_options()]
    one = json.loads(runner.invoke(cli, ["drivers", "pzem004t", "--json"]).output)
    address = next(o for o in one[0]["options"] if o["name"] == "address")
    assert address == {"name": "address", "type": "int", "default": 1, "ge": 1, "le": 248,
                       "help": driver_options("pzem004t").get("address").help}
    bad = runner.invoke(cli, ["drivers", "pzem"])
    assert bad.exit_code == 2 and "unknown driver 'pzem'" in bad.stderr


def test_an_option_error_from_a_meter_spec_names_the_spec():
    meter = parse_meter_spec("pzem004t:/dev/ttyUSB1?address=300&name=wall")
    with pytest.raises(OptionError) as err:
        Registry().create(meter)
    assert str(err.value) == ("-m 'pzem004t:/dev/ttyUSB1?address=300&name=wall': option "
                              "'address' must be a whole number >= 1 and <= 248, got 300")


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_a_number_option_refuses_what_is_not_finite(value):
    with pytest.raises(OptionError, match="'timeout_s' must be a number > 0 s, got"):
        driver_options("pzem004t").parse(spec("pzem004t", timeout_s=value))
