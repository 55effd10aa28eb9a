"""``hwval sweep``: a hyperparameter search with every trial under its own capture (the search
itself is hwval.workloads.sweep; this module captures each trial and measures its energy)."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict
import math
import sys
from pathlib import Path

import click

from hwval.runfile.schema import EventName
from hwval.workloads.sweep import DEFAULT_SPACE, SEARCHABLE, STRATEGIES

#: Training options the sweep sets itself (per trial): not accepted after --.
RESERVED = ("--epochs", "--json-out", "--save", "--checkpoint", "--mode")


def _check_train_args(train_args, space) -> None:
    from hwval.cli import fail

    searched = {"--" + p.name.replace("_", "-") for p in space}
    for arg in train_args:
        flag = arg.split("=", 1)[0]
        if flag in RESERVED:
            fail(f"{flag} after --: the sweep sets it for every trial (use --epochs of the sweep)")
        if flag in searched:
            fail(f"{flag} after --: it is searched by --space; give it there or drop it from the space")


def _config(config_path, meter_specs, nvml, rapl, rapl_root):
    from dataclasses import replace

    from hwval.config import CaptureConfig, load_config, parse_meter_spec
    from hwval.sources.registry import Registry

    registry = Registry()
    config = load_config(config_path, registry.names()) if config_path else CaptureConfig()
    config = config.with_meters(parse_meter_spec(s, registry.names()) for s in meter_specs)
    sw = config.software
    sw = replace(sw, nvml=sw.nvml if nvml is None else nvml, rapl=sw.rapl if rapl is None else rapl,
                 rapl_root=rapl_root or sw.rapl_root)
    return replace(config, software=sw), registry


def measure_trial(spec, run_path: Path, exit_code: int, reference: str | None):
    """The trial's objective (train_end's eval accuracy, else its training accuracy) and the
    energy of its workload and train intervals per stream, from its run file."""
    from hwval.analysis.compare import AnalysisInputError
    from hwval.analysis.epochs import epoch_energy
    from hwval.runfile import RunFileError, open_run
    from hwval.workloads.sweep import TrialResult

    result = TrialResult(spec, exit_code, None, str(run_path))
    try:
        with open_run(run_path) as run:
            ends = [e.detail for e in run.events if e.name == EventName.MARK and e.detail.get("mark") == "train_end"]
            res = epoch_energy(run, reference=reference)
    except (RunFileError, AnalysisInputError, OSError) as exc:
        result.notes.append(f"not measured: {exc}")
        return result
    result.reference = res.reference
    for name, target in (("workload", result.energy_j), ("train", result.train_energy_j)):
        i = res.find(name)
        if i is not None:
            target.update({s: float(res.energy_j[s][i]) for s in res.streams})
    i = res.find("workload")
    result.duration_s = res.intervals[i].duration_s if i is not None else math.nan
    result.notes += res.notes
    if exit_code == 0 and ends:
        acc = ends[-1].get("eval_accuracy")
        acc = ends[-1].get("accuracy") if acc is None else acc
        result.objective = float(acc) if isinstance(acc, (int, float)) else None
    return result


@click.command("sweep", context_settings={"ignore_unknown_options": False})
@click.option("--strategy", "strategies", multiple=True, type=click.Choice(STRATEGIES),
              help="search strategy, repeatable: each runs its own --trials [default: grid]")
@click.option("--trials", type=click.IntRange(min=1), default=4, show_default=True,
              help="trials per strategy (grid: its evenly spaced points when fewer than the grid)")
@click.option("--space", "space_specs", multiple=True, metavar="NAME=SPEC",
              help="searched option: NAME=a,b,c | NAME=log:LO..HI | NAME=LO..HI, repeatable "
                   f"[default: {' '.join(DEFAULT_SPACE)}]; NAME one of "
                   f"{', '.join(s.replace('_', '-') for s in SEARCHABLE)}")
@click.option("--grid-points", type=click.IntRange(min=2), default=3, show_default=True,
              help="grid: points per range")
@click.option("--epochs", type=click.IntRange(min=1), default=2, show_default=True, help="training epochs per trial")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the random and bayes strategies")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="lab TOML file for every trial's capture (as hwval capture -c)")
@click.option("-m", "--meter", "meter_specs", multiple=True, metavar="SPEC",
              help="DRIVER:RESOURCE[?key=value&...]; repeatable (as hwval capture -m)")
@click.option("--nvml/--no-nvml", default=None, help="record NVIDIA GPUs (default: when available)")
@click.option("--rapl/--no-rapl", default=None, help="record RAPL domains (default: when readable)")
@click.option("--rapl-root", type=click.Path(file_okay=False), default=None, help="powercap tree to read")
@click.option("--reference", default=None, metavar="STREAM",
              help="hardware stream for the energies (default: the runs' only hardware stream)")
@click.option("-o", "--output", "folder", type=click.Path(file_okay=False), default=None,
              help="folder for the trials' run files and sweep.json (default: runs/sweep-<date>-<time>)")
@click.option("--force", is_flag=True, help="overwrite trial files already in the folder")
@click.option("--json", "as_json", is_flag=True, help="print sweep.json's content at the end")
@click.argument("train_args", nargs=-1, type=click.UNPROCESSED)
def sweep(strategies, trials, space_specs, grid_points, epochs, seed, config_path, meter_specs, nvml, rapl,
          rapl_root, reference, folder, force, as_json, train_args):
    """Search training hyperparameters, every trial under its own hwval capture (one run file
    each, marked with trial_start/trial_end and the params); objective: final eval accuracy.
    Prints each trial's and each strategy's energy, hardware vs every software meter.

    Options after -- go to every trial's `hwval workload train`.

    \b
    Example:
      hwval sweep -m tasmota:/dev/ttyUSB0 --strategy grid --strategy bayes --trials 6 -o runs/sweep
      hwval sweep -c lab.toml --space lr=log:0.001..0.1 --space arch=vgg,mobilenet -- --train-samples 1024
    """
    from hwval.capture.session import CaptureError, CaptureRequest, run_capture
    from hwval.capture.workload import CommandError
    from hwval.cli import fail
    from hwval.config import ConfigError
    from hwval.workloads import sweep as sw

    try:
        space = sw.parse_space(space_specs)
        chosen = [sw.make_strategy(name, space, trials, seed, grid_points) for name in (strategies or ("grid",))]
    except sw.SweepError as exc:
        fail(str(exc))
    _check_train_args(train_args, space)
    try:
        config, registry = _config(config_path, meter_specs, nvml, rapl, rapl_root)
    except ConfigError as exc:
        fail(str(exc))
    if not config.meters:
        fail("no hardware meter: give -m SPEC or -c lab.toml (the trials' energy is judged against it)")
    out = Path(folder or f"runs/sweep-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"-o {out}: cannot create the folder ({exc})")
    doc = {"format": "hwval-sweep", "version": 1, "space": [asdict(p) for p in space],
           "strategies": [s.name for s in chosen], "trials_per_strategy": trials, "epochs": epochs, "seed": seed,
           "train_args": list(train_args), "trials": []}

    def run_trial(spec):
        run_path = out / f"{spec.label}.h5"
        command = spec.command(sys.executable, ["--epochs", str(epochs), "--json-out",
                                                str(out / f"{spec.label}.json"), *train_args],
                               log=str(out / f"{spec.label}.log"))
        click.echo(f"trial {spec.label}: {json.dumps(spec.params)}", err=True)
        try:
            code = run_capture(CaptureRequest(config=config, command=command, output=str(run_path), force=force,
                                              live=False, registry=registry))
        except CaptureError as exc:
            fail(str(exc))
        except CommandError as exc:
            fail(str(exc), exc.exit_code)
        return measure_trial(spec, run_path, code, reference)

    def on_result(res):
        doc["trials"].append(res.as_dict())  # written after every trial: a stopped sweep keeps its trials
        _write(out / "sweep.json", doc)

    results = sw.run_sweep(chosen, run_trial, on_result)
    doc["summary"] = sw.strategy_summary(results)
    doc["notes"] = {s.name: s.notes for s in chosen}
    _write(out / "sweep.json", doc)
    if as_json:
        from hwval.analysis.output import plain

        click.echo(json.dumps(plain(doc), indent=2, allow_nan=False))
        return
    for s in chosen:
        for note in s.notes:
            click.echo(f"note: {s.name}: {note}")
    click.echo(sw.format_results(results))
    click.echo(f"\nrun files and sweep.json in {out}/")


def _write(path: Path, doc) -> None:
    import os

    from hwval.analysis.output import plain

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(plain(doc), indent=1, allow_nan=False))
    os.replace(tmp, path)
