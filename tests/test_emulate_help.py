"""Every option of every ``hwval emulate DEVICE`` says what it does in ``--help``."""

from __future__ import annotations

import click
import pytest

from hwval.cli import cli

EMULATE = cli.get_command(click.Context(cli), "emulate")
DEVICES = EMULATE.list_commands(click.Context(EMULATE))


def test_there_are_emulators_to_check():
    assert {"tasmota", "wt300", "powercap"} <= set(DEVICES)


@pytest.mark.parametrize("device", DEVICES)
def test_every_emulator_option_has_help(device):
    command = EMULATE.get_command(click.Context(EMULATE), device)
    bare = [p.opts[0] for p in command.params
            if isinstance(p, click.Option) and not (p.help or "").strip()]
    assert bare == [], f"hwval emulate {device}: options without help text: {bare}"
