"""Capture configuration: the TOML file and ``-m DRIVER:RESOURCE?k=v`` specs, parsed into typed
objects. Every error names the file, key or spec and the form that was expected."""

from __future__ import annotations

import datetime as _dt
import json
import re
import socket
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote

from hwval.sources.base import SourceSpec

DEFAULT_OUTPUT = "runs/{date}-{time}.h5"
DEFAULT_RAPL_ROOT = "/sys/class/powercap"
SPEC_FORM = "DRIVER:RESOURCE[?key=value&...], e.g. tasmota:/dev/ttyUSB0?baudrate=115200"


class ConfigError(ValueError):
    """A configuration problem; the message is one line an operator can act on."""


@dataclass(frozen=True)
class SoftwareConfig:
    """Software meters. ``None`` for nvml/rapl means *auto*: used when available, otherwise a
    note; ``True`` makes an unavailable meter an error."""

    nvml: bool | None = None
    nvml_period_s: float = 0.05
    rapl: bool | None = None
    rapl_period_s: float = 0.01
    rapl_root: str = DEFAULT_RAPL_ROOT


@dataclass(frozen=True)
class CaptureConfig:
    output: str = DEFAULT_OUTPUT
    software: SoftwareConfig = field(default_factory=SoftwareConfig)
    meters: tuple[SourceSpec, ...] = ()
    #: The file this came from (None when built from flags only).
    path: str | None = None

    def to_json(self) -> str:
        """The resolved configuration, as stored in the run file's ``config`` attribute."""
        data = asdict(self)
        data["meters"] = [
            {**asdict(m), "options": dict(m.options)} for m in self.meters
        ]
        for meter in data["meters"]:
            meter.pop("origin", None)  # where an error points; not part of the configuration
        return json.dumps(data, sort_keys=True)

    def with_meters(self, extra: Iterable[SourceSpec]) -> "CaptureConfig":
        meters = self.meters + tuple(extra)
        _check_unique_names(meters, "meters")
        return replace(self, meters=meters)


# ----------------------------------------------------------------------------- TOML

_TOP_KEYS = {"output": str, "software": dict, "meters": list}
_SOFTWARE_KEYS = {
    "nvml": bool, "nvml_period_s": float, "rapl": bool, "rapl_period_s": float, "rapl_root": str,
}
_METER_KEYS = {"name": str, "driver": str, "resource": str, "period_s": float, "options": dict}


def load_config(path: str | Path, known_drivers: Iterable[str] | None = None) -> CaptureConfig:
    """Read a lab TOML file (see the README's *Configuration*)."""
    path = Path(path)
    where = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where}: config file not found (pass an existing file with -c)") from None
    except PermissionError:
        raise ConfigError(f"{where}: cannot read config file (permission denied)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not a UTF-8 text file") from None
    except OSError as exc:  # a directory, an unreadable device...: the OS's own words
        raise ConfigError(f"{where}: cannot read config file ({exc.strerror or exc}); pass a TOML file with -c") from None
    return config_from_dict(raw, where, known_drivers)


def config_from_dict(raw: dict[str, Any], where: str = "<config>",
                     known_drivers: Iterable[str] | None = None) -> CaptureConfig:
    _check_keys(raw, _TOP_KEYS, where, "")
    software = SoftwareConfig()
    if "software" in raw:
        sw = raw["software"]
        _check_keys(sw, _SOFTWARE_KEYS, where, "software.")
        for key in ("nvml_period_s", "rapl_period_s"):
            if key in sw:
                _check_positive(sw[key], where, f"software.{key}")
        software = SoftwareConfig(**{k: (float(v) if k.endswith("_s") else v) for k, v in sw.items()})
    meters = []
    for i, table in enumerate(raw.get("meters", [])):
        label = f"meters[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {label} must be a table ([[meters]] with driver = ..., resource = ...)")
        _check_keys(table, _METER_KEYS, where, f"{label}.")
        for required in ("driver", "resource"):
            if required not in table:
                raise ConfigError(f"{where}: {label} is missing '{required}' (e.g. {required} = \"...\")")
        if "period_s" in table:
            _check_positive(table["period_s"], where, f"{label}.period_s")
        driver = table["driver"]
        _check_driver(driver, known_drivers, f"{where}: {label}.driver")
        name = table.get("name", driver)
        _check_name(name, f"{where}: {label}.name")
        meters.append(SourceSpec(driver=driver, resource=table["resource"], name=name,
                                 period_s=float(table["period_s"]) if "period_s" in table else None,
                                 options=dict(table.get("options", {})),
                                 origin=f"{where}: {label}"))
    _check_unique_names(meters, where)
    return CaptureConfig(output=raw.get("output", DEFAULT_OUTPUT), software=software,
                         meters=tuple(meters), path=where)


def _check_keys(table: dict[str, Any], allowed: dict[str, type], where: str, prefix: str) -> None:
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key '{prefix}{key}' (expected one of: {', '.join(allowed)})"
            )
        want = allowed[key]
        ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
        if want is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            form = {str: "a string", bool: "true or false", float: "a number", dict: "a table",
                    list: "an array of tables"}[want]
            raise ConfigError(f"{where}: key '{prefix}{key}' must be {form}, got {value!r}")


#: Accepted sampling periods. Below MIN_PERIOD_S no meter answers and the schedule would spin a
#: core; above MAX_PERIOD_S (an hour) a "meter" records almost nothing, and huge values (1e308)
#: overflow the scheduler's nanosecond deadlines. NaN and infinities are refused by the same test.
MIN_PERIOD_S = 1e-4
MAX_PERIOD_S = 3600.0
PERIOD_FORM = f"a number of seconds from {MIN_PERIOD_S:g} to {MAX_PERIOD_S:g}"


def period_ok(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and MIN_PERIOD_S <= value <= MAX_PERIOD_S)  # False for NaN


def _check_positive(value: float, where: str, key: str) -> None:
    if not period_ok(value):
        raise ConfigError(f"{where}: key '{key}' must be {PERIOD_FORM}, got {value!r}")


def _check_driver(driver: str, known: Iterable[str] | None, where: str) -> None:
    if known is not None and driver not in set(known):
        raise ConfigError(f"{where}: unknown driver {driver!r} (known: {', '.join(sorted(known))})")


#: Stream names become HDF5 group names (and file-system-like paths): ASCII letters, digits,
#: '_', '-', '.', starting with a letter, digit or '_' so that '.', '..' or '-x' cannot be one.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def _check_name(name: object, where: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: stream name {name!r} must be 1-64 ASCII letters, digits, '_', '-' "
                          "or '.', starting with a letter, digit or '_' (e.g. name=wall)")


def _check_unique_names(meters: Iterable[SourceSpec], where: str) -> None:
    seen: set[str] = set()
    for m in meters:
        if m.name in seen:
            raise ConfigError(f"{where}: two meters are named {m.name!r}; give each a unique name (name=...)")
        seen.add(m.name)


# ----------------------------------------------------------------------------- -m SPEC

def parse_value(text: str) -> bool | int | float | str:
    """Type a query value: true/false, an integer, a float, else the string itself."""
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def parse_meter_spec(text: str, known_drivers: Iterable[str] | None = None) -> SourceSpec:
    """Parse ``DRIVER:RESOURCE[?key=value&...]``; ``name=`` and ``period_s=`` are pulled out."""
    where = f"-m {text!r}"
    driver, sep, rest = text.partition(":")
    if not sep or not driver or not rest:
        raise ConfigError(f"{where}: expected {SPEC_FORM}")
    resource, _, query = rest.partition("?")
    if not resource:
        raise ConfigError(f"{where}: empty resource; expected {SPEC_FORM}")
    _check_driver(driver, known_drivers, where)
    options: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"{where}: option {item!r} must be key=value")
        options[unquote(key)] = parse_value(unquote(value))
    name = str(options.pop("name", driver))
    _check_name(name, where)
    period = options.pop("period_s", None)
    if period is not None:
        if not period_ok(period):
            raise ConfigError(f"{where}: period_s must be {PERIOD_FORM}, got {period!r}")
        period = float(period)
    return SourceSpec(driver=driver, resource=unquote(resource), name=name, period_s=period,
                      options=options, origin=where)


def expand_output(template: str, run_id: str, when: _dt.datetime | None = None) -> str:
    """Expand ``{date}`` (YYYYMMDD), ``{time}`` (HHMMSS), ``{hostname}`` and ``{run_id}``."""
    when = when or _dt.datetime.now()
    try:
        return template.format(date=when.strftime("%Y%m%d"), time=when.strftime("%H%M%S"),
                               hostname=socket.gethostname(), run_id=run_id[:8])
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"output {template!r}: bad placeholder {exc}; use {{date}}, {{time}}, {{hostname}}, {{run_id}}"
        ) from None
