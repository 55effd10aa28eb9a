"""Model size and cost: trainable parameters and multiply-accumulates (MACs) per sample.

The studies hwval reruns ask whether model size predicts energy; these are the two sizes they
use. MACs are counted with forward hooks on every ``Conv2d`` and ``Linear`` during one forward
pass of a single sample (batch norm, activations, pooling and additions are not counted: they
are a few percent of the arithmetic and are memory-bound, not MAC-bound).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class MacCount:
    """MACs of one forward pass of one sample, in total and per layer kind."""

    total: int
    by_kind: dict[str, int] = field(default_factory=dict)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (batch-norm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def conv2d_macs(layer: nn.Conv2d, output: torch.Tensor) -> int:
    """MACs of one sample through ``layer``.

    Notes
    -----
    Each output element is a dot product over ``in_channels / groups`` input channels and the
    ``kh x kw`` kernel: MACs = (C_out * H_out * W_out) * (C_in / groups) * kh * kw. A depthwise
    convolution (groups = C_in) is therefore kh * kw MACs per output element.
    """
    per_sample_outputs = output[0].numel()
    kh, kw = layer.kernel_size
    return per_sample_outputs * (layer.in_channels // layer.groups) * kh * kw


def linear_macs(layer: nn.Linear, output: torch.Tensor) -> int:
    """MACs of one sample through ``layer``: out_features * in_features (per leading position)."""
    return output[0].numel() * layer.in_features


def count_macs(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str = "cpu") -> MacCount:
    """MACs of ``model`` for one sample of ``input_shape`` (C, H, W).

    Runs one forward pass in eval mode without gradients (so batch-norm statistics are not
    touched) and restores the model's previous mode.
    """
    counts = {"conv": 0, "linear": 0}

    def on_conv(layer, _inputs, output):
        counts["conv"] += conv2d_macs(layer, output)

    def on_linear(layer, _inputs, output):
        counts["linear"] += linear_macs(layer, output)

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(on_conv))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(on_linear))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return MacCount(total=sum(counts.values()), by_kind=counts)
