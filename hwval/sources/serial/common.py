"""Small pieces every serial device loop needs: checking timing options, and a meter's energy
counter made relative and reset-proof. (Whether a port is an emulator's:
:mod:`hwval.sources.serial.emulator_identity`.)"""

from __future__ import annotations


def require_positive(driver: str, **values: float | None) -> None:
    """Refuse a timing or scale option that is not > 0 (``None``: left to the driver's default).

    A zero or negative timeout, period or gain would not fail loudly later: the device loop
    would spin on instant timeouts or report every reading as a gap. So the spec is refused
    at once, naming the driver and the option.
    """
    for name, value in values.items():
        if value is not None and not value > 0:
            raise ValueError(f"{driver}: option {name!r} must be > 0, got {value}")


class RelativeEnergy:
    """Turns a meter's cumulative energy reading into ``energy_j``: 0 at the first reading,
    never decreasing across a counter reset (plug reboot, ``EnergyReset``) or a reconnect.

    ``update(total_j)`` returns ``(energy_j, was_reset)``; a decrease is taken as a reset: the
    energy accumulated so far is kept and counting resumes from the new value.
    """

    def __init__(self) -> None:
        self._last_j: float | None = None
        self.energy_j = 0.0
        self.resets = 0

    def update(self, total_j: float) -> tuple[float, bool]:
        reset = False
        if self._last_j is not None:
            delta = total_j - self._last_j
            if delta >= 0:
                self.energy_j += delta
            else:
                reset = True
                self.resets += 1
        self._last_j = total_j
        return self.energy_j, reset
