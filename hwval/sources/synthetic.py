"""``synthetic``: a software source that reports a known power profile at no cost.

It reads the emulated bench's true power (optionally through a meter model) at each deadline.
It exists for dry runs of a configuration, for tests of the capture pipeline and for measuring
the recorder's own overhead (its ``read`` costs a few microseconds).

Spec: ``synthetic:PROFILE?period_s=0.01&window_s=0&quantum_w=0&noise_w=0&seed=1&streams=1&t0_ns=N``
where PROFILE is any ``--profile`` of the emulators (``idle-load``, ``constant:100``...).
``streams=N`` publishes N identical streams (``<name>``, ``<name>_1``...), to load the recorder.
``t0_ns`` pins bench time zero (default: when the source opens).
"""

from __future__ import annotations

from typing import Any, Mapping

from hwval.clock import now_ns
from hwval.benchmodel import Bench, MeterModel, PowerProfile
from hwval.sources.base import Key, SourceContext, SourceSpec, StreamInfo
from hwval.sources.options import DriverOptions, Option

OPTIONS = DriverOptions("synthetic", "a software source reporting a known bench power profile",
                        "PROFILE (idle-load, constant:100, ... as the emulators' --profile)", (
    Option("window_s", float, 0.0, "meter model: mean over this window (0: instant)", "s", ge=0),
    Option("quantum_w", float, 0.0, "meter model: round power to this step (0: none)", "W", ge=0),
    Option("noise_w", float, 0.0, "meter model: Gaussian noise of this sigma", "W", ge=0),
    Option("seed", int, None, "noise seed (unset: a fresh one)"),
    Option("streams", int, 1, "publish N identical streams (to load the recorder)", ge=1),
    Option("t0_ns", int, None, "monotonic ns of bench time zero", "ns",
           default_text="when the source opens"),
    Option("energy", bool, True, "also publish the exact true energy_j"),
))


class SyntheticSource:
    mode = "polled"

    def __init__(self, spec: SourceSpec, options: Mapping[str, Any] | None = None) -> None:
        opts = OPTIONS.parse(spec) if options is None else options
        self.profile = PowerProfile.parse(spec.resource or "idle-load")
        self.model = MeterModel(window_s=opts["window_s"], quantum_w=opts["quantum_w"],
                                noise_w=opts["noise_w"])
        self.seed = opts["seed"]
        self.t0_ns = opts["t0_ns"]
        self.with_energy = opts["energy"]
        n = opts["streams"]
        self.names = [spec.name] + [f"{spec.name}_{i}" for i in range(1, n)]
        self.period_s = spec.period_s or 0.1
        self.spec = spec
        self.bench: Bench | None = None
        self._first_ns = 0

    def open(self, ctx: SourceContext) -> list[StreamInfo]:
        self.bench = Bench(self.profile, t0_ns=self.t0_ns or now_ns(), seed=self.seed)
        self._first_ns = 0
        semantics = "window_mean" if self.model.window_s else "instant"
        keys = [Key("power_w", "W", semantics, self.model.window_s,
                    "bench power seen through the configured meter model")]
        if self.with_energy:
            keys.append(Key("energy_j", "J", "counter", None, "exact true energy since first read"))
        return [
            StreamInfo(name=name, kind="software", driver="synthetic", resource=self.spec.resource,
                       scope="wall", period_s=self.period_s, keys=tuple(keys),
                       identity={"profile": self.spec.resource, "t0_monotonic_ns": self.bench.t0_ns},
                       emulated=True)
            for name in self.names
        ]

    def read(self) -> Mapping[str, Mapping[str, float]]:
        assert self.bench is not None
        t = now_ns()
        if not self._first_ns:
            self._first_ns = t
        values = {"power_w": self.bench.read(self.model, t)}
        if self.with_energy:
            values["energy_j"] = self.bench.true_energy_j(self._first_ns, t)
        return {name: values for name in self.names}

    def close(self) -> None:
        self.bench = None


def create(spec: SourceSpec) -> SyntheticSource:
    return SyntheticSource(spec, OPTIONS.parse(spec))
