"""``hwval workload train|infer``: the studies' CNN workload (see :mod:`hwval.workloads.train`).

The options come from :data:`hwval.workloads.options.OPTIONS`, the same declaration that
``python -m hwval.workloads.train`` parses, so the two command lines cannot drift apart.
"""

from __future__ import annotations

import sys

import click

from hwval.workloads.options import OPTIONS


def _with_options(mode: str):
    def decorate(func):
        for opt in reversed([o for o in OPTIONS if mode in o.modes]):
            kind = click.Choice(opt.choices) if opt.choices else opt.type
            default = f" [default: {opt.default}]" if opt.default is not None else ""
            func = click.option(opt.flag, opt.dest, type=kind, default=None, help=opt.help + default)(func)
        return func
    return decorate


def _run(mode: str, values: dict) -> None:
    from hwval.workloads.train import run_cli

    code = run_cli(mode, values)
    if code:
        sys.exit(code)


@click.group()
def workload() -> None:
    """The studies' workloads: CNN training and inference with hwval marks.

    \b
    Example:
      hwval capture -m tasmota:/dev/ttyUSB0 -o runs/resnet.h5 -- hwval workload train --arch resnet --idle-s 5
    """


@workload.command()
@_with_options("train")
def train(**values):
    """Train a small VGG/ResNet/MobileNet/DenseNet-style CNN, marking every epoch and evaluation.

    \b
    Example:
      hwval workload train --arch mobilenet --width 32 --epochs 5 --json-out runs/mobilenet.json
      hwval workload train --data ~/datasets/flowers --save flowers.pt
    """
    _run("train", values)


@workload.command()
@_with_options("infer")
def infer(**values):
    """Run inference passes over the evaluation data, marking every pass.

    \b
    Example:
      hwval workload infer --arch resnet --epochs 10 --batch-size 256
      hwval workload infer --data ~/datasets/flowers --checkpoint flowers.pt
    """
    _run("infer", values)
