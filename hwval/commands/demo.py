"""``hwval demo``: the whole pipeline on an emulated bench, on any machine, in one command.

1. :func:`start_bench` starts the bench: a Tasmota plug on a pty (the wall meter), a Yokogawa
   WT310 on a TCP port (the reference analyzer) and a powercap tree (RAPL), as separate
   ``hwval emulate`` processes sharing one bench time zero, so they see the same true power.
2. ``hwval capture`` records them while a real small CNN trains on the CPU
   (``hwval workload train``, with a mark per epoch and evaluation).
3. ``hwval sync`` (each stream's lag and window), ``hwval analyze`` (every software meter
   against the analyzer), ``hwval calibrate`` (RAPL's gain and offset against it), ``hwval
   analyze --calibration`` (the record applied), ``hwval validate`` (a verdict for RAPL) and
   ``hwval report`` (the HTML report), each run as the command a user would type.

The bench is the one thing a real lab replaces: every later step is the same command on real
meters. Everything the demo prints and writes says the meters are emulated.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import math
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import click

READY_TIMEOUT_S = 30.0
EMULATED = "EMULATED meters (protocol emulators fed by a bench model, not real instruments)"


class Emulator:
    """One ``hwval emulate`` child process, ready once its ``--ready-file`` exists."""

    def __init__(self, device: str, workdir: Path, args: list[str]) -> None:
        self.device = device
        self.ready_file = workdir / f"{device}.ready.json"
        self.log_path = workdir / f"{device}.emulator.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hwval.cli", "emulate", device, *args, "--ready-file", str(self.ready_file)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self, deadline: float) -> dict:
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                return json.loads(self.ready_file.read_text())
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        tail = self.log_path.read_text()[-600:]
        raise click.ClickException(f"the {self.device} emulator did not start; its output:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@dataclass
class Bench:
    """What the capture needs from a bench, and how to stop it."""

    meters: list[str]                 # -m specs
    rapl_root: str
    reference: str                    # the analyzer's stream: the truth of the comparisons
    plug: str                         # the plug's stream
    sync_pulses: bool                 # whether the capture plays sync pulses (the bench follows the host)
    description: str
    logs: list[Path] = field(default_factory=list)
    stop: Callable[[], None] = lambda: None


def start_bench(work: Path, profile: str = "steps") -> Bench:
    """Start the emulated bench; the one place that knows which bench the demo runs on.

    This bench's true power follows a fixed profile (not this machine's load), so sync pulses
    would not show in it: the streams are synchronised against each other instead."""
    t0 = ["--profile", profile, "--t0-ns", str(time.monotonic_ns()), "--seed", "1"]
    emulators = [
        # a smart plug: integer watts, ~0.5 s of averaging and 0.3 s latency, like a CSE7766 plug
        Emulator("tasmota", work, [*t0, "--window-s", "0.5", "--latency-s", "0.3", "--quantum-w", "1",
                                   "--noise-w", "0.5", "--gain", "1.02"]),
        # the reference analyzer: 0.05 W noise, 0.25 s update interval
        Emulator("wt300", work, [*t0, "--port", "0", "--update-s", "0.25", "--noise-w", "0.05"]),
        # RAPL sees 55 % of the wall (the rest: PSU, fans, board, disks)
        Emulator("powercap", work, [*t0, "--root", str(work / "powercap"), "--gain", "0.55"]),
    ]

    def stop() -> None:
        for e in emulators:
            e.stop()

    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        ready = {e.device: e.wait_ready(deadline) for e in emulators}
    except BaseException:
        stop()
        raise
    return Bench(meters=[f"tasmota:{ready['tasmota']['resource']}?name=wall&period_s=0.5",
                         f"wt300:{ready['wt300']['resource']}?name=analyzer"],
                 rapl_root=ready["powercap"]["resource"], reference="analyzer", plug="wall", sync_pulses=False,
                 description=f"profile {profile!r}: a Tasmota plug on a pty, a WT310 on TCP, a powercap tree",
                 logs=[e.log_path for e in emulators], stop=stop)


def run_step(args: list[str], real: str) -> int:
    """Run ``hwval ARGS`` in this process, as typed; returns its exit status."""
    from hwval.cli import cli

    click.echo("")
    click.secho("$ hwval " + " ".join(shlex.quote(a) for a in args), bold=True)
    click.echo(f"  (on real meters: {real})")
    try:
        cli.main(args=args, prog_name="hwval", standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


def headline(run_path: Path, bench: Bench) -> str:
    from hwval.runfile import open_run

    with open_run(run_path) as run:
        analysis = run.read_derived("analysis")
        sync = run.read_derived("sync")
    parts = []
    comp = analysis.get(f"rapl_package_0__vs__{bench.reference}")
    if comp is not None:
        a = comp.attrs
        parts.append(f"RAPL package reads {100 * a['energy_cand_j'] / a['energy_ref_j']:.1f} % of the wall "
                     f"({a['energy_cand_j']:.0f} J of {a['energy_ref_j']:.0f} J)")
    plug = sync.get(bench.plug)
    if plug is not None and math.isfinite(float(plug.attrs.get("lag_s", math.nan))):
        a = plug.attrs
        lo, hi = (float(v) for v in a["lag_ci_s"])
        rel = "" if a.get("absolute") else f" relative to {a['reference']}"
        parts.append(f"lag of the plug {a['lag_s']:.2f} s +- {(hi - lo) / 2:.2f} s{rel}")
    return "; ".join(parts) + f" [{EMULATED}]"


DEMO_HELP = """Run the whole pipeline on an emulated bench: a real CNN training run under capture,
then sync, analyze, calibrate, validate and report.

\b
Example:
  hwval demo
  hwval demo --quick --workdir /tmp/demo
"""


@click.command(help=DEMO_HELP)
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="folder for every file (default: runs/demo-<date>-<time>)")
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True, help="training epochs")
@click.option("--batches", type=click.IntRange(min=1), default=15, show_default=True, help="batches per epoch")
@click.option("--idle-s", type=click.FloatRange(min=0), default=4.0, show_default=True,
              help="idle seconds before and after training")
@click.option("--quick", is_flag=True,
              help="the shortest run the pipeline works on: 2 epochs of 4 batches, 8 s idle either side")
def demo(workdir, epochs, batches, idle_s, quick):
    if importlib.util.find_spec("torch") is None:
        raise click.ClickException("the demo trains a small CNN and needs torch: pip install torch==2.13.0")
    if quick:
        # the streams are synchronised on the run's power changes, which needs >= 15 s of them
        epochs, batches, idle_s = 2, 4, 8.0
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    work = Path(workdir or f"runs/demo-{stamp}")
    work.mkdir(parents=True, exist_ok=True)
    run_path, report_path, cal_dir = work / "run.h5", work / "report.html", work / "calibration"
    click.secho(f"hwval demo: {EMULATED}; files in {work}/", bold=True)
    bench = start_bench(work)
    click.echo(f"bench: {bench.description}")
    train = ["hwval", "workload", "train", "--epochs", str(epochs), "--batches-per-epoch", str(batches),
             "--eval-batches", "2", "--idle-s", f"{idle_s:g}", "--device", "cpu"]
    capture = ["capture", *[x for spec in bench.meters for x in ("-m", spec)], "--rapl", "--rapl-root",
               bench.rapl_root, *(["--sync-pulses"] if bench.sync_pulses else []), "-o", str(run_path),
               "--force", "--no-live", "--", sys.executable, "-m", "hwval.cli", *train[1:]]
    try:
        code = run_step(capture, "hwval capture -c lab.toml -o run.h5 -- python train.py")
    finally:
        bench.stop()
    if code:
        raise click.ClickException(f"the capture exited with {code}; see the output above")
    run = str(run_path)
    ref = bench.reference
    # without pulses each stream is fitted to the analyzer's power changes (lags relative to it);
    # the emulated lags are well under 1.5 s, and a short range keeps a short run syncable
    sync_args = [] if bench.sync_pulses else ["--reference", ref, "--max-lag-s", "1.5"]
    steps = [
        (["sync", run, *sync_args], "the same, after a capture with --sync-pulses", (0,)),
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
    click.echo(f"  {'emulator logs':<19} {', '.join(str(p) for p in bench.logs)}")
    click.echo("")
    click.secho(headline(run_path, bench), bold=True)
