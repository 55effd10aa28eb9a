"""Small CNN families for the energy studies: VGG-, ResNet-, MobileNet- and DenseNet-style.

Each family keeps the trait that makes it behave differently on energy, at a size a CPU trains
in seconds an epoch:

- ``vgg``: plain stacks of 3x3 convolutions and max-pooling (compute-dense, few parameters per
  MAC at this size).
- ``resnet``: basic residual blocks (two 3x3 convolutions) with 1x1 projection shortcuts where
  the shape changes.
- ``mobilenet``: depthwise-separable blocks (a 3x3 depthwise convolution, then a 1x1
  pointwise one): far fewer MACs for the same width.
- ``densenet``: dense blocks whose layers see the concatenation of every earlier output, with
  1x1 transitions that halve the channels: few MACs but much memory traffic.

All take ``width`` (the channel count of the first stage; later stages double it) and ``depth``
(what is repeated per stage: convolutions for vgg, residual blocks for resnet, separable blocks
for mobilenet, dense layers per block for densenet). Every model ends in global average pooling
and one linear layer, so any image size of at least 8x8 works. Convolutions followed by batch
norm have no bias (the norm's shift replaces it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

@dataclass(frozen=True)
class Arch:
    name: str
    default_depth: int
    depth_means: str
    summary: str


ARCHS: dict[str, Arch] = {
    "vgg": Arch("vgg", 2, "3x3 convolutions per stage", "plain 3x3 conv stacks + max-pool, 3 stages"),
    "resnet": Arch("resnet", 2, "residual blocks per stage", "basic residual blocks, 3 stages"),
    "mobilenet": Arch("mobilenet", 2, "depthwise-separable blocks per stage",
                      "depthwise-separable blocks, 3 stages"),
    "densenet": Arch("densenet", 4, "dense layers per block",
                     "3 dense blocks (growth = width/2) with 1x1 transitions"),
}


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class Head(nn.Sequential):
    """Global average pooling and the classifier."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes))


def vgg(width: int, depth: int, in_channels: int, classes: int) -> nn.Module:
    layers: list[nn.Module] = []
    c_in = in_channels
    for stage in range(3):
        c_out = width * 2 ** stage
        for _ in range(depth):
            layers += conv_bn_relu(c_in, c_out)
            c_in = c_out
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, Head(c_in, classes))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn_relu(c_in, c_out, stride=stride),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def resnet(width: int, depth: int, in_channels: int, classes: int) -> nn.Module:
    layers: list[nn.Module] = conv_bn_relu(in_channels, width)
    c_in = width
    for stage in range(3):
        c_out = width * 2 ** stage
        for block in range(depth):
            layers.append(BasicBlock(c_in, c_out, stride=2 if stage > 0 and block == 0 else 1))
            c_in = c_out
    return nn.Sequential(*layers, Head(c_in, classes))


def separable(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(*conv_bn_relu(c_in, c_in, stride=stride, groups=c_in), *conv_bn_relu(c_in, c_out, 1))


def mobilenet(width: int, depth: int, in_channels: int, classes: int) -> nn.Module:
    layers: list[nn.Module] = conv_bn_relu(in_channels, width)
    c_in = width
    for stage, stride in enumerate((1, 2, 2)):
        c_out = width * 2 ** (stage + 1)
        for block in range(depth):
            layers.append(separable(c_in, c_out, stride if block == 0 else 1))
            c_in = c_out
    return nn.Sequential(*layers, Head(c_in, classes))


class DenseLayer(nn.Module):
    """BN-ReLU-conv3x3 producing ``growth`` new channels, concatenated to its input."""

    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(inplace=False),
                                  nn.Conv2d(c_in, growth, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


def densenet(width: int, depth: int, in_channels: int, classes: int) -> nn.Module:
    growth = max(1, width // 2)
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, bias=False)]
    c = width
    for block in range(3):
        for _ in range(depth):
            layers.append(DenseLayer(c, growth))
            c += growth
        if block < 2:
            c_half = c // 2
            layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, c_half, 1, bias=False),
                       nn.AvgPool2d(2)]
            c = c_half
    layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, Head(c, classes))


BUILDERS = {"vgg": vgg, "resnet": resnet, "mobilenet": mobilenet, "densenet": densenet}


def build_model(arch: str, width: int, depth: int | None, in_channels: int, classes: int) -> nn.Module:
    """The ``arch`` family at ``width`` channels and ``depth`` repeats (None: the family's default).

    Raises ValueError for an unknown family or a non-positive size.
    """
    if arch not in BUILDERS:
        raise ValueError(f"unknown architecture {arch!r} (expected one of: {', '.join(BUILDERS)})")
    depth = ARCHS[arch].default_depth if depth is None else depth
    for name, value in (("width", width), ("depth", depth), ("in_channels", in_channels)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1 (got {value})")
    if classes < 2:
        raise ValueError(f"classes must be at least 2 (got {classes})")
    return BUILDERS[arch](width, depth, in_channels, classes)
