"""Driver options as data: each driver declares its options once, as :class:`Option` rows in a
:class:`DriverOptions`, and one validator (:meth:`DriverOptions.parse`) turns a spec's raw
options into the typed, checked, defaulted dict the driver's constructor gets.

The same declarations feed ``hwval drivers`` (text and ``--json``) and the README's
driver-options table, so the help, the table and the checks cannot drift apart::

    python -m hwval.sources.options --markdown   # the README table, between its markers

Checks that relate two options (``ranging=fixed`` needs both ranges) stay in the driver: a row
describes one option.
"""

from __future__ import annotations

import argparse
import importlib
import math
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

from hwval.sources.base import SourceSpec

#: The types a spec value can have (see :func:`hwval.config.parse_value`) and how they read.
TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str"}
#: The README section generated from the declarations sits between these two lines.
README_BEGIN = "<!-- driver-options:begin (generated: python -m hwval.sources.options --markdown) -->"
README_END = "<!-- driver-options:end -->"


class OptionError(ValueError):
    """A spec's option is unknown, of the wrong type or out of range; one line for the operator."""


@dataclass(frozen=True)
class Option:
    """One option of one driver.

    ``default`` is what the driver uses when the option is absent; ``None`` with
    ``default_text`` for a default computed from something else (the period, the instrument's
    profile). ``gt``/``ge``/``le`` bound numbers; ``choices`` lists the accepted words (compared
    without case or spaces, so ``command=Status 10`` is ``status10``).
    """

    name: str
    type: type
    default: Any
    help: str
    unit: str = ""
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()
    default_text: str = ""

    def __post_init__(self) -> None:
        if self.type not in TYPE_NAMES:
            raise TypeError(f"option {self.name!r}: type must be one of bool, int, float, str")

    def expected(self) -> str:
        """What a value must be, in words (used by errors and by the table)."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        bounds = []
        if self.gt is not None:
            bounds.append(f"> {self.gt:g}")
        if self.ge is not None:
            bounds.append(f">= {self.ge:g}")
        if self.le is not None:
            bounds.append(f"<= {self.le:g}")
        kind = {bool: "true or false", int: "a whole number", float: "a number",
                str: "text"}[self.type]
        unit = f" {self.unit}" if self.unit else ""
        return kind + (" " + " and ".join(bounds) + unit if bounds else unit)

    def default_words(self) -> str:
        if self.default_text:
            return self.default_text
        if self.default is None:
            return "unset"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)

    def check(self, value: Any) -> Any:
        """The value converted to the option's type, or ``ValueError`` saying what is expected."""
        value = self._typed(value)
        if self.choices:
            folded = _fold(value)
            for choice in self.choices:
                if _fold(choice) == folded:
                    return choice
            raise ValueError(self.expected())
        if self.type in (int, float):
            # inf and nan pass no sensible bound (an endless timeout, a NaN gain): refused
            ok = math.isfinite(value) and ((self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
                  and (self.le is None or value <= self.le))
            if not ok:
                raise ValueError(self.expected())
        return value

    def _typed(self, value: Any) -> Any:
        want = self.type
        if isinstance(value, bool):
            if want is bool:
                return value
            raise ValueError(self.expected())
        if want is float and isinstance(value, (int, float)):
            return float(value)
        if want is int and isinstance(value, int):
            return value
        if want is str and isinstance(value, (str, int, float)):
            # ``element=1`` or a sensor named ``2`` arrive as numbers from a -m spec
            return str(value)
        if isinstance(value, want):
            return value
        raise ValueError(self.expected())

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": TYPE_NAMES[self.type],
                               "default": self.default, "help": self.help}
        if self.default_text:
            out["default_text"] = self.default_text
        for key in ("unit", "gt", "ge", "le"):
            if getattr(self, key) not in (None, ""):
                out[key] = getattr(self, key)
        if self.choices:
            out["choices"] = list(self.choices)
        return out


def _fold(value: Any) -> str:
    return str(value).lower().replace(" ", "")


def spec_place(spec: SourceSpec) -> str:
    """Where a meter was written, naming it once.

    A ``-m`` spec is quoted whole: its text already holds the driver and any ``name=``, so
    nothing is added (``-m 'wt300:...?update_s=abc'``). A TOML table gets the file, the table
    and the meter's name, with the driver only when the name differs
    (``lab.toml: meters[0] (meter 'plug', tasmota)``). A spec built in code names its driver,
    as the drivers' own checks do (``tasmota: option 'period_s' must be > 0``).
    """
    origin = getattr(spec, "origin", "")
    if not origin:
        return spec.driver
    if origin.startswith("-m "):
        return origin
    if spec.name in ("", spec.driver):
        return f"{origin} (meter {spec.driver!r})"
    return f"{origin} (meter {spec.name!r}, {spec.driver})"


def located(spec: SourceSpec, error: Exception) -> str:
    """A driver's error about its spec as one line placed like the option errors: an
    :class:`OptionError` is already placed; a driver's own check (``ranging=fixed`` needs both
    ranges) says ``<driver>: ...``, and that prefix is replaced by :func:`spec_place`, which
    names the driver already."""
    message = str(error)
    if isinstance(error, OptionError):
        return message
    prefix = f"{spec.driver}: "
    if message.startswith(prefix):
        message = message[len(prefix):]
    return f"{spec_place(spec)}: {message}"


@dataclass(frozen=True)
class DriverOptions:
    """A driver's declared options, with a one-line summary of the driver and its resource form."""

    driver: str
    summary: str
    resource: str
    options: tuple[Option, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [o.name for o in self.options]
        if len(names) != len(set(names)):
            raise ValueError(f"{self.driver}: an option is declared twice in {names}")

    def names(self) -> list[str]:
        return [o.name for o in self.options]

    def get(self, name: str) -> Option:
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(name)

    def parse(self, spec: SourceSpec) -> dict[str, Any]:
        """``spec.options`` checked against the declarations, every declared option present
        (its default where the spec has none). Raises :class:`OptionError`: one line naming
        where the meter was written (see :func:`spec_place`), the option and what is accepted."""
        known = {o.name: o for o in self.options}
        out = {o.name: o.default for o in self.options}
        for key, value in spec.options.items():
            option = known.get(key)
            if option is None:
                accepted = ", ".join(sorted(known)) or "none"
                raise OptionError(f"{spec_place(spec)}: unknown option {key!r} (accepted: {accepted})")
            try:
                out[key] = option.check(value)
            except ValueError as exc:
                raise OptionError(f"{spec_place(spec)}: option {key!r} must be {exc}, "
                                  f"got {value!r}") from None
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"driver": self.driver, "summary": self.summary, "resource": self.resource,
                "options": [o.as_dict() for o in self.options]}

    def help_text(self) -> str:
        """The driver's help: summary, resource form and one line per option."""
        lines = [f"{self.driver}: {self.summary}", f"  resource: {self.resource}"]
        if not self.options:
            lines.append("  options: none")
        for o in self.options:
            lines.append(f"  {o.name} ({o.expected()}; default {o.default_words()}): {o.help}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- every driver

def driver_options(driver: str) -> DriverOptions:
    """The declarations of a built-in driver (imports its module: may raise ImportError)."""
    from hwval.sources.registry import BUILTIN_DRIVERS

    module_name = BUILTIN_DRIVERS[driver].partition(":")[0]
    declared = getattr(importlib.import_module(module_name), "OPTIONS", None)
    if not isinstance(declared, DriverOptions):
        raise TypeError(f"{module_name}.OPTIONS must be a DriverOptions")
    return declared


def all_driver_options() -> list[DriverOptions]:
    from hwval.sources.registry import BUILTIN_DRIVERS

    return [driver_options(name) for name in BUILTIN_DRIVERS]


def markdown_table(drivers: Sequence[DriverOptions]) -> str:
    """The README's driver-options section (without the markers)."""
    lines = ["| driver | reads | resource |", "|---|---|---|"]
    lines += [f"| `{d.driver}` | {_cell(d.summary)} | {_cell(d.resource)} |" for d in drivers]
    lines += ["", "| driver | option | accepts | default | what it does |", "|---|---|---|---|---|"]
    for d in drivers:
        if not d.options:
            lines.append(f"| `{d.driver}` | — | — | — | no options |")
        for o in d.options:
            lines.append(f"| `{d.driver}` | `{o.name}` | {_cell(o.expected())} | "
                         f"{_cell(o.default_words())} | {_cell(o.help)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def readme_section(readme_text: str) -> str:
    """The text between the README's markers (raises ``ValueError`` when they are missing)."""
    begin = readme_text.find(README_BEGIN)
    end = readme_text.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError("README has no driver-options markers")
    return readme_text[begin + len(README_BEGIN):end].lstrip("\n")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hwval.sources.options",
                                 description="print the built-in drivers' declared options")
    ap.add_argument("--markdown", action="store_true", help="the README table")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    drivers = all_driver_options()
    if args.markdown:
        sys.stdout.write(markdown_table(drivers))
    elif args.json:
        json.dump([d.as_dict() for d in drivers], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n\n".join(d.help_text() for d in drivers) + "\n")
    return 0


if __name__ == "__main__":
    # run as a script this file is ``__main__``: the drivers' rows are the package module's classes
    from hwval.sources.options import main as package_main

    raise SystemExit(package_main())

