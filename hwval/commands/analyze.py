"""``hwval analyze``: compare the software meters with the hardware reference, write /analysis."""

from __future__ import annotations

import json

import click

from hwval.analysis import bootstrap


def open_for_update(run_path: str):
    """The run opened read-write for its derived groups; one-line errors as ``fail`` exits."""
    from hwval.cli import fail
    from hwval.runfile import RunFileError, open_run

    try:
        return open_run(run_path, mode="r+")
    except RunFileError as exc:
        fail(str(exc))
    except OSError as exc:  # pragma: no cover - permissions: h5py says why
        fail(f"{run_path}: cannot be opened for writing ({exc})")


def studies_options(func):
    """--epochs, --tradeoff and the CO2 options (see hwval.commands.analyze_studies)."""
    func = click.option("--carbon-table", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                        help="--tradeoff: carbon-intensity CSV overriding the shipped table "
                             "(country,region,g_per_kwh,year,source)")(func)
    func = click.option("--carbon-intensity", type=float, default=None, metavar="G_PER_KWH",
                        help="--tradeoff: one fixed intensity (gCO2e/kWh) instead of the table")(func)
    func = click.option("--location", "locations", multiple=True, metavar="COUNTRY[/REGION]",
                        help="--tradeoff: CO2 at this location (repeatable), e.g. US/OR, TW/Taipei, DE")(func)
    func = click.option("--tradeoff", is_flag=True,
                        help="accuracy vs energy across the runs given (RUN.h5...), per architecture, "
                             "with each software meter's error and CO2 per location")(func)
    func = click.option("--epochs", is_flag=True,
                        help="energy per epoch, evaluation, idle period and training from the workload's "
                             "marks (hardware and every software meter); writes /analysis/epochs__<ref>")(func)
    return func


def bootstrap_options(func):
    func = click.option("--seed", type=int, default=None,
                        help=f"bootstrap seed (default {bootstrap.DEFAULT_SEED}, fixed so results repeat)")(func)
    func = click.option("--resamples", type=click.IntRange(min=0), default=bootstrap.DEFAULT_RESAMPLES,
                        show_default=True, help="bootstrap resamples for the intervals (0: none)")(func)
    return func


@click.command("analyze")
@click.argument("run_paths", metavar="RUN.h5", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--reference", default=None, metavar="STREAM",
              help="hardware stream to compare against (default: the run's only hardware stream)")
@click.option("--candidate", "candidates", multiple=True, metavar="NAME",
              help="stream to compare, or software_total (repeatable; default: every software stream "
                   "and software_total)")
@click.option("--bin-s", type=float, default=None, metavar="S",
              help="width of the aligned bins (default: 1 s, or the reference's reporting interval if longer)")
@click.option("--psu-efficiency", type=float, default=None, metavar="F",
              help="power-supply efficiency (e.g. 0.92) to take wall power to the DC side for the "
                   "unmetered-power figure")
@click.option("--calibration", "calibration_dir", type=click.Path(file_okay=False), default=None,
              metavar="DIR", help="apply the calibration records in DIR whose meter identity matches")
@bootstrap_options
@studies_options
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def analyze(run_paths, reference, candidates, bin_s, psu_efficiency, calibration_dir, resamples, seed,
            epochs, tradeoff, locations, carbon_intensity, carbon_table, as_json):
    """Compare every software meter (and software_total) with the hardware reference.

    Bias, energy error, correlation (Pearson, Spearman, Lin's CCC), MAE/RMSE/MAPE, Bland-Altman
    limits and a calibration line, with moving-block bootstrap intervals, over the workload and
    each phase (idle, pulse blocks, marker intervals); written to /analysis/<cand>__vs__<ref>.

    \b
    Example:
      hwval sync runs/resnet.h5 && hwval analyze runs/resnet.h5
      hwval analyze runs/resnet.h5 --reference wall --candidate nvml_gpu0 --psu-efficiency 0.92 --json
      hwval analyze runs/resnet.h5 --epochs
      hwval analyze --tradeoff runs/vgg.h5 runs/resnet.h5 --location US/OR --location TW/Taipei
    """
    from hwval.analysis import compare, output
    from hwval.analysis.calibration import CalibrationError, load_records
    from hwval.cli import fail
    from hwval.commands.analyze_studies import run_studies
    from hwval.runfile.info import emulated_streams

    comparison = [flag for flag, v in (("--bin-s", bin_s), ("--psu-efficiency", psu_efficiency),
                                       ("--calibration", calibration_dir)) if v is not None]
    run_path = run_studies(run_paths, reference=reference, candidates=candidates, epochs=epochs,
                           tradeoff=tradeoff, locations=locations, carbon_intensity=carbon_intensity,
                           carbon_table=carbon_table, as_json=as_json, comparison_flags=comparison)
    if run_path is None:
        return

    try:
        records = load_records(calibration_dir) if calibration_dir else []
    except CalibrationError as exc:
        fail(str(exc))
    with open_for_update(run_path) as run:
        try:
            result = compare.analyze(run, reference=reference, candidates=candidates, bin_s=bin_s,
                                     psu_efficiency=psu_efficiency, records=records,
                                     n_resamples=resamples, seed=seed)
        except compare.AnalysisInputError as exc:
            fail(str(exc))
        written = compare.write(run, result)
        emulated = emulated_streams(run)
    if as_json:
        out = output.to_json(result, emulated)
        out["written"] = [f"/analysis/{name}" for name in written]
        click.echo(json.dumps(out, indent=2, allow_nan=False))
        return
    if calibration_dir and not result.calibrations:
        click.echo(f"calibration: no record in {calibration_dir} matches a meter of this run")
    click.echo(output.format_table(result, emulated))
    click.echo(f"\nwritten to {run_path}: " + ", ".join(f"/analysis/{name}" for name in written))
