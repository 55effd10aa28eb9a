"""``hwval report``: one self-contained HTML file for a run (see :func:`build_report`).

Modules: :mod:`~hwval.report.gather` (what the run holds, computed in memory where missing),
:mod:`~hwval.report.overlay` (derived groups kept in memory), :mod:`~hwval.report.lagfit` (each
stream's pulse response against the fitted model), :mod:`~hwval.report.figures` and
:mod:`~hwval.report.svg` (matplotlib figures as inline SVG), :mod:`~hwval.report.page` (the
autoescaping Jinja2 template).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hwval.report.gather import ReportData, gather


@dataclass
class Built:
    path: Path
    data: ReportData
    figures: int


def build_report(run_path: str | Path, output: str | Path, *, save: bool = False) -> Built:
    """Write the report of ``run_path`` to ``output``. Missing /sync, /analysis comparisons and
    per-epoch energy are computed; they are stored in the run only with ``save``."""
    from hwval.report import figures as fg
    from hwval.report.lagfit import lag_fits
    from hwval.report.overlay import DerivedOverlay
    from hwval.report.page import render
    from hwval.runfile import open_run

    with open_run(run_path, mode="r+" if save else "r") as run:
        view = run if save else DerivedOverlay(run)
        data = gather(view)
        fits, how = lag_fits(view, data.sync)
        figs = {"lag": {f.stream: fg.lag_fit(f, f"lag{i}") for i, f in enumerate(fits)},
                "ts": {}, "scatter": {}, "ba": {}}
        for i, comp in enumerate(data.comparisons):
            figs["ts"][comp.entry] = fg.time_series(comp, data.marks, f"ts{i}")
            figs["scatter"][comp.entry] = fg.scatter(comp, f"sc{i}")
            figs["ba"][comp.entry] = fg.bland_altman(comp, f"ba{i}")
    html = render(data, figs, how, str(output), saved=save)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return Built(out, data, len(fits) + 3 * len(data.comparisons))


__all__ = ["Built", "ReportData", "build_report", "gather"]
