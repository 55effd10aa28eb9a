"""The training workload's options, declared once: they feed ``python -m hwval.workloads.train``
(argparse), ``hwval workload train|infer`` (click), validation and the README table.

No torch here, so ``hwval --help`` stays fast and works without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

ARCH_NAMES = ("vgg", "resnet", "mobilenet", "densenet")
OPTIMIZERS = ("sgd", "adam", "adamw")
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}
MODES = ("train", "infer")


class WorkloadError(ValueError):
    """Bad options or an unusable environment (no torch, no CUDA): one line for the operator."""


@dataclass(frozen=True)
class Option:
    flag: str                 # "--batch-size"
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    modes: tuple[str, ...] = MODES
    minimum: float | None = None

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("--arch", str, "vgg", "model family", choices=ARCH_NAMES),
    Option("--width", int, 16, "channels of the first stage (later stages double it)", minimum=1),
    Option("--depth", int, None, "repeats per stage: vgg convs (2), resnet blocks (2), mobilenet blocks (2), "
           "densenet layers per block (4)", minimum=1),
    Option("--epochs", int, 3, "training epochs (infer: passes over the data)", minimum=1),
    Option("--batch-size", int, 64, "samples per batch", minimum=1),
    Option("--batches-per-epoch", int, None, "batches per epoch (default: one pass over the training set; "
           "infer: over the evaluation set)", minimum=1),
    Option("--eval-batches", int, None, "evaluation batches after each epoch (default: the whole evaluation "
           "set; 0: no evaluation)", modes=("train",), minimum=0),
    Option("--lr", float, None, "learning rate (default: sgd 0.05, adam/adamw 0.001)", modes=("train",),
           minimum=0.0),
    Option("--optimizer", str, "sgd", "optimizer (sgd with momentum 0.9)", choices=OPTIMIZERS, modes=("train",)),
    Option("--weight-decay", float, 0.0, "L2 weight decay", modes=("train",), minimum=0.0),
    Option("--seed", int, 0, "seed for data, initial weights and batch order"),
    Option("--data", str, "synthetic", "'synthetic', a folder with one sub-folder per class, or an .npz file"),
    Option("--train-samples", int, None, "synthetic data: training samples (2048)", minimum=1),
    Option("--eval-samples", int, None, "synthetic data: evaluation samples (512)", minimum=0),
    Option("--classes", int, None, "synthetic data: classes (10)", minimum=2),
    Option("--image-size", int, None, "synthetic data: image side in pixels (32)", minimum=8),
    Option("--eval-fraction", float, 0.2, "folder/.npz data without a test split: share held out for evaluation",
           minimum=0.0),
    Option("--device", str, "auto", "auto (cuda when available), cpu, cuda or cuda:N"),
    Option("--threads", int, None, "CPU threads for torch (default: torch's choice)", minimum=1),
    Option("--idle-s", float, 0.0, "seconds of idle before and after the work (gives analysis its idle phases)",
           minimum=0.0),
    Option("--json-out", str, None, "write per-epoch metrics to this JSON file (rewritten after every epoch)"),
    Option("--save", str, None, "save the trained weights to this file (for infer --checkpoint)",
           modes=("train",)),
    Option("--checkpoint", str, None, "weights saved by train --save (default: fresh weights from --seed)",
           modes=("infer",)),
)

SYNTHETIC_DEFAULTS = {"train_samples": 2048, "eval_samples": 512, "classes": 10, "image_size": 32}


@dataclass(frozen=True)
class WorkloadConfig:
    mode: str = "train"
    arch: str = "vgg"
    width: int = 16
    depth: int | None = None
    epochs: int = 3
    batch_size: int = 64
    batches_per_epoch: int | None = None
    eval_batches: int | None = None
    lr: float | None = None
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    seed: int = 0
    data: str = "synthetic"
    train_samples: int | None = None
    eval_samples: int | None = None
    classes: int | None = None
    image_size: int | None = None
    eval_fraction: float = 0.2
    device: str = "auto"
    threads: int | None = None
    idle_s: float = 0.0
    json_out: str | None = None
    save: str | None = None
    checkpoint: str | None = None

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr

    def synthetic_options(self) -> dict[str, int]:
        return {k: (getattr(self, k) if getattr(self, k) is not None else v) for k, v in SYNTHETIC_DEFAULTS.items()}

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def config_from_options(mode: str, values: dict[str, Any]) -> WorkloadConfig:
    """Check option values (by dest name; None = not given) and build the config.

    Raises WorkloadError naming the option and what it accepts.
    """
    if mode not in MODES:
        raise WorkloadError(f"--mode must be one of {', '.join(MODES)} (got {mode!r})")
    by_dest = {o.dest: o for o in OPTIONS}
    given = {k for k, v in values.items() if v is not None and k in by_dest and v != by_dest[k].default}
    for dest in given:
        opt = by_dest[dest]
        if mode not in opt.modes:
            raise WorkloadError(f"{opt.flag} applies to {'/'.join(opt.modes)} only, not {mode}")
    for dest, value in values.items():
        opt = by_dest.get(dest)
        if opt is None or value is None:
            continue
        if opt.choices and value not in opt.choices:
            raise WorkloadError(f"{opt.flag} must be one of {', '.join(opt.choices)} (got {value!r})")
        if opt.minimum is not None and value < opt.minimum:
            raise WorkloadError(f"{opt.flag} must be at least {opt.minimum:g} (got {value})")
    if not values.get("eval_fraction", 0.2) < 1.0:
        raise WorkloadError(f"--eval-fraction must be below 1 (got {values['eval_fraction']})")
    if values.get("data", "synthetic") != "synthetic":
        for dest in SYNTHETIC_DEFAULTS:
            if values.get(dest) is not None:
                raise WorkloadError(f"{by_dest[dest].flag} applies to --data synthetic only (got --data "
                                    f"{values['data']})")
    device = values.get("device") or "auto"
    if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
        raise WorkloadError(f"--device must be auto, cpu, cuda or cuda:N (got {device!r})")
    known = {k: v for k, v in values.items() if k in by_dest and v is not None}
    return WorkloadConfig(mode=mode, **known)
