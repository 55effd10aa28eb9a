"""Thin click layer: parse, call the library, print. Errors the operator must act on are one
line on stderr and exit code 2."""

from __future__ import annotations

import importlib
import sys
from typing import NoReturn

import click

from hwval import __version__
from hwval.emulators import EMULATORS


class LazyGroup(click.Group):
    """A group whose subcommands are ``module:attribute`` strings imported on first use."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self._lazy = lazy

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self._lazy))

    def get_command(self, ctx, name):
        if name in self._lazy:
            module_name, _, attr = self._lazy[name].partition(":")
            try:
                return getattr(importlib.import_module(module_name), attr)
            except ImportError as exc:
                # Listed but not loadable (a missing optional dependency): say so when used,
                # and keep `--help` of the group working.
                return _unavailable(name, exc)
        return super().get_command(ctx, name)


def _unavailable(name: str, exc: Exception) -> click.Command:
    def fail_now():
        raise click.ClickException(f"{name!r} is unavailable here: {exc}")

    return click.Command(name, callback=fail_now, help=f"(unavailable: {exc})",
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True})


COMMANDS = {
    "doctor": "hwval.commands.doctor:doctor",
    "drivers": "hwval.commands.drivers:drivers",
    "demo": "hwval.commands.demo:demo",
    "workload": "hwval.commands.workload:workload",
    "analyze": "hwval.commands.analyze:analyze",
    "calibrate": "hwval.commands.calibrate:calibrate",
    "validate": "hwval.commands.validate:validate",
    "predict": "hwval.commands.predict:predict",
    "sweep": "hwval.commands.sweep:sweep",
    "sync": "hwval.commands.sync:sync",
    "characterize": "hwval.commands.sync:characterize",
    "report": "hwval.commands.report:report",
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hwval")
def cli() -> None:
    """hwval: how far are software energy meters from the wall?

    \b
    Example:
      hwval capture -m tasmota:/dev/ttyUSB0 -o run.h5 -- python train.py
      hwval info run.h5
    """


@cli.group(cls=LazyGroup, lazy=EMULATORS)
def emulate() -> None:
    """Run a protocol-exact emulator and print the resource to use.

    \b
    Example:
      hwval emulate tasmota --profile idle-load
      hwval capture -m tasmota:/tmp/hwval-emu-XXXX/tty --duration 10 -o dry.h5
    """


EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_USAGE) -> "NoReturn":
    """One line on stderr, then exit: the form every operator-facing error takes."""
    click.echo(f"hwval: error: {message}", err=True)
    sys.exit(code)


@cli.command(context_settings={"ignore_unknown_options": False})
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="lab TOML file (meters, software meters, output template)")
@click.option("-m", "--meter", "meter_specs", multiple=True, metavar="SPEC",
              help="DRIVER:RESOURCE[?key=value&...]; repeatable (options: hwval drivers)")
@click.option("--nvml/--no-nvml", default=None, help="record NVIDIA GPUs (default: when available)")
@click.option("--rapl/--no-rapl", default=None, help="record RAPL domains (default: when readable)")
@click.option("--rapl-root", type=click.Path(file_okay=False), default=None,
              help="powercap tree to read (default /sys/class/powercap; see hwval emulate powercap)")
@click.option("--sync-pulses/--no-sync-pulses", default=False,
              help="drive load pulses for lag estimation (not available yet: arrives with `hwval sync`)")
@click.option("--duration", "duration_s", type=float, default=None, metavar="S",
              help="capture for S seconds (with a command: terminate it after S seconds)")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="run file to write (default from the config: runs/{date}-{time}.h5)")
@click.option("--force", is_flag=True, help="overwrite an existing output file")
@click.option("--live/--no-live", default=None, help="live terminal view (default: when stdout is a TTY)")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def capture(config_path, meter_specs, nvml, rapl, rapl_root, sync_pulses, duration_s, output, force, live,
            command):
    """Record every source while COMMAND runs (or for --duration) into one HDF5 run file.

    Exits with COMMAND's exit code; 2 for bad input; 127/126 when COMMAND cannot be found or run.

    \b
    Example:
      hwval capture -c lab.toml -o runs/resnet.h5 -- python train.py --epochs 3
      hwval capture -m tasmota:/dev/ttyUSB0 -m 'wt300:TCPIP::10.0.0.5::INSTR?name=ref' --duration 60
    """
    from dataclasses import replace

    from hwval.capture.session import CaptureError, CaptureRequest, run_capture
    from hwval.capture.workload import CommandError
    from hwval.config import CaptureConfig, ConfigError, load_config, parse_meter_spec
    from hwval.sources.registry import Registry

    if sync_pulses:
        # In the design's contract, but the pulse generator and `hwval sync` are not built yet:
        # refuse rather than record a run the operator believes has pulses in it.
        fail("--sync-pulses is not available in this version (it arrives with `hwval sync`); "
             "capture without it")
    registry = Registry()
    try:
        config = load_config(config_path, registry.names()) if config_path else CaptureConfig()
        config = config.with_meters(parse_meter_spec(s, registry.names()) for s in meter_specs)
        sw = config.software
        sw = replace(sw, nvml=sw.nvml if nvml is None else nvml, rapl=sw.rapl if rapl is None else rapl,
                     rapl_root=rapl_root or sw.rapl_root)
        config = replace(config, software=sw)
        request = CaptureRequest(config=config, command=list(command), duration_s=duration_s,
                                 output=output, force=force, live=live, registry=registry)
        code = run_capture(request)
    except (ConfigError, CaptureError) as exc:
        fail(str(exc))
    except CommandError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        # Ctrl-C while meters were still opening: nothing was recorded, no file exists.
        fail("interrupted before the capture started", 130)
    sys.exit(code)


@cli.command()
@click.argument("run_path", metavar="RUN.h5", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def info(run_path, as_json):
    """Streams (samples, mean rate, gaps), events and completeness of a run file.

    \b
    Example:
      hwval info runs/20261127-101500.h5 --json
    """
    from hwval.runfile.info import format_summary, summarize, write_json
    from hwval.runfile.reader import RunFileError, open_run, recover_hint_for

    try:
        with open_run(run_path) as run:
            if as_json:  # written as read: a million events never sit in memory at once
                write_json(run, sys.stdout)
                return
            summary = summarize(run, events_limit=INFO_EVENTS_SHOWN)
    except RunFileError as exc:
        fail(str(exc))
    except (OSError, KeyError) as exc:
        # The file opened but a dataset cannot be read: a capture killed in the middle of an
        # HDF5 write can leave that; the journal (when there) still has everything.
        fail(f"{run_path}: damaged run file ({type(exc).__name__}: {exc}){recover_hint_for(run_path)}")
    click.echo(format_summary(summary, max_events=INFO_EVENTS_SHOWN))


#: Events ``hwval info`` lists (``--json`` gives them all).
INFO_EVENTS_SHOWN = 40


@cli.command()
@click.argument("run_path", metavar="RUN.h5", type=click.Path(dir_okay=False))
def recover(run_path):
    """Rebuild a run file from its crash journal (RUN.h5.journal) after a killed capture.

    The journal is merged with what the run file holds (never fewer readings); the result keeps
    complete=false unless the journal holds the capture's clean stop, and gets recovered=true.

    \b
    Example:
      hwval recover runs/20261127-101500.h5 && hwval info runs/20261127-101500.h5
    """
    from hwval.runfile.journal import JournalInUse, journal_path
    from hwval.runfile.reader import RunFileError, open_run
    from hwval.runfile.recover import RecoverError, describe, recover as do_recover

    if not journal_path(run_path).exists():
        try:
            with open_run(run_path):
                state = "the run file opens as it is"
        except RunFileError as exc:
            state = f"the run file: {exc}"
        fail(f"{run_path}: no crash journal ({journal_path(run_path)}) to recover from; {state}")
    try:
        summary = do_recover(run_path)
    except (JournalInUse, RecoverError) as exc:
        fail(str(exc))
    except OSError as exc:  # e.g. the folder is full or read-only: the run file was not touched
        fail(f"{run_path}: recovery failed, the run file is unchanged: {exc}")
    click.echo(describe(summary, run_path))


def main() -> None:
    cli(prog_name="hwval")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
