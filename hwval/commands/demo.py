"""``hwval demo``: the pipeline on the emulated bench, end to end, with no hardware.

It starts three emulators as separate processes through the product's own ``hwval emulate``
(a Tasmota plug on a pty as the wall meter, a Yokogawa WT310 on a TCP port as the reference
analyzer, a powercap tree for RAPL), all sharing one bench time zero so they see the same true
power, then captures a real small CNN training job (``hwval.workloads.cnn``) with NVML when a GPU
is present, and prints the run's summary.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import click

from hwval.capture.session import CaptureError, CaptureRequest, run_capture
from hwval.config import CaptureConfig, SoftwareConfig, parse_meter_spec
from hwval.sources.registry import Registry

READY_TIMEOUT_S = 30.0


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


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="folder for the run file and emulator logs (default: runs/demo-<date>-<time>)")
@click.option("--epochs", type=int, default=3, show_default=True, help="training epochs")
@click.option("--batches", type=int, default=15, show_default=True, help="batches per epoch")
@click.option("--idle-s", type=float, default=3.0, show_default=True, help="idle seconds before and after training")
@click.option("--profile", default="steps", show_default=True, help="the bench's true power profile")
def demo(workdir, epochs, batches, idle_s, profile):
    """Run the whole pipeline on the emulated bench: emulators, a real training job under capture,
    and the run's summary.

    \b
    Example:
      hwval demo --epochs 2
    """
    if importlib.util.find_spec("torch") is None:
        raise click.ClickException("the demo trains a small CNN and needs torch: pip install torch==2.13.0")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    work = Path(workdir or f"runs/demo-{stamp}")
    work.mkdir(parents=True, exist_ok=True)
    t0_ns = time.monotonic_ns()
    bench = ["--profile", profile, "--t0-ns", str(t0_ns), "--seed", "1"]
    click.echo(f"hwval demo: bench profile {profile!r}, files in {work}/")
    emulators = [
        # a smart plug: integer watts, ~0.5 s of averaging and latency, like a Tasmota CSE7766 plug
        Emulator("tasmota", work, [*bench, "--window-s", "0.5", "--latency-s", "0.3", "--quantum-w", "1",
                                   "--noise-w", "0.5", "--gain", "1.02"]),
        # the reference analyzer: 0.1 % noise, 0.25 s update interval
        Emulator("wt300", work, [*bench, "--port", "0", "--update-s", "0.25", "--noise-w", "0.05"]),
        Emulator("powercap", work, [*bench, "--root", str(work / "powercap"), "--gain", "0.55"]),
    ]
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        ready = {e.device: e.wait_ready(deadline) for e in emulators}
        registry = Registry()
        meters = (
            parse_meter_spec(f"tasmota:{ready['tasmota']['resource']}?name=wall&period_s=0.5", registry.names()),
            parse_meter_spec(f"wt300:{ready['wt300']['resource']}?name=analyzer", registry.names()),
        )
        config = CaptureConfig(software=SoftwareConfig(nvml=None, rapl=True, rapl_period_s=0.05,
                                                       rapl_root=ready["powercap"]["resource"]),
                               meters=meters)
        output = work / "run.h5"
        command = [sys.executable, "-m", "hwval.workloads.cnn", "--epochs", str(epochs),
                   "--batches", str(batches), "--idle-s", str(idle_s)]
        click.echo(f"capturing: {' '.join(command[2:])}")
        try:
            code = run_capture(CaptureRequest(config=config, command=command, output=str(output),
                                              force=True, registry=registry))
        except CaptureError as exc:
            raise click.ClickException(str(exc)) from None
    finally:
        for e in emulators:
            e.stop()
    from hwval.runfile.info import format_summary, summarize
    from hwval.runfile.reader import open_run

    with open_run(output) as run:
        click.echo("")
        click.echo(format_summary(summarize(run, events_limit=20), max_events=20))
    click.echo("")
    click.echo(f"inspect: hwval info {output} --json")
    if code:
        raise click.ClickException(f"the training workload exited with {code}")
