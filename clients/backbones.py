"""Backbones, and which of their layers SparCL masks.

As in the SparCL reference, only 3x3 convolutions are masked. The stem, the 1x1
shortcuts, the classifier head and the norms stay dense: they are a small share
of the FLOPs and pruning them hurts accuracy most.

Under channel masks (clients.sparcl.tdm, granularity `channel`) the SmallCNN can
run compacted: given each masked convolution's live output channels
(`set_live_channels`), its forward uses only those channels, so the FLOPs saved
are really skipped even on dense kernels. It indexes the full parameters
(index_select), so autograd gives gradients on the full tensors (zero for dead
entries) and the optimizer and masks keep working on them. The ResNets run the
masked dense step under channel masks: a residual addition joins channels of
two paths, so one block's dead channels are not the next one's, and compacting
them is a different problem.

Under weight masks the SmallCNN can run its masked convolutions on SparseProp's
unstructured sparse kernels (`set_sparse_kernels`, clients.sparcl.sparse_kernels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clients.errors import InputError

BACKBONES = ("auto", "small-cnn", "resnet18", "resnet18-reduced")
NORMS = ("batch", "group")
RESNET_WIDTHS = {"resnet18": 64, "resnet18-reduced": 20}  # base width nf: SparCL's full and reduced variants


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def norm_layer(kind: str, channels: int) -> nn.Module:
    """BatchNorm, or GroupNorm with min(32, channels // 2) groups (Wu and He's 32, at least two channels a
    group). GroupNorm keeps no running statistics, so a federated model has none to average: the usual
    remedy for BatchNorm in federated learning (Hsieh et al., 2020)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(max(1, min(32, channels // 2)), channels)
    raise InputError(f"norm {kind!r} is unknown (choose from: {', '.join(NORMS)})")


def conv_bn_relu(in_ch: int, out_ch: int, norm: str = "batch") -> nn.Sequential:
    return nn.Sequential(conv3x3(in_ch, out_ch), norm_layer(norm, out_ch), nn.ReLU())


class SmallCNN(nn.Module):
    """A five-convolution network for small one-channel images (digits, MNIST).

    The stem is kept narrow so that the dense part is well under 1% of the
    FLOPs: the masked 3x3 convolutions carry nearly all of the work.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 64, norm: str = "batch") -> None:
        super().__init__()
        self.stem = conv_bn_relu(in_channels, 16, norm)
        self.features = nn.Sequential(
            conv_bn_relu(16, width, norm),
            conv_bn_relu(width, width, norm),
            nn.MaxPool2d(2),
            conv_bn_relu(width, 2 * width, norm),
            conv_bn_relu(2 * width, 2 * width, norm),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, num_classes)
        self.live_channels: dict[str, torch.Tensor] | None = None  # see set_live_channels
        self.sparse_plans: dict = {}  # see set_sparse_kernels

    def set_live_channels(self, live: dict[str, torch.Tensor] | None) -> None:
        """Run compacted from now on: masked conv weight name -> indices of its live output channels
        (None: dense). Only the caller knows when masks change, so it calls this after each change."""
        self.live_channels = None if live is None else {name: idx.clone() for name, idx in live.items()}

    def set_sparse_kernels(self, plans: dict) -> None:
        """Run these masked convolutions (weight name -> clients.sparcl.sparse_kernels.SparsePlan) on
        SparseProp's sparse kernels from now on; {}: dense kernels. Called after each mask change."""
        self.sparse_plans = dict(plans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.live_channels is not None:
            return self._compact_forward(x)
        if self.sparse_plans:
            return self._sparse_forward(x)
        return self.head(self.features(self.stem(x)))

    def _sparse_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The dense forward with the planned convolutions on sparse kernels (the same function)."""
        from clients.sparcl.sparse_kernels import sparse_conv2d

        x = self.stem(x)
        for i, block in enumerate(self.features):
            if not isinstance(block, nn.Sequential):
                x = block(x)
                continue
            conv, norm, act = block
            assert isinstance(conv, nn.Conv2d)  # every Sequential of features is a conv_bn_relu
            p = self.sparse_plans.get(f"features.{i}.0.weight")
            x = act(norm(conv(x) if p is None else sparse_conv2d(x, conv.weight, p)))
        return self.head(x)

    def _compact_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same function as the dense forward on channel-masked weights, computed on live channels only.

        A dead channel outputs exactly 0 there (its weights and its norm's scale
        and shift are 0), and the next layer's weights on it multiply 0: leaving
        both out changes nothing but the work.
        """
        live = self.live_channels
        assert live is not None  # forward runs this only with live channels set
        x = self.stem(x)
        live_in: torch.Tensor | None = None  # the channels x holds, as indices into the full layer; None: all
        for i, block in enumerate(self.features):
            if not isinstance(block, nn.Sequential):  # pooling, flatten: per channel
                x = block(x)
                continue
            conv, norm, act = block
            # a conv_bn_relu, run compacted only with BatchNorm (what compact_batch_norm handles)
            assert isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
            live_out = live.get(f"features.{i}.0.weight")
            x = F.conv2d(x, compact_weight(conv.weight, live_out, live_in), None, conv.stride, conv.padding)
            x = act(compact_batch_norm(norm, x, live_out))
            live_in = live_out
        return F.linear(x, compact_weight(self.head.weight, None, live_in), self.head.bias)


def compact_weight(weight: torch.Tensor, live_out: torch.Tensor | None,
                   live_in: torch.Tensor | None) -> torch.Tensor:
    """weight[live_out][:, live_in], differentiable into the full weight (None: all of that dimension)."""
    if live_out is not None:
        weight = weight.index_select(0, live_out)
    if live_in is not None:
        weight = weight.index_select(1, live_in)
    return weight


def compact_batch_norm(norm: nn.BatchNorm2d, x: torch.Tensor, live: torch.Tensor | None) -> torch.Tensor:
    """`norm` on the live channels `x` holds, its statistics kept as the dense step keeps them.

    In training the live channels' running statistics are updated from the
    batch and written back into the full buffers; a dead channel's batch mean
    and variance are 0 in the dense step, so its running statistics decay by
    the momentum factor, as here.
    """
    if live is None:
        return norm(x)
    weight, bias = norm.weight.index_select(0, live), norm.bias.index_select(0, live)
    if not norm.track_running_stats:
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, norm.eps)
    # a norm that tracks running statistics has all three buffers
    assert norm.running_mean is not None and norm.running_var is not None and norm.num_batches_tracked is not None
    if not norm.training:
        return F.batch_norm(x, norm.running_mean[live], norm.running_var[live], weight, bias, False, 0.0, norm.eps)
    norm.num_batches_tracked.add_(1)
    factor = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
    mean, var = norm.running_mean[live], norm.running_var[live]  # copies, updated by batch_norm
    out = F.batch_norm(x, mean, var, weight, bias, True, factor, norm.eps)
    with torch.no_grad():
        norm.running_mean.mul_(1.0 - factor)
        norm.running_var.mul_(1.0 - factor)
        norm.running_mean[live] = mean
        norm.running_var[live] = var
    return out


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str = "batch") -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn1 = norm_layer(norm, out_ch)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.bn2 = norm_layer(norm, out_ch)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()  # modules, so that accounting sees them
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                norm_layer(norm, out_ch),
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

    def __init__(self, in_channels: int, num_classes: int, nf: int = 64, norm: str = "batch") -> None:
        super().__init__()
        self.stem = nn.Sequential(conv3x3(in_channels, nf), norm_layer(norm, nf), nn.ReLU())
        blocks, in_ch = [], nf
        for i, stride in enumerate((1, 2, 2, 2)):
            out_ch = nf * 2**i
            blocks += [BasicBlock(in_ch, out_ch, stride, norm), BasicBlock(out_ch, out_ch, 1, norm)]
            in_ch = out_ch
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)))


def resolved_backbone(name: str, channels: int) -> str:
    """The backbone `auto` stands for: the small CNN for one-channel input, ResNet-18 otherwise."""
    if name != "auto":
        return name
    return "small-cnn" if channels == 1 else "resnet18"


def build_backbone(name: str, input_shape: Sequence[int], num_classes: int,
                   width: int | None = None, norm: str = "batch") -> nn.Module:
    """`auto` picks the small CNN for one-channel input and ResNet-18 (width 64) otherwise; `norm` is
    batch or group (norm_layer)."""
    if name not in BACKBONES:
        raise InputError(f"backbone {name!r} is unknown (choose from: {', '.join(BACKBONES)})")
    if norm not in NORMS:
        raise InputError(f"norm {norm!r} is unknown (choose from: {', '.join(NORMS)})")
    channels = input_shape[0]
    name = resolved_backbone(name, channels)
    if name == "small-cnn":
        return SmallCNN(channels, num_classes, width or 64, norm)
    return ResNet18(channels, num_classes, width or RESNET_WIDTHS[name], norm)


def masked_parameter_names(model: nn.Module) -> list[str]:
    """Names of the weights SparCL masks: every 3x3 convolution outside the stem."""
    return [
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d)
        and module.kernel_size == (3, 3)
        and not name.startswith("stem")
    ]


def norm_after(model: nn.Module) -> dict[str, str]:
    """Masked conv weight name -> the name of the BatchNorm that normalises its output.

    From the backbones' structure: conv_bn_relu's `i.0` is followed by `i.1`, a
    BasicBlock's conv1 by bn1 and conv2 by bn2. A masked conv without one (none
    in these backbones) is left out.
    """
    modules = dict(model.named_modules())
    pairs = {}
    for weight_name in masked_parameter_names(model):
        conv_name = weight_name.removesuffix(".weight")
        parent, _, leaf = conv_name.rpartition(".")
        follower = {"conv1": "bn1", "conv2": "bn2"}.get(leaf) or (str(int(leaf) + 1) if leaf.isdigit() else None)
        norm_name = f"{parent}.{follower}" if parent else str(follower)
        norm = modules.get(norm_name)
        if isinstance(norm, nn.BatchNorm2d) and norm.num_features == modules[conv_name].out_channels:
            pairs[weight_name] = norm_name
    return pairs


def compacted_inputs(model: nn.Module) -> dict[str, str | None]:
    """For a model that runs compacted: each layer it compacts -> the masked conv whose live
    channels are that layer's input (None: its input is whole). Empty for models that do not."""
    if not isinstance(model, SmallCNN):
        return {}
    chain: dict[str, str | None] = {}
    previous = None
    for i, block in enumerate(model.features):
        if isinstance(block, nn.Sequential):
            chain[f"features.{i}.0.weight"] = previous
            previous = f"features.{i}.0.weight"
    chain["head.weight"] = previous
    return chain
