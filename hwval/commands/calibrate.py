"""``hwval calibrate``: fit a meter's gain and offset against a reference, write a TOML record."""

from __future__ import annotations

import click

from hwval.commands.analyze import bootstrap_options

DEFAULT_DIR = "calibration"


@click.command("calibrate")
@click.argument("run_path", metavar="RUN.h5", type=click.Path(dir_okay=False))
@click.option("--meter", required=True, metavar="NAME", help="stream to calibrate")
@click.option("--reference", required=True, metavar="NAME", help="stream that is the truth")
@click.option("-o", "--output", default=DEFAULT_DIR, show_default=True, metavar="FILE",
              help="record file (.toml), or a folder to write <driver>-<identity>.toml into")
@click.option("--bin-s", type=float, default=None, metavar="S",
              help="width of the aligned bins (default: 1 s, or the reference's reporting interval if longer)")
@bootstrap_options
def calibrate(run_path, meter, reference, output, bin_s, resamples, seed):
    """Fit reference_w = gain * meter_w + offset_w over the workload, with intervals and the
    power range it is valid for, and write it as a calibration record (TOML).

    `hwval analyze --calibration DIR` applies the records whose meter identity matches.

    \b
    Example:
      hwval calibrate runs/bench.h5 --meter nvml_gpu0 --reference wall
      hwval calibrate runs/bench.h5 --meter plug --reference wt310 -o calibration/plug.toml
    """
    from hwval.analysis.calibration import CalibrationError, write_record
    from hwval.analysis.compare import AnalysisInputError
    from hwval.analysis.fit import fit_record
    from hwval.cli import fail
    from hwval.runfile import RunFileError, open_run

    try:
        with open_run(run_path) as run:
            rec = fit_record(run, meter, reference, bin_s=bin_s, n_resamples=resamples, seed=seed)
        path = write_record(rec, output)
    except (RunFileError, AnalysisInputError, CalibrationError) as exc:
        fail(str(exc))
    click.echo(f"{meter} against {reference}: reference_w = {rec.gain:.5f} * meter_w {rec.offset_w:+.3f} W")
    click.echo(f"  gain 95% CI [{rec.gain_ci[0]:.5f}, {rec.gain_ci[1]:.5f}], offset 95% CI "
               f"[{rec.offset_w_ci[0]:+.3f}, {rec.offset_w_ci[1]:+.3f}] W, r2 {rec.r2:.4f}, "
               f"residual RMSE {rec.residual_rmse_w:.2f} W over {rec.n_bins} bins of {rec.bin_s:g} s")
    click.echo(f"  valid for {meter} between {rec.valid_min_w:.1f} and {rec.valid_max_w:.1f} W"
               + ("" if rec.synchronised else "; NOT synchronised (no /sync: raw timestamps)"))
    if rec.emulated:
        click.echo("  emulated meter(s): this record never applies to a real meter")
    click.echo(f"wrote {path}")
