"""One conformance test over every registered driver: the source protocol, option checking, and a
clear SourceUnavailable (never a traceback) for a resource that does not exist."""

from __future__ import annotations

import time

import pytest

from hwval.sources.base import STANDARD_UNITS, Key, SourceSpec, SourceUnavailable, StreamInfo
from hwval.sources.registry import BUILTIN_DRIVERS, Registry
from hwval.sources.testing import RecordingContext

DRIVERS = sorted(BUILTIN_DRIVERS)
#: A resource of the right form for each driver family that cannot exist on any machine.
MISSING = {
    "serial": "/dev/hwval-conformance-missing",
    "visa": "TCPIP::127.0.0.1::1::SOCKET",  # port 1: nothing listens, connection refused
    "rapl": "/nonexistent/hwval-conformance-powercap",
}
FAMILY = {"tasmota": "serial", "esphome": "serial", "pzem004t": "serial", "cse7766": "serial",
          "wattsup": "serial", "wt300": "visa", "hmc8015": "visa", "n6705": "visa", "rapl": "rapl"}


def test_every_contract_driver_is_registered():
    assert set(DRIVERS) >= {"tasmota", "esphome", "pzem004t", "cse7766", "wattsup", "wt300", "hmc8015",
                            "n6705", "nvml", "rapl"}


@pytest.mark.parametrize("driver", DRIVERS)
def test_driver_follows_the_source_protocol(driver):
    factory = Registry().factory(driver)
    resource = MISSING.get(FAMILY.get(driver, ""), "constant:10" if driver == "synthetic" else "")
    source = factory(SourceSpec(driver, resource, f"conf_{driver}", None, {}))
    assert source.mode in ("polled", "streaming")
    assert callable(source.open) and callable(source.close)
    assert callable(getattr(source, "read" if source.mode == "polled" else "run"))
    if source.mode == "polled":
        # None is allowed until open() when the default depends on the instrument (e.g. wt300
        # polls at a quarter of the update interval it reads from the analyzer)
        assert source.period_s is None or source.period_s > 0


@pytest.mark.parametrize("driver", DRIVERS)
def test_unknown_option_is_rejected_by_name(driver):
    factory = Registry().factory(driver)
    resource = MISSING.get(FAMILY.get(driver, ""), "constant:10" if driver == "synthetic" else "")
    with pytest.raises(ValueError, match="no_such_option"):
        factory(SourceSpec(driver, resource, "x", None, {"no_such_option": 1}))


@pytest.mark.parametrize("driver", [d for d in DRIVERS if d != "synthetic"])
def test_missing_resource_is_a_clear_source_unavailable(driver):
    factory = Registry().factory(driver)
    resource = MISSING.get(FAMILY.get(driver, ""), "")
    source = factory(SourceSpec(driver, resource, "x", None, {}))
    t0 = time.monotonic()
    try:
        source.open(RecordingContext())
    except SourceUnavailable as exc:
        message = str(exc)
    else:
        source.close()
        if driver == "nvml":
            pytest.skip("this machine has a working NVIDIA driver and GPU")
        pytest.fail(f"{driver} opened a resource that does not exist: {resource!r}")
    assert time.monotonic() - t0 < 15
    assert message.strip() and "Traceback" not in message
    if driver == "nvml":
        assert "NVIDIA" in message or "NVML" in message
    else:
        # the message names the resource the operator gave
        assert resource in message or resource.split("::")[1] in message


@pytest.mark.parametrize("driver", ["synthetic"])
def test_streams_declare_units_for_standard_keys(driver):
    source = Registry().create(SourceSpec(driver, "constant:5", "s", 0.01, {}))
    infos = source.open(RecordingContext())
    try:
        for info in infos:
            assert isinstance(info, StreamInfo)
            for key in info.keys:
                assert isinstance(key, Key)
                if key.name in STANDARD_UNITS:
                    assert key.unit == STANDARD_UNITS[key.name]
        values = source.read()
        assert set(values) == {i.name for i in infos}
        for info in infos:
            assert set(values[info.name]) <= set(info.key_names())
    finally:
        source.close()
