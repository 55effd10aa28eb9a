"""``hwval predict``: whole-run energy from a short profile, or from model size, against the
hardware truth (see hwval.analysis.predict and hwval.analysis.size_model)."""

from __future__ import annotations

import json
import math

import click


@click.command("predict")
@click.argument("run_paths", metavar="RUN.h5", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--profile-s", type=float, default=None, metavar="N",
              help="profile = the first N seconds of the training; estimate = its mean power x the "
                   "training's duration")
@click.option("--profile-pct", type=float, default=None, metavar="P",
              help="as --profile-s, with N = P % of the training's duration")
@click.option("--profile-epochs", type=int, default=None, metavar="K",
              help="profile = the first K epochs (with their evaluations); estimate = their energy / K x epochs")
@click.option("--fit-size", is_flag=True,
              help="fit energy = a + b x size x (3 x train samples + eval samples) across the runs given "
                   "and write it (-o)")
@click.option("--feature", type=click.Choice(["macs", "params"]), default="macs", show_default=True,
              help="--fit-size: the model size to use")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="--fit-size: the size model to write (TOML), e.g. size_model.toml")
@click.option("--size-model", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="estimate the run's training energy with a fitted size model (and compare with the hardware)")
@click.option("--meter-out", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="--size-model: write the estimate as a meter (JSONL: timestamp, energy_j) for "
                   "`hwval validate --candidate FILE`")
@click.option("--reference", default=None, metavar="STREAM",
              help="hardware stream taken as the truth (default: the run's only hardware stream)")
@click.option("--force", is_flag=True, help="overwrite an existing -o / --meter-out file")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def predict(run_paths, profile_s, profile_pct, profile_epochs, fit_size, feature, output, size_model, meter_out,
            reference, force, as_json):
    """Predict a run's energy from a short profile (or from model size) and compare with the
    hardware truth of the whole run, for the hardware stream and every software meter.

    \b
    Example:
      hwval predict runs/resnet.h5 --profile-s 30
      hwval predict runs/resnet.h5 --profile-epochs 1 --json
      hwval predict --fit-size runs/*.h5 -o size_model.toml
      hwval predict runs/new.h5 --size-model size_model.toml --meter-out size.jsonl
      hwval validate runs/new.h5 --candidate size.jsonl
    """
    from pathlib import Path

    from hwval.analysis.compare import AnalysisInputError
    from hwval.cli import fail
    from hwval.runfile import RunFileError, open_run

    modes = [name for name, on in (("--profile-s/--profile-pct/--profile-epochs",
                                    any(x is not None for x in (profile_s, profile_pct, profile_epochs))),
                                   ("--fit-size", fit_size), ("--size-model", size_model is not None)) if on]
    if len(modes) != 1:
        fail("give one of --profile-s N / --profile-pct P / --profile-epochs K, --fit-size, or --size-model FILE"
             + (f" (got {' and '.join(modes)})" if modes else ""))
    if not fit_size and len(run_paths) != 1:
        fail(f"{len(run_paths)} run files given: one RUN.h5 (several only with --fit-size)")
    if output and not fit_size:
        fail("-o applies to --fit-size (the size model file)")
    if meter_out and not size_model:
        fail("--meter-out applies to --size-model")
    for target in (output, meter_out):
        if target and Path(target).exists() and not force:
            fail(f"{target} already exists; choose another file or pass --force")
    if fit_size and not output:
        fail("--fit-size needs -o FILE for the size model (e.g. -o size_model.toml)")

    try:
        if fit_size:
            _fit(run_paths, feature, output, reference, as_json)
        elif size_model:
            _size(run_paths[0], size_model, meter_out, reference, as_json)
        else:
            from hwval.analysis import predict as pr

            with open_run(run_paths[0]) as run:
                result = pr.predict_profile(run, profile_s=profile_s, profile_pct=profile_pct,
                                            profile_epochs=profile_epochs, reference=reference)
            click.echo(json.dumps(pr.to_json(result), indent=2, allow_nan=False) if as_json
                       else pr.format_prediction(result))
    except (AnalysisInputError, RunFileError) as exc:
        fail(str(exc))


def _fit(run_paths, feature, output, reference, as_json) -> None:
    from hwval.analysis import size_model as sm
    from hwval.analysis.compare import AnalysisInputError
    from hwval.runfile import open_run

    sizes = []
    for path in run_paths:
        with open_run(path) as run:
            try:
                sizes.append(sm.run_size(run, reference=reference))
            except AnalysisInputError as exc:
                raise AnalysisInputError(f"{path}: {exc}") from None
    model = sm.fit(sizes, feature)
    with open(output, "w", encoding="utf-8") as fh:
        fh.write(model.to_toml())
    if as_json:
        click.echo(json.dumps({**sm.fit_json(model), "written": output}, indent=2, allow_nan=False))
    else:
        click.echo(sm.format_fit(model))
        click.echo(f"\nwritten: {output}")


def _size(run_path, model_path, meter_out, reference, as_json) -> None:
    from hwval.analysis import size_model as sm
    from hwval.analysis.output import plain
    from hwval.runfile import open_run

    model = sm.SizeModel.load(model_path)
    with open_run(run_path) as run:
        size = sm.run_size(run, reference=reference)
        rows = sm.write_meter_jsonl(run, model, meter_out) if meter_out else 0
    predicted = model.predict_j(size.work(model.feature))
    error = 100.0 * (predicted - size.energy_j) / size.energy_j if size.energy_j else math.nan
    out = {"run": run_path, "model": model_path, "feature": model.feature, "arch": size.arch,
           "size": size.size(model.feature), "work": size.work(model.feature), "predicted_j": predicted,
           "truth_j": size.energy_j, "reference": size.reference, "error_pct": error,
           "meter_out": meter_out, "meter_rows": rows}
    if as_json:
        click.echo(json.dumps(plain(out), indent=2, allow_nan=False))
        return
    click.echo(f"size model {model_path} ({model.feature}): training energy {predicted:.1f} J predicted, "
               f"{size.energy_j:.1f} J measured by {size.reference} ({error:+.2f} %)")
    if meter_out:
        click.echo(f"meter series: {meter_out} ({rows} rows); judge it with: hwval validate {run_path} "
                   f"--candidate {meter_out}")
