"""``python -m hwval.workloads.cnn``: the original demo workload's command line, now a thin alias
onto :mod:`hwval.workloads.train` (the VGG-style model on synthetic data).

``--epochs --batches --batch-size --idle-s --seed --device`` keep their old meaning and defaults
(``--batches`` is train's ``--batches-per-epoch``; idle 2 s); any other train option passes
through, e.g. ``python -m hwval.workloads.cnn --batches 5 --arch resnet``. The marks are
train's (see that module), so ``epoch_start``/``epoch`` replace the old ``epoch_start``/``epoch_end``.
"""

from __future__ import annotations

import argparse
import sys

from hwval.workloads import train


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hwval.workloads.cnn",
                                 description="small CNN on synthetic data with hwval marks (alias of "
                                 "hwval.workloads.train; other train options pass through)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batches", type=int, default=20, help="batches per epoch")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--idle-s", type=float, default=2.0, help="idle seconds before and after training")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default: cuda if available)")
    args, rest = ap.parse_known_args(argv)
    return train.main(["--epochs", str(args.epochs), "--batches-per-epoch", str(args.batches),
                       "--batch-size", str(args.batch_size), "--idle-s", str(args.idle_s),
                       "--seed", str(args.seed), "--device", args.device, *rest])


if __name__ == "__main__":
    sys.exit(main())
