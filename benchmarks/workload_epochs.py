"""Per-architecture size and CPU training time of `hwval workload train` at its default settings.

For each family at the default width (16) and depth: trainable parameters, MACs per sample
(forward), and the wall time of each training epoch (2048 synthetic CIFAR-shaped samples,
batch 64, 32 batches, SGD) and of each evaluation (512 samples), as the workload itself
reports them in its --json-out file. Each architecture runs in its own process, one after the
other, so none shares the CPU with another.

    python benchmarks/workload_epochs.py [--epochs 3] [--threads N] [--arch vgg --arch resnet ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ARCHS = ("vgg", "resnet", "mobilenet", "densenet")


def measure(arch: str, epochs: int, threads: int | None, workdir: str) -> dict:
    out = os.path.join(workdir, f"{arch}.json")
    cmd = [sys.executable, "-m", "hwval.workloads.train", "--arch", arch, "--epochs", str(epochs),
           "--json-out", out]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k != "HWVAL_MARK_SOCKET"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    with open(out) as f:
        doc = json.load(f)
    train_s = [e["duration_s"] for e in doc["epochs"]]
    eval_s = [e["eval"]["duration_s"] for e in doc["epochs"]]
    w = doc["workload"]
    return {"arch": arch, "params": w["params"], "macs": w["macs"], "threads": w["threads"],
            "epoch_s": train_s, "epoch_median_s": statistics.median(train_s),
            "eval_median_s": statistics.median(eval_s),
            "eval_accuracy": [round(e["eval"]["accuracy"], 3) for e in doc["epochs"]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--arch", action="append", choices=ARCHS)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work:
        rows = [measure(a, args.epochs, args.threads, work) for a in (args.arch or ARCHS)]
    print(f"1-min load average before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f}")
    print("| arch | parameters | MACs / sample | train epoch (median, s) | eval (s) | eval accuracy by epoch |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['params']:,} | {r['macs'] / 1e6:.2f} M | {r['epoch_median_s']:.2f} "
              f"({', '.join(f'{s:.2f}' for s in r['epoch_s'])}) | {r['eval_median_s']:.2f} | "
              f"{', '.join(map(str, r['eval_accuracy']))} |")
    print(f"threads: {rows[0]['threads']}")


if __name__ == "__main__":
    main()
