"""The training (and inference) workload the energy studies run, with hwval marks for every phase.

``python -m hwval.workloads.train --arch resnet --epochs 5`` (or ``hwval workload train ...``;
``--mode infer`` / ``hwval workload infer`` for the inference phase). Under ``hwval capture``
the marks below land in the run file's events on the capture's monotonic timebase; outside a
capture they cost nothing.

Marks (``detail`` keys in brackets; epochs and passes count from 1):

- ``idle_before`` [seconds] ... ``idle_after`` [seconds]: the idle periods (``--idle-s``).
- ``train_start`` [mode, arch, width, depth, params, macs, macs_conv, macs_linear, device, data,
  batch_size, batches_per_epoch, epochs, optimizer, lr, seed, threads, torch]
- ``epoch_start`` [epoch, phase="train"], then ``epoch`` [epoch, phase="train", loss, accuracy,
  samples, batches, duration_s, samples_per_s] when it ends: epoch k's interval is between them.
- ``eval_start`` [epoch, phase="eval"], ``eval`` [epoch, phase="eval", loss, accuracy, samples,
  batches, duration_s, samples_per_s] after each epoch (unless ``--eval-batches 0``).
- ``train_end`` [epochs, samples, duration_s, loss, accuracy, eval_loss, eval_accuracy, params, macs]
- infer mode: ``infer_start`` [as train_start], per pass ``infer_pass_start`` [pass] and
  ``infer_pass`` [pass, phase="infer", loss, accuracy, samples, batches, duration_s,
  samples_per_s], then ``infer_end`` [passes, samples, duration_s, samples_per_s].

On CUDA every mark waits for the device to finish the work queued before it, so a mark sits at
the moment the work really ended. ``--json-out`` holds the same records plus the CLOCK_MONOTONIC
start/end of each (``start_ns``/``end_ns``, the clock run files count from).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import hwval
from hwval.workloads.data import DataError, Dataset, load_dataset
from hwval.workloads.options import MODES, OPTIONS, WorkloadConfig, WorkloadError, config_from_options

JSON_FORMAT = "hwval-workload-metrics"
JSON_VERSION = 1


def import_torch():
    try:
        import torch
    except ImportError:
        raise WorkloadError("the training workload needs torch: pip install torch==2.13.0 (the CPU build; a plain "
                            "'torch' pulls a multi-GB CUDA build)") from None
    return torch


def resolve_device(torch, spec: str):
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise WorkloadError(f"--device {spec}: CUDA is not available here (torch {torch.__version__}); "
                                "use --device cpu or auto")
        index = int(spec[5:]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise WorkloadError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device(spec)


class BatchCursor:
    """Endless full-size batches of indices: a fresh seeded permutation whenever one runs out, so
    epochs of any length see every sample equally often and every batch costs the same."""

    def __init__(self, torch, n: int, batch_size: int, generator) -> None:
        self.torch, self.n, self.batch_size, self.gen = torch, n, min(batch_size, n), generator
        self.buffer = torch.empty(0, dtype=torch.long)

    def next(self):
        while len(self.buffer) < self.batch_size:
            self.buffer = self.torch.cat([self.buffer, self.torch.randperm(self.n, generator=self.gen)])
        batch, self.buffer = self.buffer[:self.batch_size], self.buffer[self.batch_size:]
        return batch


class MetricsLog:
    """The --json-out file, rewritten (atomically) after every record so a killed run keeps its epochs."""

    def __init__(self, path: str | None, header: dict[str, Any]) -> None:
        self.path = Path(path) if path else None
        self.doc = {"format": JSON_FORMAT, "version": JSON_VERSION, **header, "epochs": [], "passes": [],
                    "summary": None}

    def add(self, key: str, record: dict[str, Any]) -> None:
        self.doc[key].append(record)
        self.write()

    def finish(self, summary: dict[str, Any]) -> None:
        self.doc["summary"] = summary
        self.write()

    def write(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.doc, indent=1))
        os.replace(tmp, self.path)


class Workload:
    def __init__(self, config: WorkloadConfig, out=None) -> None:
        self.cfg = config
        self.out = out  # None: sys.stdout at the time of writing
        # Data first: its errors need no torch and come at once.
        self.data: Dataset = load_dataset(config.data, eval_fraction=config.eval_fraction, seed=config.seed,
                                          **config.synthetic_options())
        torch = self.torch = import_torch()
        # The first optimizer step imports torch._dynamo (1-2 s of CPU): import it here, before
        # any mark, so epoch 1 is not charged for it.
        import torch._dynamo  # noqa: F401
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = resolve_device(torch, config.device)
        torch.manual_seed(config.seed)
        from hwval.workloads.complexity import count_macs, count_parameters
        from hwval.workloads.models import ARCHS, build_model

        self.depth = ARCHS[config.arch].default_depth if config.depth is None else config.depth
        self.model = build_model(config.arch, config.width, self.depth, self.data.sample_shape[0],
                                 self.data.classes).to(self.device)
        if config.checkpoint:
            self.load_checkpoint(config.checkpoint)
        self.params = count_parameters(self.model)
        self.macs = count_macs(self.model, self.data.sample_shape, self.device)
        self.loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
        self.gen = torch.Generator().manual_seed(config.seed)
        self.x_train = torch.from_numpy(self.data.x_train).to(self.device)
        self.y_train = torch.from_numpy(self.data.y_train).to(self.device)
        self.x_eval = torch.from_numpy(self.data.x_eval).to(self.device)
        self.y_eval = torch.from_numpy(self.data.y_eval).to(self.device)

    # ------------------------------------------------------------ shared

    def describe(self) -> dict[str, Any]:
        cfg = self.cfg
        return {"mode": cfg.mode, "arch": cfg.arch, "width": cfg.width, "depth": self.depth,
                "params": self.params, "macs": self.macs.total, "macs_conv": self.macs.by_kind["conv"],
                "macs_linear": self.macs.by_kind["linear"], "device": str(self.device),
                "device_name": self._device_name(), "data": self.data.describe(), "batch_size": cfg.batch_size,
                "batches_per_epoch": self.batches_per_epoch(), "epochs": cfg.epochs, "seed": cfg.seed,
                "threads": self.torch.get_num_threads(), "torch": self.torch.__version__,
                **({"optimizer": cfg.optimizer, "lr": cfg.learning_rate, "weight_decay": cfg.weight_decay}
                   if cfg.mode == "train" else {"checkpoint": cfg.checkpoint})}

    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return self.torch.cuda.get_device_name(self.device)
        return "cpu"

    def batches_per_epoch(self) -> int:
        if self.cfg.batches_per_epoch:
            return self.cfg.batches_per_epoch
        if self.cfg.mode == "infer":  # in order, the last batch may be short: every sample once
            return math.ceil(len(self.infer_set()[1]) / self.cfg.batch_size)
        n = len(self.y_train)  # full-size shuffled batches (see BatchCursor)
        return max(1, n // min(self.cfg.batch_size, n))

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def mark(self, name: str, **detail: Any) -> int:
        """Sync the device, mark, return the CLOCK_MONOTONIC instant (ns) for the JSON log."""
        self.sync()
        hwval.mark(name, **detail)
        return time.monotonic_ns()

    def idle(self, name: str) -> None:
        self.mark(name, seconds=self.cfg.idle_s)
        if self.cfg.idle_s > 0:
            time.sleep(self.cfg.idle_s)

    def say(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def evaluate(self, x, y, batches: int | None, phase: str) -> dict[str, Any]:
        """Loss and accuracy over ``batches`` batches of (x, y) in order (None: all of it)."""
        torch, bs = self.torch, self.cfg.batch_size
        total = math.ceil(len(y) / bs)
        batches = total if batches is None else batches
        self.model.eval()
        loss_sum, correct, seen = 0.0, 0, 0
        t0 = time.perf_counter()
        with torch.inference_mode():
            for b in range(batches):
                lo = (b % total) * bs
                xb, yb = x[lo:lo + bs], y[lo:lo + bs]
                logits = self.model(xb)
                loss_sum += float(self.loss_fn(logits, yb))
                correct += int((logits.argmax(1) == yb).sum())
                seen += len(yb)
        self.sync()
        duration = time.perf_counter() - t0
        return {"phase": phase, "loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1),
                "samples": seen, "batches": batches, "duration_s": duration,
                "samples_per_s": seen / duration if duration > 0 else float("nan")}

    # ------------------------------------------------------------ train

    def optimizer(self):
        optim, cfg = self.torch.optim, self.cfg
        params = self.model.parameters()
        if cfg.optimizer == "sgd":
            return optim.SGD(params, lr=cfg.learning_rate, momentum=0.9, weight_decay=cfg.weight_decay)
        cls = optim.Adam if cfg.optimizer == "adam" else optim.AdamW
        return cls(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

    def train(self) -> dict[str, Any]:
        cfg, torch = self.cfg, self.torch
        log = MetricsLog(cfg.json_out, {"mode": "train", "config": cfg.as_dict(), "workload": self.describe()})
        opt = self.optimizer()
        cursor = BatchCursor(torch, len(self.y_train), cfg.batch_size, self.gen)
        n_batches = self.batches_per_epoch()
        eval_batches = cfg.eval_batches
        do_eval = len(self.y_eval) > 0 and eval_batches != 0
        self.idle("idle_before")
        self.mark("train_start", **self.describe())
        t_train = time.perf_counter()
        result: dict[str, Any] = {}
        samples_total = 0
        for epoch in range(1, cfg.epochs + 1):
            start_ns = self.mark("epoch_start", epoch=epoch, phase="train")
            self.model.train()
            loss_sum, correct, seen = 0.0, 0, 0
            t0 = time.perf_counter()
            for _ in range(n_batches):
                idx = cursor.next().to(self.device)
                xb, yb = self.x_train[idx], self.y_train[idx]
                opt.zero_grad(set_to_none=True)
                logits = self.model(xb)
                loss = self.loss_fn(logits, yb)
                (loss / len(yb)).backward()
                opt.step()
                loss_sum += float(loss.detach())
                correct += int((logits.detach().argmax(1) == yb).sum())
                seen += len(yb)
            self.sync()
            duration = time.perf_counter() - t0
            samples_total += seen
            result = {"epoch": epoch, "phase": "train", "loss": loss_sum / seen, "accuracy": correct / seen,
                      "samples": seen, "batches": n_batches, "duration_s": duration,
                      "samples_per_s": seen / duration if duration > 0 else float("nan")}
            end_ns = self.mark("epoch", **result)
            record = {**result, "start_ns": start_ns, "end_ns": end_ns}
            line = f"epoch {epoch}/{cfg.epochs}: loss {result['loss']:.4f} accuracy {result['accuracy']:.3f} " \
                   f"({duration:.2f} s)"
            if do_eval:
                e_start = self.mark("eval_start", epoch=epoch, phase="eval")
                ev = {"epoch": epoch, **self.evaluate(self.x_eval, self.y_eval, eval_batches, "eval")}
                e_end = self.mark("eval", **ev)
                record["eval"] = {**ev, "start_ns": e_start, "end_ns": e_end}
                result["eval"] = ev
                line += f"; eval loss {ev['loss']:.4f} accuracy {ev['accuracy']:.3f}"
            log.add("epochs", record)
            self.say(line)
        summary = {"epochs": cfg.epochs, "samples": samples_total, "duration_s": time.perf_counter() - t_train,
                   "loss": result["loss"], "accuracy": result["accuracy"],
                   "eval_loss": result.get("eval", {}).get("loss"),
                   "eval_accuracy": result.get("eval", {}).get("accuracy"),
                   "params": self.params, "macs": self.macs.total}
        self.mark("train_end", **summary)
        if cfg.save:
            self.save_checkpoint(cfg.save)
        self.idle("idle_after")
        log.finish(summary)
        return summary

    # ------------------------------------------------------------ infer

    def infer_set(self):
        # Inference runs on data the model did not train on; without an evaluation split, on the rest.
        if len(self.y_eval):
            return self.x_eval, self.y_eval
        return self.x_train, self.y_train

    def infer(self) -> dict[str, Any]:
        cfg = self.cfg
        log = MetricsLog(cfg.json_out, {"mode": "infer", "config": cfg.as_dict(), "workload": self.describe()})
        x, y = self.infer_set()
        n_batches = self.batches_per_epoch()
        self.idle("idle_before")
        self.mark("infer_start", **self.describe())
        t_all = time.perf_counter()
        samples = 0
        for k in range(1, cfg.epochs + 1):
            start_ns = self.mark("infer_pass_start", **{"pass": k})
            res = {"pass": k, **self.evaluate(x, y, n_batches, "infer")}
            end_ns = self.mark("infer_pass", **res)
            samples += res["samples"]
            log.add("passes", {**res, "start_ns": start_ns, "end_ns": end_ns})
            self.say(f"pass {k}/{cfg.epochs}: {res['samples']} samples in {res['duration_s']:.2f} s "
                     f"({res['samples_per_s']:.0f}/s), accuracy {res['accuracy']:.3f}")
        duration = time.perf_counter() - t_all
        summary = {"passes": cfg.epochs, "samples": samples, "duration_s": duration,
                   "samples_per_s": samples / duration if duration > 0 else float("nan"),
                   "params": self.params, "macs": self.macs.total}
        self.mark("infer_end", **summary)
        self.idle("idle_after")
        log.finish(summary)
        return summary

    # ------------------------------------------------------------ checkpoints

    def model_spec(self) -> dict[str, Any]:
        return {"arch": self.cfg.arch, "width": self.cfg.width, "depth": self.depth,
                "sample_shape": list(self.data.sample_shape), "classes": self.data.classes}

    def save_checkpoint(self, path: str) -> None:
        self.torch.save({"format": "hwval-workload-checkpoint", "model": self.model_spec(),
                         "state_dict": self.model.state_dict()}, path)

    def load_checkpoint(self, path: str) -> None:
        try:
            ckpt = self.torch.load(path, map_location=self.device, weights_only=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise WorkloadError(f"--checkpoint {path}: cannot be read ({exc})") from None
        if not isinstance(ckpt, dict) or ckpt.get("format") != "hwval-workload-checkpoint":
            raise WorkloadError(f"--checkpoint {path}: not a checkpoint written by 'hwval workload train --save'")
        want, have = ckpt["model"], self.model_spec()
        if want != have:
            diff = ", ".join(f"{k} {want.get(k)} (here {have.get(k)})" for k in have if want.get(k) != have.get(k))
            raise WorkloadError(f"--checkpoint {path}: saved for a different model or data: {diff}; pass the "
                                "same --arch/--width/--depth and data")
        self.model.load_state_dict(ckpt["state_dict"])


def run(config: WorkloadConfig, out=None) -> dict[str, Any]:
    """Run the workload; returns its summary. Raises WorkloadError / DataError for bad input."""
    workload = Workload(config, out=out)
    return workload.train() if config.mode == "train" else workload.infer()


def build_parser(prog: str = "python -m hwval.workloads.train") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="CNN training/inference workload with hwval marks "
                                 "(same options as `hwval workload train|infer`)")
    ap.add_argument("--mode", choices=MODES, default="train", help="train (default) or infer")
    for opt in OPTIONS:
        ap.add_argument(opt.flag, type=opt.type, default=None, choices=opt.choices,
                        help=f"{opt.help}" + (f" [default: {opt.default}]" if opt.default is not None else ""))
    return ap


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    mode = args.pop("mode")
    return run_cli(mode, args)


def run_cli(mode: str, values: dict[str, Any]) -> int:
    """Shared by argparse and click: one-line errors (exit 2), Ctrl-C marked and exit 130."""
    try:
        defaults = {o.dest: o.default for o in OPTIONS}
        merged = {k: (v if v is not None else defaults.get(k)) for k, v in values.items()}
        run(config_from_options(mode, merged))
    except (WorkloadError, DataError) as exc:
        print(f"hwval: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hwval.mark(f"{mode}_abort", reason="interrupted")
        print("hwval: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
