"""What ``hwval analyze`` prints: the table for people and the JSON for machines."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hwval.analysis.compare import NOT_SYNCHRONISED, SOFTWARE_TOTAL, Analysis


def plain(x: Any) -> Any:
    """``x`` with NumPy scalars as Python numbers, tuples as lists and NaN/inf as None (JSON)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return plain(x.item())
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    return x


def _emulated(members: list[str], emulated: dict[str, bool]) -> bool:
    """A candidate is emulated when any stream summed into it is."""
    return any(emulated.get(m, False) for m in members)


def to_json(analysis: Analysis, emulated: dict[str, bool] | None = None) -> dict[str, Any]:
    """Everything printed, for machines (NaN as null); ``emulated``: stream -> bool."""
    emulated = emulated or {}
    comps = {}
    for c in analysis.comparisons:
        phases = {name: {**plain(res.attrs()), **plain(ph.attrs())} for name, (ph, res) in c.phases.items()}
        comps[c.name] = {**plain(c.main.attrs()), **plain(c.attrs), "phases": phases,
                         "emulated": _emulated(c.members, emulated),
                         "reference_emulated": emulated.get(c.reference, False)}
    return {"run": analysis.run_path, "reference": analysis.reference,
            "reference_emulated": emulated.get(analysis.reference, False), "bin_s": analysis.bin_s,
            "window_s": list(analysis.window), "window_how": analysis.window_how,
            "synchronised": analysis.synchronised, "notes": analysis.notes,
            "calibrations_applied": {s: plain(r.derived_attrs()) for s, r in analysis.calibrations.items()},
            "comparisons": comps}


def _f(x: float, fmt: str) -> str:
    return "-" if x is None or not np.isfinite(x) else format(x, fmt)


def _ci(pair: list[float], fmt: str) -> str:
    if pair is None or not all(np.isfinite(pair)):
        return ""
    return f" [{format(pair[0], fmt)}, {format(pair[1], fmt)}]"


def format_table(analysis: Analysis, emulated: dict[str, bool] | None = None) -> str:
    """The table; ``emulated`` (stream -> bool) marks the emulated streams and adds a note."""
    from hwval.sources.emulated import emulated_note

    emulated = emulated or {}
    ref_mark = " (emulated)" if emulated.get(analysis.reference) else ""
    lines = [f"reference: {analysis.reference}{ref_mark}   window: {analysis.window_how} "
             f"({analysis.window[1] - analysis.window[0]:.1f} s)   bins: {analysis.bin_s:g} s"]
    if analysis.all_synchronised:
        lines.append("synchronised: every stream lag-corrected from /sync")
    else:
        unsynced = [s for s, ok in analysis.synchronised.items() if not ok]
        lines.append(f"NOT SYNCHRONISED ({', '.join(unsynced)}): {NOT_SYNCHRONISED.split(': ', 1)[1]}")
    used = [analysis.reference] + [m for c in analysis.comparisons for m in c.members]
    note = emulated_note(n for n in dict.fromkeys(used) if emulated.get(n))
    if note:
        lines.append(note)
    for rec in analysis.calibrations.values():
        lines.append(f"calibration applied: {rec.summary()}")
    header = (f"{'candidate':<24} {'emu':<3} {'bins':>6} {'bias W [95% CI]':>26} {'bias %':>8} {'energy err %':>13} "
              f"{'r':>6} {'CCC':>6} {'RMSE W':>8} {'slope':>7}")
    lines += ["", header, "-" * len(header)]
    for c in analysis.comparisons:
        m, ci = c.main.metrics, c.main.intervals
        bias_txt = _f(m["bias_w"], "+.2f") + _ci(ci.get("bias_w_ci"), ".2f")
        emu = "yes" if _emulated(c.members, emulated) else "-"
        lines.append(f"{c.candidate:<24} {emu:<3} {m['n_bins']:>6} {bias_txt:>26} {_f(m['bias_pct'], '+.1f'):>8} "
                     f"{_f(m['energy_error_pct'], '+.2f'):>13} {_f(m['pearson_r'], '.3f'):>6} "
                     f"{_f(m['ccc'], '.3f'):>6} {_f(m['rmse_w'], '.2f'):>8} {_f(m['slope'], '.3f'):>7}")
    for c in analysis.comparisons:
        if c.candidate == SOFTWARE_TOTAL:
            x = c.main.extra
            psu = "" if not np.isfinite(x["psu_efficiency"]) else \
                f" after PSU efficiency {x['psu_efficiency']:g} (PSU loss {x['psu_loss_w']:.1f} W)"
            lines += ["", f"unmetered power (wall - software){psu}: {_f(x['unmetered_w'], '.1f')} W"
                      f"{_ci(x['unmetered_w_ci'], '.1f')} = {_f(x['unmetered_share_pct'], '.1f')} % of the wall",
                      f"  includes {x['unmetered_includes']}"]
    phase_lines = []
    for c in analysis.comparisons:
        for name, (ph, res) in c.phases.items():
            if ph.kind == "workload":
                continue
            m = res.metrics
            phase_lines.append(f"  {c.candidate:<22} {name:<18} {m['n_bins']:>6} {_f(m['energy_ref_j'], '.0f'):>10} "
                               f"{_f(m['energy_cand_j'], '.0f'):>10} {_f(m['energy_error_pct'], '+.2f'):>9} "
                               f"{_f(m['bias_w'], '+.2f'):>8}")
    if phase_lines:
        lines += ["", f"  {'phases: candidate':<22} {'phase':<18} {'bins':>6} {'E ref J':>10} {'E cand J':>10} "
                      f"{'err %':>9} {'bias W':>8}", *phase_lines]
    for note in analysis.notes:
        if note != NOT_SYNCHRONISED:
            lines.append(f"note: {note}")
    return "\n".join(lines)
