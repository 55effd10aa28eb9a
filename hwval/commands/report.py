"""``hwval report``: a run's calibration report as one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("run_path", metavar="RUN.h5", type=click.Path(dir_okay=False))
@click.option("-o", "--output", default=None, metavar="REPORT.html", type=click.Path(dir_okay=False),
              help="HTML file to write (default: RUN.html beside the run)")
@click.option("--save", is_flag=True,
              help="store the /sync and /analysis the report had to compute in the run file")
def report(run_path, output, save):
    """Write a self-contained HTML report of a run: summary, meters, aligned curves, scatter and
    Bland-Altman plots, lag fits, per-phase and per-epoch tables, verdicts.

    A run without /sync or /analysis gets them computed in memory (the report says so); the run
    file is never written unless --save.

    \b
    Example:
      hwval sync runs/resnet.h5 && hwval analyze runs/resnet.h5 && hwval report runs/resnet.h5
      hwval report runs/resnet.h5 -o resnet.html --save
    """
    from hwval.cli import fail
    from hwval.report import build_report
    from hwval.runfile import RunFileError

    out = Path(output) if output else Path(run_path).with_suffix(".html")
    try:
        built = build_report(run_path, out, save=save)
    except RunFileError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{out}: cannot write the report ({exc.strerror or exc})")
    d = built.data
    if d.computed:
        where = f"saved into {run_path}" if save else "in memory, not saved (--save stores them)"
        click.echo(f"computed {', '.join(d.computed)} {where}")
    for note in d.notes:
        click.echo(f"note: {note}")
    if d.emulated:
        click.echo(f"EMULATED meters: {', '.join(d.emulated)}")
    click.echo(f"wrote {built.path} ({len(d.comparisons)} comparisons, {built.figures} figures)")
