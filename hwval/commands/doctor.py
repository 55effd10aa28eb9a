"""``hwval doctor``: what this machine offers for a capture, and how to fix what it lacks."""

from __future__ import annotations

import json

import click

from hwval.doctor import VISA_TIMEOUT_S, run_checks
from hwval.sources.rapl.zones import DEFAULT_POWERCAP_ROOT

CATEGORIES = ("serial", "visa", "nvml", "rapl")


@click.command("doctor")
@click.option("--rapl-root", type=click.Path(file_okay=False), default=DEFAULT_POWERCAP_ROOT,
              show_default=True, help="powercap folder to inspect (e.g. one from 'hwval emulate powercap')")
@click.option("--json", "as_json", is_flag=True, help="print the findings as a JSON list")
@click.option("--visa-timeout-s", type=click.FloatRange(min=0.1), default=VISA_TIMEOUT_S,
              show_default=True, help="give up listing VISA instruments after this long")
@click.option("--only", type=click.Choice(CATEGORIES), multiple=True,
              help="check only these (repeatable); default: all")
def doctor(rapl_root: str, as_json: bool, visa_timeout_s: float, only: tuple[str, ...]) -> None:
    """List serial ports, VISA instruments, NVML GPUs and RAPL domains, and whether each is
    usable by this user, with the fix when it is not. Always exits 0: it reports, it does not
    judge.

    \b
    Example:
      hwval doctor
      hwval doctor --rapl-root /tmp/hwval-powercap-XXXX --json
    """
    findings = run_checks(rapl_root=rapl_root, visa_timeout_s=visa_timeout_s,
                          categories=tuple(c for c in CATEGORIES if not only or c in only))
    if as_json:
        click.echo(json.dumps([f.as_dict() for f in findings], indent=2))
        return
    current = None
    for f in findings:
        if f.category != current:
            current = f.category
            click.echo(f"{current.upper()}")
        mark = "ok " if f.usable else "-- "
        click.echo(f"  {mark}{f.name}" + (f": {f.detail}" if f.detail else ""))
        if f.fix:
            click.echo(f"       fix: {f.fix}")
