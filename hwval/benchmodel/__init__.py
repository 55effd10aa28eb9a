"""The bench model: a true power profile and how each meter sees it.

It sits below both ``sources`` (the synthetic and simulated sources read it) and ``emulators``
(every protocol server takes its power from it), so neither imports the other.
"""

from hwval.benchmodel.model import NAMED_PROFILES, NOMINAL_VOLTAGE_V, Bench, MeterModel, PowerProfile

__all__ = ["NAMED_PROFILES", "NOMINAL_VOLTAGE_V", "Bench", "MeterModel", "PowerProfile"]
