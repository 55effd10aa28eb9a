from __future__ import annotations

import pytest

from hwval.config import (CaptureConfig, ConfigError, config_from_dict, expand_output, load_config,
                          parse_meter_spec)
from hwval.sources.registry import Registry

KNOWN = Registry().names()


def test_spec_with_visa_resource_and_options():
    spec = parse_meter_spec("wt300:TCPIP::10.0.0.5::INSTR?name=ref&period_s=0.5&integrate=true&rate=0.25", KNOWN)
    assert spec.driver == "wt300" and spec.resource == "TCPIP::10.0.0.5::INSTR"
    assert spec.name == "ref" and spec.period_s == 0.5
    assert spec.options == {"integrate": True, "rate": 0.25}


def test_spec_defaults_name_to_driver_and_types_values():
    spec = parse_meter_spec("pzem004t:/dev/ttyUSB1?address=1&label=a%20b", KNOWN)
    assert spec.name == "pzem004t" and spec.period_s is None
    assert spec.options == {"address": 1, "label": "a b"}


@pytest.mark.parametrize("text, needle", [
    ("tasmota", "expected DRIVER:RESOURCE"),
    (":x", "expected DRIVER:RESOURCE"),
    ("tasmota:?a=1", "empty resource"),
    ("nope:/dev/x", "unknown driver 'nope'"),
    ("tasmota:/dev/x?baud", "must be key=value"),
    ("tasmota:/dev/x?period_s=0", "period_s must be"),
    ("tasmota:/dev/x?name=bad/name", "stream name"),
])
def test_bad_specs_name_the_spec(text, needle):
    with pytest.raises(ConfigError) as exc:
        parse_meter_spec(text, KNOWN)
    assert needle in str(exc.value) and text in str(exc.value)


def test_toml_file_round_trip(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text("""
output = "runs/{date}.h5"
[software]
nvml = true
nvml_period_s = 0.1
rapl = false
rapl_root = "/tmp/pc"
[[meters]]
name = "wall"
driver = "tasmota"
resource = "/dev/ttyUSB0"
period_s = 1
options = { baudrate = 115200 }
""")
    cfg = load_config(path, KNOWN)
    assert cfg.software.nvml is True and cfg.software.nvml_period_s == 0.1 and cfg.software.rapl is False
    (m,) = cfg.meters
    assert (m.name, m.driver, m.resource, m.period_s, dict(m.options)) == (
        "wall", "tasmota", "/dev/ttyUSB0", 1.0, {"baudrate": 115200})
    assert '"wall"' in cfg.to_json()


@pytest.mark.parametrize("raw, needle", [
    ({"outptu": "x"}, "unknown key 'outptu'"),
    ({"software": {"nvml": "yes"}}, "'software.nvml' must be true or false"),
    ({"software": {"rapl_period_s": 0}}, "'software.rapl_period_s' must be a number of seconds from"),
    ({"meters": [{"driver": "tasmota"}]}, "meters[0] is missing 'resource'"),
    ({"meters": [{"driver": "zz", "resource": "x"}]}, "meters[0].driver: unknown driver 'zz'"),
    ({"meters": [{"driver": "tasmota", "resource": "x", "colour": 1}]}, "unknown key 'meters[0].colour'"),
    ({"meters": [{"driver": "tasmota", "resource": "a"}, {"driver": "tasmota", "resource": "b"}]},
     "two meters are named 'tasmota'"),
    ({"meters": "x"}, "must be an array of tables"),
])
def test_toml_errors_name_file_and_key(raw, needle):
    with pytest.raises(ConfigError) as exc:
        config_from_dict(raw, "lab.toml", KNOWN)
    assert str(exc.value).startswith("lab.toml: ") and needle in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_cli_meters_join_config_meters_with_unique_names():
    cfg = CaptureConfig(meters=(parse_meter_spec("tasmota:/dev/a", KNOWN),))
    with pytest.raises(ConfigError, match="two meters are named 'tasmota'"):
        cfg.with_meters([parse_meter_spec("tasmota:/dev/b", KNOWN)])
    assert len(cfg.with_meters([parse_meter_spec("tasmota:/dev/b?name=t2", KNOWN)]).meters) == 2


def test_output_placeholders():
    import datetime as dt
    when = dt.datetime(2026, 11, 27, 9, 5, 7)
    assert expand_output("runs/{date}-{time}-{run_id}.h5", "abcdef123456", when) == "runs/20261127-090507-abcdef12.h5"
    with pytest.raises(ConfigError, match="bad placeholder"):
        expand_output("runs/{when}.h5", "x", when)
