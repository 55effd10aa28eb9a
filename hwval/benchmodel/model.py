"""The emulated bench: a true power profile and models of how each meter sees it.

Every emulator (serial plugs, SCPI analyzers, powercap tree, synthetic source) takes its power
from a :class:`Bench`. Time on the bench is seconds since ``t0_ns`` on the host's
CLOCK_MONOTONIC, which is system-wide on Linux: a test or an operator can compute the true power
and energy for any interval of a capture from the same profile and ``t0_ns``, which emulators
print at start.

A :class:`MeterModel` turns true power into what a meter reports: the mean over its averaging
window, seen ``latency_s`` late, with gain/offset error, Gaussian noise and quantisation.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import numpy as np

NOMINAL_VOLTAGE_V = 230.0

#: Named profiles for ``--profile``; values are ``steps`` specs (watts@seconds, repeating).
NAMED_PROFILES = {
    # idle / load plateaus like a training job's epochs with a data-loading dip
    "idle-load": "60@5,250@5",
    "steps": "60@2,120@2,250@2,180@2",
    # short bursts that 1 Hz meters alias badly (docs/measurement.md#sampling-and-aliasing)
    "bursty": "50@0.3,300@0.2",
    "constant": "100@1",
}


@dataclass(frozen=True)
class PowerProfile:
    """Piecewise-constant true power, repeating, plus an optional sine ripple.

    ``segments`` are ``(power_w, duration_s)``. ``ripple_w`` is the sine amplitude and
    ``ripple_period_s`` its period. Both power and its exact integral are analytic, so truth
    never depends on sampling.
    """

    segments: tuple[tuple[float, float], ...]
    ripple_w: float = 0.0
    ripple_period_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError("a power profile needs at least one segment")
        for power_w, duration_s in self.segments:
            if duration_s <= 0 or power_w < 0:
                raise ValueError(
                    f"profile segment {power_w}@{duration_s}: need power >= 0 W and duration > 0 s"
                )
        if self.ripple_period_s <= 0:
            raise ValueError("ripple period must be > 0 s")

    @property
    def cycle_s(self) -> float:
        return sum(d for _, d in self.segments)

    @property
    def peak_w(self) -> float:
        """The highest true power the profile reaches."""
        return max(p for p, _ in self.segments) + abs(self.ripple_w)

    @property
    def cycle_energy_j(self) -> float:
        return sum(p * d for p, d in self.segments)

    @classmethod
    def parse(cls, text: str) -> "PowerProfile":
        """Parse ``NAME``, ``constant:W``, ``steps:W@S,W@S,...`` optionally followed by
        ``+ripple:AMPLITUDE_W@PERIOD_S`` (e.g. ``idle-load+ripple:5@0.5``)."""
        base, _, ripple = text.partition("+ripple:")
        ripple_w, ripple_period_s = 0.0, 1.0
        try:
            if ripple:
                a, _, p = ripple.partition("@")
                ripple_w, ripple_period_s = float(a), float(p)
            if base in NAMED_PROFILES:
                steps = NAMED_PROFILES[base]
            elif base.startswith("constant:"):
                steps = base.split(":", 1)[1] + "@1"
            elif base.startswith("steps:"):
                steps = base.split(":", 1)[1]
            else:
                raise ValueError
            segments = []
            for item in steps.split(","):
                w, _, s = item.partition("@")
                segments.append((float(w), float(s)))
            return cls(tuple(segments), ripple_w, ripple_period_s)
        except ValueError as exc:
            detail = f": {exc}" if str(exc) else ""
            raise ValueError(
                f"bad power profile {text!r}{detail}; expected one of {', '.join(NAMED_PROFILES)}, "
                "'constant:W' or 'steps:W@S,W@S,...', optionally '+ripple:A@P'"
            ) from None

    def power_w(self, t_s: float | np.ndarray) -> float | np.ndarray:
        """True power at bench time ``t_s`` (scalar or array)."""
        t = np.asarray(t_s, dtype=float)
        phase = np.mod(t, self.cycle_s)
        edges = np.cumsum([d for _, d in self.segments])
        idx = np.searchsorted(edges, phase, side="right")
        idx = np.minimum(idx, len(self.segments) - 1)
        levels = np.array([p for p, _ in self.segments])
        out = levels[idx]
        if self.ripple_w:
            out = out + self.ripple_w * np.sin(2 * math.pi * t / self.ripple_period_s)
        return float(out) if np.ndim(out) == 0 else out

    def energy_to_j(self, t_s: float) -> float:
        """Exact energy from bench time 0 to ``t_s`` (``t_s`` may be negative: the profile
        extends periodically before 0)."""
        cycles = math.floor(t_s / self.cycle_s)
        phase = t_s - cycles * self.cycle_s
        energy = cycles * self.cycle_energy_j
        start = 0.0
        for p, d in self.segments:
            if phase <= start:
                break
            energy += p * min(d, phase - start)
            start += d
        if self.ripple_w:
            w = 2 * math.pi / self.ripple_period_s
            energy += self.ripple_w / w * (1.0 - math.cos(w * t_s))
        return energy

    def energy_j(self, t0_s: float, t1_s: float) -> float:
        """Exact energy over ``[t0_s, t1_s]``."""
        return self.energy_to_j(t1_s) - self.energy_to_j(t0_s)

    def mean_w(self, t0_s: float, t1_s: float) -> float:
        """Mean true power over ``[t0_s, t1_s]``; the instantaneous value for an empty window."""
        if t1_s - t0_s <= 1e-12:
            return float(self.power_w(t1_s))
        return self.energy_j(t0_s, t1_s) / (t1_s - t0_s)


@dataclass(frozen=True)
class MeterModel:
    """How one meter sees true power.

    A reading produced at bench time ``t`` (meter's clock, see ``drift_ppm``) reports
    ``gain * mean(true power over [t - latency_s - window_s, t - latency_s]) + offset_w``
    plus Gaussian noise of standard deviation ``noise_w``, rounded to ``quantum_w``.
    """

    window_s: float = 0.0
    latency_s: float = 0.0
    quantum_w: float = 0.0
    noise_w: float = 0.0
    gain: float = 1.0
    offset_w: float = 0.0
    #: The meter's clock runs fast by this many parts per million (affects when it samples).
    drift_ppm: float = 0.0

    def true_mean_w(self, profile: PowerProfile, t_s: float) -> float:
        """The noiseless, unquantised mean the meter would report at bench time ``t_s``."""
        t_meter = t_s * (1.0 + self.drift_ppm * 1e-6)
        end = t_meter - self.latency_s
        return profile.mean_w(end - self.window_s, end)

    def metered_energy_j(self, profile: PowerProfile, t0_s: float, t1_s: float) -> float:
        """Energy an integrating meter counts over bench ``[t0_s, t1_s]``: the exact true energy
        through the gain, plus the offset over the elapsed time. Noise and quantisation average
        out in an energy counter, so they do not apply; emulators use this for every energy
        register so a meter with a gain error reports energy consistent with its power."""
        return self.gain * profile.energy_j(t0_s, t1_s) + self.offset_w * (t1_s - t0_s)

    def reading_w(self, profile: PowerProfile, t_s: float, rng: random.Random | None = None) -> float:
        value = self.gain * self.true_mean_w(profile, t_s) + self.offset_w
        if self.noise_w and rng is not None:
            value += rng.gauss(0.0, self.noise_w)
        value = max(value, 0.0)
        if self.quantum_w:
            value = round(value / self.quantum_w) * self.quantum_w
        return value


@dataclass
class Bench:
    """A true power profile running on the host's monotonic clock from ``t0_ns``."""

    profile: PowerProfile
    t0_ns: int = field(default_factory=time.monotonic_ns)
    seed: int | None = None
    power_factor: float = 0.95
    voltage_v: float = NOMINAL_VOLTAGE_V

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def t_s(self, t_ns: int | None = None) -> float:
        """Bench seconds at monotonic ``t_ns`` (now by default)."""
        return ((time.monotonic_ns() if t_ns is None else t_ns) - self.t0_ns) / 1e9

    def true_power_w(self, t_ns: int | None = None) -> float:
        return float(self.profile.power_w(self.t_s(t_ns)))

    def true_energy_j(self, t0_ns: int, t1_ns: int) -> float:
        return self.profile.energy_j(self.t_s(t0_ns), self.t_s(t1_ns))

    def read(self, model: MeterModel, t_ns: int | None = None) -> float:
        """What a meter following ``model`` reports now (or at ``t_ns``)."""
        return model.reading_w(self.profile, self.t_s(t_ns), self.rng)

    def current_a(self, power_w: float) -> float:
        return power_w / (self.voltage_v * self.power_factor)
