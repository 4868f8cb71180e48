"""Unstructured sparse kernels for the masked convolutions: SparseProp, an optional extra.

PyTorch's dense kernels multiply the zeros a weight mask leaves, so TDM's FLOPs
never become time. SparseProp (Nikdan et al., ICML 2023; `pip install
sparcl-fleet[sparseprop]`, built from source, x86 with AVX2 only: not on a Pi's
aarch64) runs a convolution's forward and backward over its live weights only.

The dense weight stays the parameter that the optimizer, the masks and the wire
format see. Each step gathers the live values into SparseProp's format by
index, which autograd differentiates, so their gradient lands on the dense
weight (zero elsewhere, as the masked dense step's is after `mask_grads`). The
format's structure comes from the mask, not the values, so a weight regrown at
0 is trained. SparseProp orders its values row-major over (out, in, kh, kw),
the dense tensor's own order, which `plan` checks. A layer is run sparse only
where it measured faster than the dense kernel for its shape and density
(`SparseKernels`): at batch 32 on this project's layers that is about density
0.1 and below.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clients.errors import InputError


def available() -> bool:
    """Whether SparseProp's compiled backend can be imported here."""
    if importlib.util.find_spec("sparseprop") is None:
        return False
    try:
        from sparseprop.modules.functions import SparseConvFunction  # noqa: F401
    except (ImportError, OSError):  # built for another CPU, or without its backend
        return False
    return True


def require() -> None:
    """One clear line where the extra is missing."""
    if not available():
        raise InputError("sparse kernels need SparseProp (x86 with AVX2): pip install --no-build-isolation "
                         "'sparcl-fleet[sparseprop]' (see the README)")


def eligible(conv: nn.Conv2d) -> bool:
    """The convolutions SparseProp implements: square kernel, stride 1 or 2, one group, no dilation."""
    k = conv.kernel_size
    return (isinstance(conv.padding, tuple) and k[0] == k[1] and conv.padding[0] == conv.padding[1]
            and conv.stride[0] == conv.stride[1] and conv.stride[0] in (1, 2)
            and conv.groups == 1 and conv.dilation == (1, 1))


@dataclass(frozen=True)
class SparsePlan:
    """One layer's live weights in SparseProp's format: its index structure and, per value, the
    flat index of that weight in the dense tensor."""

    structure: tuple[torch.Tensor, ...]
    flat: torch.Tensor
    out_channels: int
    kernel: int
    padding: int
    stride: int
    over_on: bool  # SparseProp's vectorisation over the output's width (stride 1), else over the batch


def plan(conv: nn.Conv2d, live: torch.Tensor, over_on: bool = False) -> SparsePlan:
    """The format of `conv`'s live entries (a weight-shaped bool mask)."""
    from sparseprop.modules.utils import to_sparse_format_conv2d

    flat = live.flatten().nonzero().flatten()
    positions = torch.zeros(live.numel())  # each live entry holds its flat index + 1: the format's order shows
    positions[flat] = flat.float() + 1
    values, structure = to_sparse_format_conv2d(positions.view(live.shape))
    if not torch.equal(values, flat.float() + 1):
        raise RuntimeError("SparseProp's format does not list the live weights in the dense tensor's order")
    stride = conv.stride[0]
    assert isinstance(conv.padding, tuple)  # planned layers are `eligible`: numeric padding, not 'same'
    return SparsePlan(structure, flat, conv.out_channels, conv.kernel_size[0], conv.padding[0], stride,
                      over_on and stride == 1)


BATCH_LANES = 8  # SparseProp's batch-vectorised kernels silently miscompute other batch sizes (measured)


def sparse_conv2d(x: torch.Tensor, weight: torch.Tensor, p: SparsePlan) -> torch.Tensor:
    """conv2d(x, weight) over the live weights of plan `p`; gradients reach `weight` and `x`.

    A batch that is not a multiple of BATCH_LANES (an epoch's last) runs vectorised over the
    output width instead (stride 1), or on the dense kernel (stride 2)."""
    from sparseprop.modules.functions import SparseConvFunction

    over_on = p.over_on or x.shape[0] % BATCH_LANES != 0
    if over_on and p.stride != 1:
        return F.conv2d(x, weight, None, p.stride, p.padding)
    values = weight.flatten().index_select(0, p.flat)
    out = SparseConvFunction.apply(x.contiguous(), values, p.structure, None, p.out_channels, p.kernel,
                                   p.padding, p.stride, over_on, over_on)
    if out.requires_grad:  # its kernels read the incoming gradient as a dense array (a sum's is not one)
        out.register_hook(lambda grad: grad.contiguous())
    return out


def step_seconds(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    """Process CPU seconds of one forward and backward, the minimum over `repeats` after a warm-up."""
    def step() -> None:
        out = fn()
        out.backward(torch.ones_like(out))
    step()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        step()
        best = min(best, time.process_time() - start)
    return best


# A device's learner is rebuilt every round: the choices are kept for the process, keyed by what
# decides them (weight shape, input shape, live count, stride, torch threads).
_CHOICES: dict[tuple, bool | None] = {}


def fastest(conv: nn.Conv2d, live: torch.Tensor, input_shape: tuple[int, ...], repeats: int = 3
            ) -> bool | None:
    """Which kernel trains this layer fastest at this mask: SparseProp over the output width (True),
    over the batch (False), or the dense kernel (None), timed on a random input of `input_shape`.
    Timed, so two processes may choose differently and differ in float rounding."""
    key = (tuple(conv.weight.shape), tuple(input_shape), int(live.sum()), conv.stride, torch.get_num_threads())
    if key not in _CHOICES:
        _CHOICES[key] = _time_kernels(conv, live, input_shape, repeats)
    return _CHOICES[key]


def _time_kernels(conv: nn.Conv2d, live: torch.Tensor, input_shape: tuple[int, ...], repeats: int) -> bool | None:
    generator = torch.Generator().manual_seed(0)  # not the caller's random stream
    x = torch.randn(input_shape, generator=generator).requires_grad_()
    weight = (conv.weight.detach() * live).requires_grad_()
    times: dict[bool | None, float] = {
        None: step_seconds(lambda: F.conv2d(x, weight, None, conv.stride, conv.padding), repeats)}
    for over_on in (False, True) if conv.stride[0] == 1 else (False,):
        p = plan(conv, live, over_on)
        times[over_on] = step_seconds(lambda: sparse_conv2d(x, weight, p), repeats)
    return min(times, key=times.__getitem__)


class SparseKernels:
    """Per masked convolution of a model, SparseProp's plan of its live weights where that is faster.

    The choice is timed once per layer shape and live-weight count in a process (TDM keeps the
    count fixed within a task, so a run times each layer a few times); the plan is rebuilt at
    every mask change.
    """

    def __init__(self, model: nn.Module, names: list[str], batch_shape: tuple[int, ...]) -> None:
        require()
        modules = dict(model.named_modules())
        self.convs = {name: modules[name.rsplit(".", 1)[0]] for name in names}
        bad = [n for n, c in self.convs.items() if not isinstance(c, nn.Conv2d) or not eligible(c)]
        if bad:
            raise InputError(f"sparse kernels cannot run layer {bad[0]!r} (SparseProp: square kernels, "
                             "stride 1 or 2, no groups or dilation)")
        self.input_shapes = input_shapes(model, list(self.convs.values()), batch_shape)

    def plans(self, live: dict[str, torch.Tensor]) -> dict[str, SparsePlan]:
        """The layers to run sparse under these live masks, with their plans."""
        out = {}
        for name, mask in live.items():
            conv = self.convs[name]
            choice = fastest(conv, mask, self.input_shapes[conv])
            if choice is not None:
                out[name] = plan(conv, mask, choice)
        return out


@torch.no_grad()
def input_shapes(model: nn.Module, convs: list[nn.Module], batch_shape: tuple[int, ...]) -> dict[nn.Module, tuple]:
    """The input shape each of `convs` sees for a batch of `batch_shape` (one forward in eval mode)."""
    shapes: dict[nn.Module, tuple] = {}

    def record(module: nn.Module, args: tuple) -> None:  # a pre-hook that returns a value replaces the input
        shapes.setdefault(module, tuple(args[0].shape))

    hooks = [c.register_forward_pre_hook(record) for c in convs]
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(batch_shape))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return shapes
