"""``hwval demo``: the whole pipeline on an emulated bench, on any machine, in one command.

1. :func:`start_bench` starts the host-following bench: a sampler turns this machine's CPU load
   into the true power, which a Tasmota plug on a pty (the wall meter), a Yokogawa WT310 on a
   TCP port (the reference analyzer) and a powercap tree (RAPL) see, each a separate
   ``hwval emulate`` process with its own latency, window and noise.
2. ``hwval capture --sync-pulses`` records them while a real small CNN trains on the CPU
   (``hwval workload train``, with a mark per epoch and evaluation), with a sync-pulse block
   before and after it.
3. ``hwval sync`` (each stream's absolute lag and window, from the pulses), ``hwval analyze`` (every software meter
   against the analyzer), ``hwval calibrate`` (RAPL's gain and offset against it), ``hwval
   analyze --calibration`` (the record applied), ``hwval validate`` (a verdict for RAPL) and
   ``hwval report`` (the HTML report), each run as the command a user would type.

The bench is the one thing a real lab replaces: every later step is the same command on real
meters. Everything the demo prints and writes says the meters are emulated.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import click

from hwval.analysis.fit_limits import MIN_FIT_BINS
from hwval.sources.emulated import EMULATED_WHAT

EMULATED = f"EMULATED meters ({EMULATED_WHAT})"


@dataclass
class Bench:
    """What the capture needs from a bench, and how to stop it."""

    meters: list[str]                 # -m specs
    rapl_root: str
    reference: str                    # the analyzer's stream: the truth of the comparisons
    plug: str                         # the plug's stream
    sync_pulses: bool                 # whether the capture plays sync pulses (the bench follows the host)
    description: str
    #: the plug's configured latency (s): what its synchronised lag should come out as
    plug_latency_s: float = math.nan
    logs: list[Path] = field(default_factory=list)
    stop: Callable[[], None] = lambda: None


#: The training runs at this niceness: the bench follows niced CPU time (see start_bench).
TRAIN_NICE = 5
#: RAPL's package domain sees this share of the wall (the rest: PSU losses, fans, board, disks).
RAPL_GAIN = 0.55
#: Idle seconds either side of the training. ``hwval calibrate`` fits over the workload's window
#: (workload_start to workload_end: the workload's start-up, both idle periods and the training)
#: and needs MIN_FIT_BINS bins there. Its 1 s grid (the demo's analyzer reports every 0.25 s) is
#: anchored at workload_start and the pulse blocks keep the recording going past both ends, so the
#: window holds floor(its length) bins. On an idle machine the quick training is over in 0.3 s and
#: start-up took about 3 s: with 2 s idle either side the window held 7 bins and the demo stopped
#: at calibrate. Two idle periods of MIN_FIT_BINS / 2 s suffice alone; 1 s more each side is
#: margin for a bin lost to a gap.
IDLE_S = MIN_FIT_BINS / 2 + 1


def start_bench(work: Path) -> Bench:
    """Start the emulated bench; the one place that knows which bench the demo runs on.

    The host-following bench (:func:`hwval.emulators.host_bench.start_bench`): one sampler turns
    this machine's CPU load into the true power, and a Tasmota plug on a pty (the wall), a WT310
    on TCP (the reference analyzer) and a powercap tree (RAPL, at 55 % of the wall) each see it
    through their own latency, window and noise. The capture's sync pulses show in all of them,
    so the lags come out absolute. The bench counts niced CPU time only, and the demo runs the
    training niced, so that a machine busy with other work still shows the demo's own load."""
    from hwval.emulators.host_bench import BenchError, start_bench as start_host_bench

    folder = work / "bench"
    folder.mkdir(exist_ok=True)
    try:
        # niced CPU time only (the training runs under `nice`, the pulse workers are niced):
        # other work on this machine then neither adds to the bench's power nor hides the pulses
        host = start_host_bench(folder, cpu_load="niced", rapl_gain=RAPL_GAIN,
                                names={"plug": "wall", "wt300": "analyzer"})
    except BenchError as exc:
        raise click.ClickException(f"the emulated bench did not start: {exc}") from None

    def stop() -> None:
        host.stop()
        # the ring holds 30 min of load samples (~29 MB); the logs and truth files stay
        host.ring.unlink(missing_ok=True)

    # RAPL's package domain only: core and dram would add comparisons, not insight, to a demo
    rapl = next(m for m in host.meter_specs if m.startswith("rapl:")) + "&domains=rapl_package_0"
    return Bench(meters=[*host.meter_specs[:2], rapl], rapl_root=str(folder / "powercap"), reference="analyzer", plug="wall",
                 sync_pulses=True, plug_latency_s=float(host.truth["plug"]["model"]["latency_s"]),
                 description="true power follows this machine's CPU load: a Tasmota plug on a pty, a WT310 "
                             "on TCP, a powercap tree",
                 logs=[*host.logs, *(folder / f"{m}.truth.json" for m in ("plug", "wt300", "rapl"))], stop=stop)


def run_step(args: list[str], real: str) -> int:
    """Run ``hwval ARGS`` in this process, as typed; returns its exit status."""
    from hwval.cli import cli

    click.echo("")
    click.secho("$ hwval " + " ".join(shlex.quote(a) for a in args), bold=True)
    click.echo(f"  (on real meters: {real})")
    started = time.monotonic()
    try:
        cli.main(args=args, prog_name="hwval", standalone_mode=False)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    click.echo(f"  ({time.monotonic() - started:.1f} s)")
    return code


def headline(run_path: Path, bench: Bench) -> str:
    from hwval.runfile import open_run

    with open_run(run_path) as run:
        analysis = run.read_derived("analysis")
        sync = run.read_derived("sync")
    parts = []
    comp = analysis.get(f"rapl_package_0__vs__{bench.reference}")
    if comp is not None:
        a = comp.attrs
        # the comparison's reference is the analyzer (it meters the wall power), not the plug
        parts.append(f"RAPL package reads {100 * a['energy_cand_j'] / a['energy_ref_j']:.1f} % "
                     "of the analyzer (wall power) "
                     f"({a['energy_cand_j']:.0f} J of {a['energy_ref_j']:.0f} J)")
    plug = sync.get(bench.plug)
    if plug is not None and math.isfinite(float(plug.attrs.get("lag_s", math.nan))):
        a = plug.attrs
        lo, hi = (float(v) for v in a["lag_ci_s"])
        rel = "" if a.get("absolute") else f" relative to {a['reference']}"
        configured = f" (its emulator: {bench.plug_latency_s:.2f} s)" if math.isfinite(bench.plug_latency_s) else ""
        parts.append(f"lag of the plug {a['lag_s']:.2f} s +- {(hi - lo) / 2:.2f} s{rel}{configured}")
    else:
        # said, not left out: a headline without the plug's lag would hide that its sync failed
        parts.append("plug: no response to the sync pulses")
    return "; ".join(parts) + f" [{EMULATED}]"


DEMO_HELP = """Run the whole pipeline on an emulated bench: a real CNN training run under capture,
then sync, analyze, calibrate, validate and report.

\b
Example:
  hwval demo
  hwval demo --quick --workdir /tmp/demo
"""


def short_idle_warning(idle_s: float) -> str | None:
    """Why ``--idle-s`` may be too short for the calibration step, or None when it is long enough."""
    if 2 * idle_s >= MIN_FIT_BINS:
        return None
    return (f"with --idle-s {idle_s:g} the workload's start-up and training together must last at least "
            f"{MIN_FIT_BINS - 2 * idle_s:g} s, or the calibration step finds fewer than {MIN_FIT_BINS} bins "
            "of 1 s in the workload and the demo stops there")


@click.command(help=DEMO_HELP)
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="folder for every file (default: runs/demo-<date>-<time>)")
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True, help="training epochs")
@click.option("--batches", type=click.IntRange(min=1), default=15, show_default=True, help="batches per epoch")
@click.option("--idle-s", type=click.FloatRange(min=0), default=IDLE_S, show_default=True,
              help="idle seconds before and after training (the calibration step needs "
                   f"{MIN_FIT_BINS} s of workload, idle included)")
@click.option("--quick", is_flag=True,
              help="the shortest run the pipeline works on: 2 epochs of 4 batches (an --epochs or "
                   "--batches given beside it still counts)")
@click.pass_context
def demo(ctx, workdir, epochs, batches, idle_s, quick):
    if importlib.util.find_spec("torch") is None:
        raise click.ClickException("the demo trains a small CNN and needs torch: pip install torch==2.13.0")
    if quick:
        # the sync pulses around the training synchronise the streams: the run itself may be short
        if ctx.get_parameter_source("epochs") is click.core.ParameterSource.DEFAULT:
            epochs = 2
        if ctx.get_parameter_source("batches") is click.core.ParameterSource.DEFAULT:
            batches = 4
    if (warning := short_idle_warning(idle_s)) is not None:
        click.secho(f"hwval demo: warning: {warning}", fg="yellow", err=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    work = Path(workdir or f"runs/demo-{stamp}")
    work.mkdir(parents=True, exist_ok=True)
    run_path, report_path, cal_dir = work / "run.h5", work / "report.html", work / "calibration"
    click.secho(f"hwval demo: {EMULATED}; files in {work}/", bold=True)
    bench = start_bench(work)
    click.echo(f"bench: {bench.description}")
    train = ["hwval", "workload", "train", "--epochs", str(epochs), "--batches-per-epoch", str(batches),
             "--eval-batches", "2", "--idle-s", f"{idle_s:g}", "--device", "cpu"]
    capture = ["capture", *[x for spec in bench.meters for x in ("-m", spec)], "--no-rapl", "--no-nvml",
               *(["--sync-pulses"] if bench.sync_pulses else []), "-o", str(run_path),
               "--force", "--no-live", "--", "nice", "-n", str(TRAIN_NICE), sys.executable, "-m", "hwval.cli", *train[1:]]
    try:
        code = run_step(capture, "hwval capture -c lab.toml --sync-pulses -o run.h5 -- python train.py")
    finally:
        bench.stop()
    if code:
        raise click.ClickException(f"the capture exited with {code}; see the output above")
    run = str(run_path)
    ref = bench.reference
    # without pulses each stream would be fitted to the analyzer's power changes (lags relative
    # to it); the emulated lags are well under 1.5 s, and a short range keeps a short run syncable
    sync_args = [] if bench.sync_pulses else ["--reference", ref, "--max-lag-s", "1.5"]
    steps = [
        (["sync", run, *sync_args], "the same", (0,)),
        (["analyze", run, "--reference", ref], "the same", (0,)),
        (["calibrate", run, "--meter", "rapl_package_0", "--reference", ref, "-o", str(cal_dir)],
         "the same, on a bench run with idle and load", (0,)),
        (["analyze", run, "--reference", ref, "--calibration", str(cal_dir)], "the same, on later runs", (0,)),
        (["validate", run, "--candidate", "rapl_package_0", "--reference", ref, "--max-energy-error-pct", "5"],
         "hwval validate run.h5 --candidate emissions.csv", (0, 1)),
        (["report", run, "-o", str(report_path)], "the same", (0,)),
    ]
    for args, real, ok_codes in steps:
        code = run_step(args, real)
        if code not in ok_codes:
            raise click.ClickException(f"`hwval {args[0]}` exited with {code}; see the output above")
    click.echo("")
    click.secho("files:", bold=True)
    records = sorted(cal_dir.glob("*.toml"))
    for what, path in (("run file", run_path), ("calibration record", records[0] if records else cal_dir),
                       ("report", report_path)):
        click.echo(f"  {what:<19} {path}")
    click.echo(f"  {'bench logs, truth':<19} {', '.join(str(p) for p in bench.logs)}")
    click.echo("")
    click.secho(headline(run_path, bench), bold=True)
