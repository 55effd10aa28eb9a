"""Instrument profiles: the data that makes one analyzer model differ from another.

A profile is a TOML file shipped in the package, ``hwval/sources/visa/profiles/`` (see the README
there), read with :mod:`importlib.resources` so an installed wheel finds it: which ``*IDN?``
answers it matches, the setup sequence, the error-queue query, update intervals, ranges and the
accuracy spec used for the per-sample uncertainty. A new model of a known family is a new
profile, not new code. Drivers pick the profile whose identity patterns match the instrument's
``*IDN?``, or the one the operator names with ``profile=PATH``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib.abc import Traversable
from importlib.resources import files
from pathlib import Path
from typing import Any, Mapping

from hwval.sources.visa.codec import Identity

#: Where the profile format is described (a file of the package's source tree).
FORMAT_DOC = "hwval/sources/visa/profiles/README.md"


def profile_dir() -> Traversable:
    """The shipped profiles: package data of ``hwval.sources.visa`` (works from a wheel)."""
    return files("hwval.sources.visa") / "profiles"


class ProfileError(ValueError):
    """A profile file is missing, unreadable or lacks a key; the message names file and key."""


@dataclass(frozen=True)
class Profile:
    path: Path | Traversable
    driver: str
    name: str
    scope: str
    manufacturer_pattern: str
    model_pattern: str
    setup: tuple[str, ...]
    error_query: str
    #: Query whose bit 0 says "new data since last asked" (Yokogawa ``:STAT:EESR?``), or "".
    update_query: str
    #: Commands that set the update interval, tried in order (the first accepted wins).
    rate_commands: tuple[str, ...]
    update_intervals_s: tuple[float, ...]
    default_update_s: float
    voltage_ranges_v: tuple[float, ...]
    current_ranges_a: tuple[float, ...]
    #: A value above this percentage of its range is over-range.
    overrange_pct: float
    power_pct_reading: float
    power_pct_range: float
    #: The driver's own section (``[wt300]``, ``[hmc8015]``, ``[n6705]``), as read.
    extra: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, identity: Identity) -> bool:
        return bool(re.search(self.manufacturer_pattern, identity.manufacturer, re.IGNORECASE)
                    and re.search(self.model_pattern, identity.model, re.IGNORECASE))


def _get(path: Path, table: Mapping[str, Any], dotted: str, kind: type | tuple[type, ...],
         default: Any = ...) -> Any:
    node: Any = table
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is not ...:
                return default
            raise ProfileError(f"{path}: missing key {dotted!r}; see {FORMAT_DOC}")
        node = node[part]
    if kind is float and isinstance(node, int) and not isinstance(node, bool):
        node = float(node)
    if kind is tuple:
        if not isinstance(node, list):
            raise ProfileError(f"{path}: key {dotted!r} must be an array, got {node!r}")
        return tuple(float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in node)
    if not isinstance(node, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ProfileError(f"{path}: key {dotted!r} must be {name}, got {node!r}")
    return node


def load_profile(path: str | Path | Traversable) -> Profile:
    """Read and check one profile file (a path, or a shipped resource)."""
    if isinstance(path, str):
        path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ProfileError(f"profile {path} does not exist; profiles live in {profile_dir()}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"profile {path} is unreadable: {exc}") from None
    driver = _get(path, data, "profile.driver", str)
    profile = Profile(
        path=path,
        driver=driver,
        name=_get(path, data, "profile.name", str),
        scope=_get(path, data, "profile.scope", str, "wall"),
        manufacturer_pattern=_get(path, data, "identity.manufacturer", str),
        model_pattern=_get(path, data, "identity.model", str),
        setup=tuple(_get(path, data, "commands.setup", tuple)),
        error_query=_get(path, data, "commands.error_query", str),
        update_query=_get(path, data, "commands.update_query", str, ""),
        rate_commands=tuple(_get(path, data, "commands.rate", tuple, ())),
        update_intervals_s=_get(path, data, "update.intervals_s", tuple),
        default_update_s=_get(path, data, "update.default_s", float),
        voltage_ranges_v=_get(path, data, "ranges.voltage_v", tuple),
        current_ranges_a=_get(path, data, "ranges.current_a", tuple),
        overrange_pct=_get(path, data, "ranges.overrange_pct", float, 100.0),
        power_pct_reading=_get(path, data, "accuracy.power_pct_reading", float),
        power_pct_range=_get(path, data, "accuracy.power_pct_range", float),
        extra=dict(data.get(driver, {})),
    )
    for name in ("update_intervals_s", "voltage_ranges_v", "current_ranges_a"):
        values = getattr(profile, name)
        if not values or not all(isinstance(v, float) and v > 0 for v in values):
            raise ProfileError(f"{path}: {name} must be a non-empty array of positive numbers")
    for pattern in (profile.manufacturer_pattern, profile.model_pattern):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ProfileError(f"{path}: identity pattern {pattern!r} is not a regex: {exc}") from None
    return profile


def load_profiles(driver: str, directory: Path | Traversable | None = None) -> list[Profile]:
    """Every profile in ``directory`` (default :func:`profile_dir`) for ``driver``."""
    directory = directory or profile_dir()
    if not directory.is_dir():
        raise ProfileError(f"profile directory {directory} is missing (an incomplete install of "
                           "hwval: reinstall it); or pass profile=PATH")
    found = sorted((f for f in directory.iterdir() if f.name.endswith(".toml")), key=lambda f: f.name)
    profiles = [p for p in (load_profile(f) for f in found) if p.driver == driver]
    if not profiles:
        raise ProfileError(f"no profile for driver {driver!r} in {directory}; pass profile=PATH")
    return profiles


def select_profile(driver: str, identity: Identity, override: str | None = None) -> Profile:
    """The profile for the instrument that answered ``identity``.

    With ``override`` the named file is used and must still match the identity (a WT310 profile
    driving an HMC8015 would send commands the instrument does not know).
    """
    candidates = [load_profile(override)] if override else load_profiles(driver)
    for profile in candidates:
        if profile.driver != driver:
            raise ProfileError(f"profile {profile.path} is for driver {profile.driver!r}, not {driver!r}")
        if profile.matches(identity):
            return profile
    known = "; ".join(f"{p.path.name}: {p.manufacturer_pattern} {p.model_pattern}" for p in candidates)
    raise ProfileError(f"no {driver} profile matches the instrument that answered *IDN? "
                       f"{identity.raw!r} (profiles: {known})")
