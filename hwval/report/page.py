"""The HTML page: a Jinja2 template with autoescaping, the figures placed inline.

Every string from the run (stream names, identities, marks, commands, notes) goes through the
template's autoescaping; only the SVG figures are marked safe, and matplotlib's SVG writer has
escaped their text already. The page loads nothing: its Content-Security-Policy forbids every
fetch and every script, so a browser refuses (and reports) anything that would reach out.
"""

from __future__ import annotations

import json
import math
import shlex
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from hwval.report.gather import ReportData

#: Checks of a verdict -> the validate option that set their threshold.
CHECK_OPTIONS = {"energy_error_pct": "--max-energy-error-pct", "bias_pct": "--max-bias-pct", "ccc": "--min-ccc"}


def num(value: Any, spec: str = ".2f") -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "-"
    return format(v, spec) if math.isfinite(v) else "-"


def ci(pair: Any, spec: str = ".2f") -> str:
    try:
        lo, hi = float(pair[0]), float(pair[1])
    except (TypeError, ValueError, IndexError):
        return ""
    return f"[{format(lo, spec)}, {format(hi, spec)}]" if math.isfinite(lo) and math.isfinite(hi) else ""


def ms(value: Any) -> str:
    try:
        return num(float(value) * 1e3, ".1f")
    except (TypeError, ValueError):
        return "-"


def ci_ms(pair: Any) -> str:
    try:
        return ci([float(pair[0]) * 1e3, float(pair[1]) * 1e3], ".1f")
    except (TypeError, ValueError, IndexError):
        return ""


def pretty_json(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value or "{}")
        except ValueError:
            return value
    return json.dumps(value, indent=1, sort_keys=True, default=str)


def reproduce(data: ReportData, output: str) -> list[str]:
    """Commands that rebuild this report from the raw run (stage by stage) and then render it."""
    run = shlex.quote(data.run_path)
    cmds = []
    refs = {str(a.get("reference")) for a in data.sync.values()}
    if data.sync:
        ref = refs.pop() if len(refs) == 1 else "pulses"
        cmds.append(f"hwval sync {run}" + ("" if ref == "pulses" else f" --reference {shlex.quote(ref)}"))
    for comp in data.comparisons[:1]:
        cmd = f"hwval analyze {run} --reference {shlex.quote(comp.reference)} --bin-s {float(comp.attrs.get('bin_s', 1)):g}"
        cal = str(comp.attrs.get("calibration_applied", "") or "")
        for c in data.comparisons:
            cal = cal or str(c.attrs.get("calibration_applied", "") or "")
        if cal:
            cmd += f" --calibration {shlex.quote(str(_parent(cal)))}"
        cmds.append(cmd)
    if data.epochs:
        cmds.append(f"hwval analyze {run} --epochs --reference {shlex.quote(data.epochs['reference'])}")
    for v in data.verdicts:
        source = str(v.get("source", v.get("candidate", "")))
        opts = []
        if v.get("protocol"):
            opts.append(f"--protocol {shlex.quote(str(v['protocol']))}")
        for check in v.get("checks", []):
            option = CHECK_OPTIONS.get(str(check.get("name")))
            if option and check.get("limit") is not None:
                opts.append(f"{option} {float(check['limit']):g}")
        cmds.append(" ".join([f"hwval validate {run} --candidate {shlex.quote(source)}",
                              f"--reference {shlex.quote(str(v.get('reference', '')))}", *opts]))
    cmds.append(f"hwval report {run} -o {shlex.quote(output)}")
    return cmds


def _parent(path: str) -> str:
    from pathlib import Path

    return str(Path(path).parent)


def environment() -> Environment:
    env = Environment(loader=PackageLoader("hwval.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=num, ci=ci, ms=ms, ci_ms=ci_ms, pretty_json=pretty_json)
    return env


def render(data: ReportData, figures: dict[str, Any], lag_fits_how: str, output: str, saved: bool = False) -> str:
    css = resources.files("hwval.report").joinpath("templates/report.css").read_text()
    safe = {k: (Markup(v) if isinstance(v, str) else {kk: Markup(vv) for kk, vv in v.items()})
            for k, v in figures.items()}
    return environment().get_template("report.html.j2").render(
        d=data, figures=safe, css=Markup(css), lag_fits_how=lag_fits_how, commands=reproduce(data, output),
        output=output, saved=saved)
