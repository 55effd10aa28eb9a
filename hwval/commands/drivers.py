"""``hwval drivers``: every driver and its options, from the drivers' own declarations (the
same rows that validate a spec and generate the README's table)."""

from __future__ import annotations

import json

import click

from hwval.sources.registry import BUILTIN_DRIVERS


@click.command("drivers")
@click.argument("names", nargs=-1, metavar="[DRIVER]...")
@click.option("--json", "as_json", is_flag=True, help="print the declarations as a JSON list")
def drivers(names: tuple[str, ...], as_json: bool) -> None:
    """List the drivers a meter spec may name (-m DRIVER:RESOURCE?option=value&...) with each
    option's accepted values, default and meaning.

    \b
    Examples:
      hwval drivers
      hwval drivers pzem004t --json
    """
    from hwval.sources.options import driver_options

    unknown = [n for n in names if n not in BUILTIN_DRIVERS]
    if unknown:
        raise click.UsageError(f"unknown driver {unknown[0]!r} (known: {', '.join(BUILTIN_DRIVERS)})")
    rows: list[dict] = []
    texts: list[str] = []
    for name in names or tuple(BUILTIN_DRIVERS):
        try:
            declared = driver_options(name)
        except ImportError as exc:  # an optional dependency missing: the others still list
            rows.append({"driver": name, "unavailable": str(exc)})
            texts.append(f"{name}: unavailable here ({exc})")
            continue
        rows.append(declared.as_dict())
        texts.append(declared.help_text())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo("\n\n".join(texts))
