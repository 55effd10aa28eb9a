"""``hwval validate``: pass/fail verdict for a software meter against the hardware reference."""

from __future__ import annotations

import json
import sys

import click

from hwval.analysis.external import FORMATS
from hwval.commands.analyze import bootstrap_options, open_for_update

EXIT_PASS, EXIT_FAIL, EXIT_UNUSABLE = 0, 1, 2


@click.command("validate")
@click.argument("run_path", metavar="RUN.h5", type=click.Path(dir_okay=False))
@click.option("--candidate", "source", required=True, metavar="SOURCE",
              help="a stream of the run (or software_total), or a file: CodeCarbon emissions.csv, "
                   "CSV or JSONL with timestamp and power_w or energy_j")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True,
              help="format of a candidate file")
@click.option("--reference", default=None, metavar="NAME",
              help="hardware stream to judge against (default: the run's only hardware stream)")
@click.option("--max-bias-pct", type=float, default=None, metavar="X", help="pass only if |bias| <= X % of the reference")
@click.option("--min-ccc", type=float, default=None, metavar="Y", help="pass only if Lin's CCC >= Y")
@click.option("--max-energy-error-pct", type=float, default=None, metavar="Z",
              help="pass only if |energy error| <= Z % (the default criterion, at 5 %, when no threshold "
                   "is given; the tolerance of --protocol mlperf)")
@click.option("--protocol", type=click.Choice(["mlperf"]), default=None,
              help="mlperf: MLPerf meter qualification (idle + two workloads, five 1-minute windows, "
                   "Olympic scoring)")
@click.option("--max-lag-s", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              help="a file series: lag search range, +-S s against the reference (default 3)")
@bootstrap_options
@click.option("--json", "as_json", is_flag=True, help="machine-readable verdict")
def validate(run_path, source, fmt, reference, max_bias_pct, min_ccc, max_energy_error_pct, protocol,
             max_lag_s, resamples, seed, as_json):
    """Judge a software meter against the hardware reference: prints the verdict with its reasons
    and stores it under /analysis/validation__<candidate>__vs__<reference>.

    Exit status: 0 pass, 1 fail, 2 unusable input (one line saying why).

    \b
    Example:
      hwval validate runs/resnet.h5 --candidate emissions.csv --max-energy-error-pct 10
      hwval validate runs/resnet.h5 --candidate nvml_gpu0 --min-ccc 0.95 --max-bias-pct 5
      hwval validate runs/qualify.h5 --candidate mymeter.jsonl --protocol mlperf
    """
    from hwval.analysis.validate import Thresholds, UnusableInput
    from hwval.analysis.validate import validate as run_validation
    from hwval.cli import fail

    thresholds = Thresholds(max_bias_pct, min_ccc, max_energy_error_pct)
    with open_for_update(run_path) as run:
        try:
            verdict = run_validation(run, source, fmt=fmt, reference=reference, thresholds=thresholds,
                                     protocol=protocol, n_resamples=resamples, seed=seed,
                                     max_lag_s=max_lag_s)
        except UnusableInput as exc:
            fail(str(exc), EXIT_UNUSABLE)
        run.replace_derived("analysis", {verdict.name: verdict.entry()})
    if as_json:
        click.echo(json.dumps(verdict.as_json(), indent=2, allow_nan=False))
    else:
        word = "PASS" if verdict.passed else "FAIL"
        what = "MLPerf meter qualification" if verdict.protocol == "mlperf" else "validation"
        click.echo(f"{word}: {verdict.candidate} against {verdict.reference} ({what})")
        for check in verdict.checks:
            click.echo(f"  [{'ok' if check.passed else 'FAIL'}] {check.text}")
        m = verdict.metrics
        if "energy_ref_j" in m:
            click.echo(f"  energy: {m['energy_cand_j']:.1f} J vs {m['energy_ref_j']:.1f} J over "
                       f"{m.get('n_intervals', m.get('n_bins'))} {'intervals' if 'n_intervals' in m else 'bins'}")
        if not verdict.synchronised and verdict.format in ("stream", "codecarbon"):
            click.echo("  not synchronised: raw timestamps (run `hwval sync` first for lag-corrected bins)")
        for note in verdict.notes:
            click.echo(f"  note: {note}")
        click.echo(f"stored in {run_path}: /analysis/{verdict.name}")
    sys.exit(EXIT_PASS if verdict.passed else EXIT_FAIL)
