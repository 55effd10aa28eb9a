"""A small CNN trained on synthetic CIFAR-shaped data: a real training job for demos and
calibration runs that needs no dataset download.

``python -m hwval.workloads.cnn --epochs 3 --batches 20`` marks ``epoch_start``/``epoch_end``
(with loss and samples) through :func:`hwval.mark`, so a capture sees the phases. An idle period
before and after (``--idle-s``) gives the power trace the idle/load/idle shape that lag
estimation needs. Runs on CUDA when available, else the CPU.
"""

from __future__ import annotations

import argparse
import time

import hwval


def build_model(torch, channels: int = 32, classes: int = 10):
    nn = torch.nn
    # VGG-style blocks: the convolutional layers dominate the energy, as in the seed studies.
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * channels * 8 * 8, 128), nn.ReLU(), nn.Linear(128, classes),
    )


def train(epochs: int, batches: int, batch_size: int, idle_s: float, seed: int, device: str | None) -> float:
    import torch

    torch.manual_seed(seed)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_model(torch).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    # Synthetic but learnable: the label is a function of the image, so the loss falls.
    x = torch.randn(batches * batch_size, 3, 32, 32, device=dev)
    y = (x[:, 0].mean(dim=(1, 2)) > 0).long() + 2 * (x[:, 1].mean(dim=(1, 2)) > 0).long()
    hwval.mark("idle_before", seconds=idle_s)
    time.sleep(idle_s)
    loss_value = float("nan")
    for epoch in range(epochs):
        hwval.mark("epoch_start", epoch=epoch)
        total = 0.0
        for b in range(batches):
            xb = x[b * batch_size:(b + 1) * batch_size]
            yb = y[b * batch_size:(b + 1) * batch_size]
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        if dev.type == "cuda":
            torch.cuda.synchronize()
        loss_value = total / batches
        hwval.mark("epoch_end", epoch=epoch, loss=loss_value, samples=batches * batch_size)
        print(f"epoch {epoch}: loss {loss_value:.4f}", flush=True)
    hwval.mark("idle_after", seconds=idle_s)
    time.sleep(idle_s)
    return loss_value


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="small CNN on synthetic data, with hwval marks")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--idle-s", type=float, default=2.0, help="idle seconds before and after training")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    args = ap.parse_args(argv)
    train(args.epochs, args.batches, args.batch_size, args.idle_s, args.seed, args.device)


if __name__ == "__main__":
    main()
