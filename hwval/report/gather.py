"""Everything a report shows, read from one run (and computed in memory where the run lacks it).

Order of the pipeline, as ``hwval sync`` / ``hwval analyze`` / ``hwval analyze --epochs`` run
it: ``/sync`` first (the analysis is lag-corrected with it), then the comparisons, then the
energy per epoch. A stage the run already holds is read as stored; a missing one is computed
with default options on a :class:`~hwval.report.overlay.DerivedOverlay`, so the file is only
written when the caller opened it read-write and asks to save.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwval import __version__
from hwval.runfile.info import summarize
from hwval.runfile.reader import DerivedEntry
from hwval.runfile.schema import EventName

#: /analysis entries that are not candidate-vs-reference comparisons.
OTHER_PREFIXES = ("validation__", "calibration__", "epochs__")


@dataclass
class PhaseRow:
    name: str
    kind: str
    start_s: float
    stop_s: float
    attrs: dict[str, Any]


@dataclass
class ComparisonView:
    """One ``/analysis/<candidate>__vs__<reference>`` entry, as stored."""

    entry: str
    attrs: dict[str, Any]
    t_s: np.ndarray
    ref_w: np.ndarray
    cand_w: np.ndarray
    phases: list[PhaseRow]

    @property
    def candidate(self) -> str:
        return str(self.attrs.get("candidate", self.entry.split("__vs__")[0]))

    @property
    def reference(self) -> str:
        return str(self.attrs.get("reference", self.entry.split("__vs__")[-1]))


@dataclass
class ReportData:
    run_path: str
    summary: dict[str, Any]
    attrs: dict[str, Any]
    emulated: list[str]
    sync: dict[str, dict[str, Any]]
    comparisons: list[ComparisonView]
    calibrations: list[dict[str, Any]]
    verdicts: list[dict[str, Any]]
    epochs: dict[str, Any] | None
    marks: list[dict[str, Any]]
    gaps: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    identities: dict[str, Any] = field(default_factory=dict)
    computed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    version: str = __version__

    @property
    def reference(self) -> str:
        return self.comparisons[0].reference if self.comparisons else ""


def is_comparison(name: str) -> bool:
    return "__vs__" in name and not name.startswith(OTHER_PREFIXES)


def _json(value: Any, default: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value or "null") if value else default
        except ValueError:
            return default
    return default if value is None else value


def ensure_sync(run, data_notes: list[str], computed: list[str]) -> None:
    """``/sync`` as stored, or synchronised now (pulses when the run has them, else relative)."""
    from hwval.sync.store import write_sync
    from hwval.sync.synchronise import SyncInputError, synchronise

    if any("lag_s" in e.attrs for e in run.read_derived("sync").values()):
        return
    try:
        write_sync(run, synchronise(run))
        computed.append("sync")
    except SyncInputError as exc:
        data_notes.append(f"not synchronised ({exc}); the comparisons use raw receipt stamps")


def ensure_analysis(run, data_notes: list[str], computed: list[str]) -> None:
    from hwval.analysis import compare

    if any(is_comparison(n) for n in run.read_derived("analysis")):
        return
    try:
        compare.write(run, compare.analyze(run))
        computed.append("analysis")
    except compare.AnalysisInputError as exc:
        data_notes.append(f"no comparison: {exc}")


def ensure_epochs(run, reference: str, data_notes: list[str], computed: list[str]) -> None:
    from hwval.analysis import epochs
    from hwval.analysis.compare import AnalysisInputError

    if not reference or any(n.startswith(epochs.ENTRY_PREFIX) for n in run.read_derived("analysis")):
        return
    if not any(e.name == EventName.MARK for e in run.events):
        return                      # no workload marks: nothing per epoch to show
    try:
        epochs.write(run, epochs.epoch_energy(run, reference=reference))
        computed.append("epochs")
    except AnalysisInputError as exc:
        data_notes.append(f"no per-epoch energy: {exc}")


def _phases(entry: DerivedEntry) -> list[PhaseRow]:
    order = _json(entry.attrs.get("phases"), [])
    rows = []
    for name in order or sorted(entry.children):
        child = entry.children.get(name)
        if child is None:
            continue
        a = child.attrs
        rows.append(PhaseRow(name, str(a.get("phase_kind", "")), float(a.get("phase_start_s", math.nan)),
                             float(a.get("phase_stop_s", math.nan)), a))
    return rows


def _epochs_view(entry: DerivedEntry) -> dict[str, Any]:
    a = entry.attrs
    names = _json(a.get("intervals"), [])
    kinds = _json(a.get("kinds"), [])
    streams = _json(a.get("streams"), [])
    rows = []
    for i, name in enumerate(names):
        cells = {}
        for s in streams:
            child = entry.children.get(s)
            if child is None:
                continue
            e = child.datasets.get("energy_j")
            err = child.datasets.get("error_pct")
            cells[s] = {"energy_j": float(e[i]) if e is not None else math.nan,
                        "error_pct": float(err[i]) if err is not None else math.nan}
        rows.append({"name": str(name), "kind": str(kinds[i]) if i < len(kinds) else "",
                     "start_s": float(entry.datasets["start_s"][i]), "stop_s": float(entry.datasets["stop_s"][i]),
                     "cells": cells})
    return {"reference": str(a.get("reference", "")), "streams": [str(s) for s in streams], "rows": rows,
            "notes": _json(a.get("notes"), [])}


def _event_rows(events, names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"t": e.t, "name": e.name, "stream": e.stream, "detail": e.detail} for e in events if e.name in names]


def gather(run, *, computed: list[str] | None = None) -> ReportData:
    """Read (and where missing compute) everything the report shows. ``run`` is a RunFile or an
    overlay over one; the stages write through its ``replace_derived``."""
    notes: list[str] = []
    computed = [] if computed is None else computed
    ensure_sync(run, notes, computed)
    ensure_analysis(run, notes, computed)
    analysis = run.read_derived("analysis")
    comparisons = []
    for name, entry in analysis.items():
        if not is_comparison(name):
            continue
        comparisons.append(ComparisonView(name, entry.attrs, np.asarray(entry.datasets.get("t", [])),
                                          np.asarray(entry.datasets.get("ref_w", [])),
                                          np.asarray(entry.datasets.get("cand_w", [])), _phases(entry)))
    # software streams first in their own order, software_total after them, calibrated last
    comparisons.sort(key=lambda c: (c.candidate.endswith("_calibrated"), c.candidate == "software_total",
                                    c.candidate))
    reference = comparisons[0].reference if comparisons else ""
    ensure_epochs(run, reference, notes, computed)
    analysis = run.read_derived("analysis")
    epochs_entry = next((e for n, e in analysis.items() if n == f"epochs__{reference}"), None)
    summary = summarize(run)
    events = run.events
    errors = _event_rows(events, (EventName.ERROR,))
    gaps = _event_rows(events, (EventName.GAP_START, EventName.GAP_END, EventName.RECONNECT))
    marks = [{"t": e.t, "mark": str(e.detail.get("mark", "")), "detail": e.detail}
             for e in events if e.name == EventName.MARK and not e.stream]
    return ReportData(
        run_path=str(run.path), summary=summary, attrs=dict(run.attrs),
        emulated=[s["name"] for s in summary["streams"] if s["emulated"]],
        sync={n: dict(e.attrs) for n, e in run.read_derived("sync").items()},
        comparisons=comparisons,
        calibrations=[dict(e.attrs) for n, e in analysis.items() if n.startswith("calibration__")],
        verdicts=[{"entry": n, **e.attrs, "checks": _json(e.attrs.get("checks"), []),
                   "reasons": _json(e.attrs.get("reasons"), []), "notes": _json(e.attrs.get("notes"), [])}
                  for n, e in analysis.items() if n.startswith("validation__")],
        epochs=_epochs_view(epochs_entry) if epochs_entry is not None else None,
        marks=marks, gaps=gaps, errors=errors,
        identities={n: _json(run.stream_reader(n).attrs.get("identity"), {}) for n in run.stream_names},
        computed=computed, notes=notes)
