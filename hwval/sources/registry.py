"""Driver registry: driver name -> factory, imported lazily so a missing optional dependency of
one driver (pynvml, pyvisa) never breaks the others.

There is no module-level mutable state: :data:`BUILTIN_DRIVERS` is a read-only table and
:class:`Registry` instances are values. Tests build their own ``Registry({...})`` to add drivers.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import Mapping

from hwval.sources.base import Source, SourceFactory, SourceSpec

#: The driver names of the design contract, plus ``synthetic`` (a software source with a known
#: power profile, used for dry runs, tests and overhead benchmarks; a read costs tens of us, see
#: benchmarks/software_read_cost.py).
BUILTIN_DRIVERS: Mapping[str, str] = MappingProxyType(
    {
        "tasmota": "hwval.sources.serial.tasmota:create",
        "esphome": "hwval.sources.serial.esphome:create",
        "pzem004t": "hwval.sources.serial.pzem004t:create",
        "cse7766": "hwval.sources.serial.cse7766:create",
        "wattsup": "hwval.sources.serial.wattsup:create",
        "wt300": "hwval.sources.visa.wt300:create",
        "hmc8015": "hwval.sources.visa.hmc8015:create",
        "n6705": "hwval.sources.visa.n6705:create",
        "nvml": "hwval.sources.nvml.source:create",
        "rapl": "hwval.sources.rapl.source:create",
        "synthetic": "hwval.sources.synthetic:create",
    }
)


class UnknownDriver(ValueError):
    pass


class Registry:
    """Maps driver names to factories given as callables or ``"module:attribute"`` strings."""

    def __init__(self, drivers: Mapping[str, str | SourceFactory] = BUILTIN_DRIVERS) -> None:
        self._drivers = dict(drivers)

    def names(self) -> list[str]:
        return sorted(self._drivers)

    def __contains__(self, name: object) -> bool:
        return name in self._drivers

    def with_driver(self, name: str, factory: str | SourceFactory) -> "Registry":
        """A new registry with one more (or a replaced) driver."""
        return Registry({**self._drivers, name: factory})

    def factory(self, name: str) -> SourceFactory:
        try:
            target = self._drivers[name]
        except KeyError:
            raise UnknownDriver(
                f"unknown driver {name!r} (known: {', '.join(self.names())})"
            ) from None
        if callable(target):
            return target
        module_name, _, attr = target.partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, attr)

    def create(self, spec: SourceSpec) -> Source:
        return self.factory(spec.driver)(spec)
