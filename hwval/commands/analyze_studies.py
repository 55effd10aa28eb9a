"""``hwval analyze --epochs`` and ``hwval analyze --tradeoff``: the studies' views of runs of
``hwval workload train`` (energy per epoch; accuracy vs energy across runs, with CO2)."""

from __future__ import annotations

import json

import click


def run_studies(run_paths, *, reference, candidates, epochs, tradeoff, locations, carbon_intensity,
                carbon_table, as_json, comparison_flags) -> str | None:
    """Handle --epochs / --tradeoff and return None, or return the one run path for the ordinary
    comparison. One-line errors (exit 2) for option mixes that cannot mean anything."""
    from hwval.cli import fail

    # "is not None": --carbon-intensity 0 is a value given (a fully renewable supply), not an absent one
    co2 = [flag for flag, v in (("--location", locations or None), ("--carbon-intensity", carbon_intensity),
                                ("--carbon-table", carbon_table)) if v is not None]
    if co2 and not tradeoff:
        fail(f"{co2[0]} applies to --tradeoff only (CO2 per run and location)")
    if epochs and tradeoff:
        fail("--epochs and --tradeoff are two views; give one")
    if (epochs or tradeoff) and comparison_flags:
        fail(f"{comparison_flags[0]} applies to the comparison table, not to "
             f"{'--epochs' if epochs else '--tradeoff'}")
    if tradeoff:
        _tradeoff(run_paths, reference, candidates, locations, carbon_intensity, carbon_table, as_json)
        return None
    if len(run_paths) != 1:
        fail(f"{len(run_paths)} run files given: analyze takes one RUN.h5 (several only with --tradeoff)")
    if epochs:
        _epochs(run_paths[0], reference, candidates, as_json)
        return None
    return run_paths[0]


def _epochs(run_path, reference, candidates, as_json) -> None:
    from hwval.analysis import epochs as ep
    from hwval.analysis.compare import AnalysisInputError
    from hwval.cli import fail
    from hwval.commands.analyze import open_for_update

    with open_for_update(run_path) as run:
        try:
            result = ep.epoch_energy(run, reference=reference, candidates=candidates)
        except AnalysisInputError as exc:
            fail(str(exc))
        name = ep.write(run, result)
    if as_json:
        out = ep.to_json(result)
        out["written"] = [f"/analysis/{name}"]
        click.echo(json.dumps(out, indent=2, allow_nan=False))
        return
    click.echo(ep.format_epochs(result))
    click.echo(f"\nwritten to {run_path}: /analysis/{name}")


def _tradeoff(run_paths, reference, candidates, locations, carbon_intensity, carbon_table, as_json) -> None:
    from hwval.analysis import tradeoff as tr
    from hwval.analysis.carbon import CarbonError, CarbonTable, resolve_intensity
    from hwval.analysis.compare import AnalysisInputError
    from hwval.cli import fail
    from hwval.runfile import RunFileError, open_run

    if candidates:
        fail("--candidate does not apply to --tradeoff (every software meter of each run is shown)")
    if carbon_table and not locations and carbon_intensity is None:
        fail("--carbon-table needs --location COUNTRY[/REGION] (which of its rows to use), e.g. --location US/OR")
    try:
        if carbon_intensity is not None and not locations:
            intensities = [resolve_intensity(None, fixed_g_per_kwh=carbon_intensity)]
        else:
            table = None if carbon_intensity is not None else CarbonTable.load(carbon_table)
            intensities = [resolve_intensity(loc, fixed_g_per_kwh=carbon_intensity, table=table)
                           for loc in locations]
    except CarbonError as exc:
        fail(str(exc))
    labels = _labels(run_paths)
    points = []
    for path, label in zip(run_paths, labels):
        try:
            with open_run(path) as run:
                points.append(tr.run_point(run, reference=reference, label=label))
        except (RunFileError, AnalysisInputError) as exc:
            fail(str(exc))
    carbon = tr.carbon_rows(points, intensities)
    if as_json:
        click.echo(json.dumps(tr.to_json(points, carbon), indent=2, allow_nan=False))
    else:
        click.echo(tr.format_tradeoff(points, carbon))


def _labels(paths) -> list[str]:
    """File stems, or parent/stem where stems repeat (trial files of two sweeps)."""
    from pathlib import Path

    stems = [Path(p).stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{Path(p).parent.name}/{Path(p).stem}" for p in paths]
