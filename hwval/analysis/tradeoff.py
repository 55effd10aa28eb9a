"""Accuracy against energy across runs of ``hwval workload train``: what ``hwval analyze
--tradeoff`` prints.

For each run: the architecture and size from its ``train_start`` mark, the final held-out
accuracy from ``train_end`` (``eval_accuracy``; the training accuracy when the run had no
evaluation), and the energy of its ``train`` interval (``train_start`` .. ``train_end``: every
epoch and evaluation, not the idle periods nor the start-up) from the hardware reference and from
every software meter, with the meter's error against the hardware. Then one row per architecture
(means over its runs) and the emissions of each run at each location (:mod:`hwval.analysis.carbon`):
CO2 is proportional to energy, so a software meter's CO2 is off by the same % as its energy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hwval.analysis.carbon import Intensity, emissions_g
from hwval.analysis.compare import AnalysisInputError
from hwval.analysis.epochs import epoch_energy
from hwval.runfile.schema import EventName

#: The interval whose energy is compared across runs.
WINDOW = "train"


@dataclass
class RunPoint:
    path: str
    label: str
    run_id: str
    arch: str
    width: Any
    depth: Any
    params: float
    macs: float
    epochs: int
    train_samples: int
    accuracy: float
    accuracy_kind: str          # "eval" | "train"
    duration_s: float
    reference: str
    energy_j: dict[str, float]  # reference first, then the software meters
    synchronised: bool
    notes: list[str] = field(default_factory=list)

    @property
    def hardware_j(self) -> float:
        return self.energy_j[self.reference]

    @property
    def meters(self) -> list[str]:
        return [s for s in self.energy_j if s != self.reference]

    def error_pct(self, meter: str) -> float:
        ref = self.hardware_j
        return 100.0 * (self.energy_j[meter] - ref) / ref if ref else math.nan


def _mark(events, name: str) -> dict[str, Any] | None:
    found = [e.detail for e in events if e.name == EventName.MARK and e.detail.get("mark") == name]
    return found[-1] if found else None


def run_point(run, *, reference: str | None = None, label: str | None = None) -> RunPoint:
    """One run's architecture, final accuracy and training energy per stream."""
    events = run.events
    start, end = _mark(events, "train_start"), _mark(events, "train_end")
    if start is None or end is None:
        raise AnalysisInputError(f"{run.path}: no train_start/train_end marks: --tradeoff needs runs of "
                                 "`hwval workload train` that finished")
    res = epoch_energy(run, reference=reference)
    i = res.find(WINDOW)
    if i is None:
        raise AnalysisInputError(f"{run.path}: the train interval has no duration")
    iv = res.intervals[i]
    acc = end.get("eval_accuracy")
    kind = "eval"
    if not isinstance(acc, (int, float)):
        acc, kind = end.get("accuracy"), "train"
    notes = list(res.notes)
    energy = {s: float(res.energy_j[s][i]) for s in res.streams}
    return RunPoint(str(run.path), label or Path(str(run.path)).stem, res.run_id, str(start.get("arch", "?")),
                    start.get("width"), start.get("depth"), float(start.get("params", math.nan)),
                    float(start.get("macs", math.nan)), int(end.get("epochs", start.get("epochs", 0)) or 0),
                    int(end.get("samples", 0) or 0), float(acc) if acc is not None else math.nan, kind,
                    iv.duration_s, res.reference, energy, all(res.synchronised.values()), notes)


@dataclass
class ArchRow:
    arch: str
    runs: int
    accuracy: float
    hardware_j: float
    j_per_sample: float
    meter_j: dict[str, float]
    meter_error_pct: dict[str, float]


def by_arch(points: Sequence[RunPoint]) -> list[ArchRow]:
    """Means over each architecture's runs (meters: over the runs that have them)."""
    rows = []
    for arch in sorted({p.arch for p in points}):
        group = [p for p in points if p.arch == arch]
        meters = sorted({m for p in group for m in p.meters})
        hw = float(np.mean([p.hardware_j for p in group]))
        samples = [p.hardware_j / p.train_samples for p in group if p.train_samples]
        meter_j = {m: float(np.mean([p.energy_j[m] for p in group if m in p.energy_j])) for m in meters}
        meter_err = {m: float(np.mean([p.error_pct(m) for p in group if m in p.energy_j])) for m in meters}
        rows.append(ArchRow(arch, len(group), float(np.mean([p.accuracy for p in group])), hw,
                            float(np.mean(samples)) if samples else math.nan, meter_j, meter_err))
    return rows


@dataclass
class CarbonRow:
    label: str
    location: str
    g_per_kwh: float
    source: str
    year: int | None
    hardware_g: float
    meter_g: dict[str, float]


def carbon_rows(points: Sequence[RunPoint], intensities: Sequence[Intensity]) -> list[CarbonRow]:
    return [CarbonRow(p.label, it.location, it.g_per_kwh, it.source, it.year, emissions_g(p.hardware_j, it.g_per_kwh),
                      {m: emissions_g(p.energy_j[m], it.g_per_kwh) for m in p.meters})
            for p in points for it in intensities]


def _f(x, fmt: str) -> str:
    return "-" if x is None or not isinstance(x, (int, float)) or not math.isfinite(x) else format(x, fmt)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(c) for c in col) for col in zip(header, *rows)]
    fmt = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return [fmt(header), "-" * len(fmt(header)), *map(fmt, rows)]


def format_tradeoff(points: Sequence[RunPoint], carbon: Sequence[CarbonRow] = ()) -> str:
    meters = sorted({m for p in points for m in p.meters})
    refs = sorted({p.reference for p in points})
    lines = [f"accuracy vs energy of the train interval (train_start..train_end); hardware reference: "
             f"{', '.join(refs)}; meter error = (meter - hardware) / hardware", ""]
    header = ["run", "arch", "params", "MACs", "epochs", "accuracy", "train s", "hardware J"]
    for m in meters:
        header += [f"{m} J", "err %"]
    rows = []
    for p in points:
        row = [p.label, p.arch, f"{p.params:,.0f}", f"{p.macs / 1e6:.2f} M", str(p.epochs),
               _f(p.accuracy, ".3f") + ("" if p.accuracy_kind == "eval" else " (train)"), _f(p.duration_s, ".1f"),
               _f(p.hardware_j, ".1f")]
        for m in meters:
            row += [_f(p.energy_j.get(m), ".1f"), _f(p.error_pct(m) if m in p.energy_j else None, "+.1f")]
        rows.append(row)
    lines += _table(header, rows)
    header = ["arch", "runs", "mean accuracy", "hardware J", "hardware mJ/sample"]
    for m in meters:
        header += [f"{m} J", "err %"]
    rows = []
    for a in by_arch(points):
        row = [a.arch, str(a.runs), _f(a.accuracy, ".3f"), _f(a.hardware_j, ".1f"), _f(a.j_per_sample * 1e3, ".2f")]
        for m in meters:
            row += [_f(a.meter_j.get(m), ".1f"), _f(a.meter_error_pct.get(m), "+.1f")]
        rows.append(row)
    lines += ["", "per architecture (means over its runs):", *_table(header, rows)]
    if carbon:
        header = ["run", "location", "gCO2e/kWh", "hardware gCO2e"] + [f"{m} gCO2e" for m in meters]
        rows = [[c.label, c.location, f"{c.g_per_kwh:g}", _f(c.hardware_g, ".4f")]
                + [_f(c.meter_g.get(m), ".4f") for m in meters] for c in carbon]
        lines += ["", "emissions (CO2 = energy x intensity: a meter's CO2 error equals its energy error):",
                  *_table(header, rows)]
        sources = sorted({(c.location, c.g_per_kwh, c.source, c.year) for c in carbon}, key=str)
        lines += [f"  {loc}: {g:g} gCO2e/kWh ({src}{'' if year is None else f', {year}'})" for loc, g, src, year in sources]
    for p in points:
        if not p.synchronised:
            lines.append(f"note: {p.label}: not synchronised (raw receipt timestamps; run `hwval sync` first)")
    return "\n".join(lines)


def to_json(points: Sequence[RunPoint], carbon: Sequence[CarbonRow] = ()) -> dict[str, Any]:
    from dataclasses import asdict

    from hwval.analysis.output import plain

    runs = []
    for p in points:
        d = asdict(p)
        d["hardware_j"] = p.hardware_j
        d["error_pct"] = {m: p.error_pct(m) for m in p.meters}
        runs.append(d)
    return plain({"window": WINDOW, "runs": runs, "by_arch": [asdict(a) for a in by_arch(points)],
                  "emissions": [asdict(c) for c in carbon]})
