"""Backbones, and which of their layers SparCL masks.

As in the SparCL reference, only 3x3 convolutions are masked. The stem, the 1x1
shortcuts, the classifier head and the norms stay dense: they are a small share
of the FLOPs and pruning them hurts accuracy most.
"""

from __future__ import annotations

import torch
from torch import nn

from clients.errors import InputError

BACKBONES = ("auto", "small-cnn", "resnet18", "resnet18-reduced")
RESNET_WIDTHS = {"resnet18": 64, "resnet18-reduced": 20}  # base width nf: SparCL's full and reduced variants


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(conv3x3(in_ch, out_ch), nn.BatchNorm2d(out_ch), nn.ReLU())


class SmallCNN(nn.Module):
    """A five-convolution network for small one-channel images (digits, MNIST).

    The stem is kept narrow so that the dense part is well under 1% of the
    FLOPs: the masked 3x3 convolutions carry nearly all of the work.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 64) -> None:
        super().__init__()
        self.stem = conv_bn_relu(in_channels, 16)
        self.features = nn.Sequential(
            conv_bn_relu(16, width),
            conv_bn_relu(width, width),
            nn.MaxPool2d(2),
            conv_bn_relu(width, 2 * width),
            conv_bn_relu(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)))


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()  # modules, so that accounting sees them
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet18(nn.Module):
    """The reduced ResNet-18 of the continual-learning literature (mammoth, SparCL).

    Base width `nf` (64 as SparCL runs it; 20 in the reduced variant); four
    stages of two basic blocks each.
    """

    def __init__(self, in_channels: int, num_classes: int, nf: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv3x3(in_channels, nf), nn.BatchNorm2d(nf), nn.ReLU())
        blocks, in_ch = [], nf
        for i, stride in enumerate((1, 2, 2, 2)):
            out_ch = nf * 2**i
            blocks += [BasicBlock(in_ch, out_ch, stride), BasicBlock(out_ch, out_ch, 1)]
            in_ch = out_ch
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)))


def build_backbone(name: str, input_shape: tuple[int, int, int], num_classes: int,
                   width: int | None = None) -> nn.Module:
    """`auto` picks the small CNN for one-channel input and ResNet-18 (width 64) otherwise."""
    if name not in BACKBONES:
        raise InputError(f"backbone {name!r} is unknown (choose from: {', '.join(BACKBONES)})")
    channels = input_shape[0]
    if name == "auto":
        name = "small-cnn" if channels == 1 else "resnet18"
    if name == "small-cnn":
        return SmallCNN(channels, num_classes, width or 64)
    return ResNet18(channels, num_classes, width or RESNET_WIDTHS[name])


def masked_parameter_names(model: nn.Module) -> list[str]:
    """Names of the weights SparCL masks: every 3x3 convolution outside the stem."""
    return [
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d)
        and module.kernel_size == (3, 3)
        and not name.startswith("stem")
    ]
