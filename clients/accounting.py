"""Training FLOPs and peak-memory accounting, from real layer shapes and masks.

FLOPs follow the RigL convention. A convolution or linear layer costs F FLOPs
per example forward (2 x multiply-accumulates). Training one example costs its
forward pass plus the input-gradient and weight-gradient passes, each about F,
so a dense step is 3F per layer. A masked layer with weight density d and
weight-gradient density g costs (d + d + g) F: forward and input gradient touch
only live weights, the weight gradient only the entries its gradient mask keeps.
Norms, activations and pooling are counted too, dense in both arms (a masked
convolution does not shrink the BatchNorm after it), so they weigh more in the
sparse arm than in the dense one: BatchNorm 4 FLOPs per element (normalise and
affine), ReLU 1, max pooling k*k per output, average pooling 1 per input; their
training cost is 3x forward like the rest. Every example pushed through the
model counts, buffer draws included; removed (DDR) examples do not.

A layer run compacted (channel masks on the SmallCNN: only live output and
input channels are computed) has effective density c = live_out share x
live_in share (`compacted_densities`) and costs (c + c + min(g, c)) F: every
one of its three passes runs on the compacted tensor. Its norms, activations
and pooling are still counted dense (a slight overcount, small beside the
convolutions).

Memory is an estimate of peak training memory as on-device training work writes
it: weights + gradients of the updated weights + optimizer state + saved
activations + replay buffer. Masked layers are modelled as stored sparse
(bitmask + fp32 values, the wire format), which is what a sparse on-device
kernel library holds; a dense PyTorch run on the same masks holds the dense
sizes (also reported).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

FP32 = 4


@dataclass(frozen=True)
class LayerCost:
    """One conv/linear layer: its weight's name and per-example forward FLOPs."""

    name: str
    forward_flops: float
    numel: int


@dataclass(frozen=True)
class ModelCost:
    layers: tuple[LayerCost, ...]
    activation_elems: int          # elements saved for backward per example (every leaf's output)
    param_elems: dict[str, int]    # every parameter's size
    elementwise_flops: float = 0.0  # per-example forward FLOPs of norms, activations and pooling

    @property
    def forward_flops(self) -> float:
        return sum(layer.forward_flops for layer in self.layers) + self.elementwise_flops


def layer_forward_flops(module: nn.Module, out: torch.Tensor) -> float:
    """FLOPs of one example through a conv or linear layer: 2 x MACs (bias ignored)."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        per_output = (module.in_channels // module.groups) * kh * kw
        return 2.0 * per_output * out[0].numel()
    if isinstance(module, nn.Linear):
        return 2.0 * module.in_features * module.out_features
    raise TypeError(f"no FLOPs rule for {type(module).__name__}")


def elementwise_forward_flops(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> float:
    """FLOPs of one example through a norm, activation or pooling layer (0 for others)."""
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
        return 4.0 * out[0].numel()
    if isinstance(module, nn.ReLU):
        return float(out[0].numel())
    if isinstance(module, nn.MaxPool2d):
        k = module.kernel_size
        kh, kw = (k, k) if isinstance(k, int) else k
        return float(kh * kw * out[0].numel())
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
        return float(inp[0].numel())
    return 0.0


@torch.no_grad()
def profile_model(model: nn.Module, input_shape: tuple[int, ...]) -> ModelCost:
    """Run one example through the model and record every layer's cost."""
    layers: list[LayerCost] = []
    activations = [0]
    elementwise = [0.0]
    hooks = []

    def on_forward(name: str, module: nn.Module):
        def hook(mod: nn.Module, inputs, out: torch.Tensor) -> None:
            activations[0] += out[0].numel()
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                layers.append(LayerCost(f"{name}.weight", layer_forward_flops(mod, out), mod.weight.numel()))
            else:
                elementwise[0] += elementwise_forward_flops(mod, inputs[0], out)
        return hook

    for name, module in model.named_modules():
        if len(list(module.children())) == 0:
            hooks.append(module.register_forward_hook(on_forward(name, module)))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros((1, *input_shape)))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    params = {name: p.numel() for name, p in model.named_parameters()}
    return ModelCost(tuple(layers), activations[0], params, elementwise[0])


def training_flops_per_example(cost: ModelCost, weight_density: dict[str, float],
                               grad_density: dict[str, float],
                               compacted: dict[str, float] | None = None) -> float:
    """RigL training FLOPs of one example: sum over layers of (d + d + g) x F, plus the dense rest.

    `compacted`: layer name -> effective density of each layer run compacted
    (see compacted_densities); such a layer costs (c + c + min(g, c)) x F.
    """
    total = 3.0 * cost.elementwise_flops
    compacted = compacted or {}
    for layer in cost.layers:
        if layer.name in compacted:
            c = compacted[layer.name]
            total += (2.0 * c + min(grad_density.get(layer.name, c), c)) * layer.forward_flops
            continue
        d = weight_density.get(layer.name, 1.0)
        g = grad_density.get(layer.name, d)
        total += (2.0 * d + g) * layer.forward_flops
    return total


def forward_flops_per_example(cost: ModelCost, weight_density: dict[str, float],
                              compacted: dict[str, float] | None = None) -> float:
    """FLOPs of one example's forward pass alone (no gradients): d x F per masked layer, plus the dense rest.

    A third of `training_flops_per_example` when gradients are dense; what a
    pass that only reads the network costs (clients.sparcl.learner's norm
    recalibration).
    """
    compacted = compacted or {}
    return cost.elementwise_flops + sum(
        compacted.get(layer.name, weight_density.get(layer.name, 1.0)) * layer.forward_flops
        for layer in cost.layers)


def compacted_densities(channel_density: dict[str, float], inputs: dict[str, str | None]) -> dict[str, float]:
    """Effective density of each compacted layer: its live output share x its live input share.

    `inputs` (clients.backbones.compacted_inputs) names, per compacted layer,
    the masked layer whose live channels are its input (None: whole input);
    `channel_density` is each masked layer's live channel share (a layer not
    in it, such as the head, keeps all its output channels).
    """
    return {name: channel_density.get(name, 1.0) * (1.0 if source is None else channel_density.get(source, 1.0))
            for name, source in inputs.items()}


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    activations: int
    buffer: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.buffer


def sparse_bytes(numel: int, density: float) -> int:
    """Bitmask plus fp32 values of the live entries."""
    return (numel + 7) // 8 + FP32 * int(round(numel * density))


def peak_memory(cost: ModelCost, weight_density: dict[str, float], *, examples_per_step: int,
                buffer_bytes: int, optimizer_slots: int = 0, sparse_storage: bool = True) -> MemoryEstimate:
    """Peak training memory of one step (bytes).

    `optimizer_slots` is the number of fp32 tensors of state per weight (0 for
    plain SGD, 1 with momentum, 2 for Adam).
    """
    weights = 0
    for name, numel in cost.param_elems.items():
        d = weight_density.get(name)
        weights += sparse_bytes(numel, d) if (sparse_storage and d is not None) else FP32 * numel
    return MemoryEstimate(
        weights=weights,
        gradients=weights,
        optimizer=optimizer_slots * weights,
        activations=FP32 * cost.activation_elems * examples_per_step,
        buffer=buffer_bytes,
    )


def buffer_bytes(capacity: int, input_shape: tuple[int, ...], num_classes: int, with_logits: bool) -> int:
    """Bytes of a full replay buffer: fp32 examples, int64 labels, fp32 logits if stored."""
    per_example = FP32 * int(torch.Size(input_shape).numel()) + 8
    if with_logits:
        per_example += FP32 * num_classes
    return capacity * per_example
