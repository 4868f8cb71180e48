"""Task-aware dynamic masks (TDM): the weight sparsity of SparCL.

One shared mask per masked layer. It starts from magnitude pruning of the random
initial weights. During a task it is periodically renewed: the weights with the
lowest score |w| + lambda |grad w| are dropped a little below the target density,
and random zero positions are regrown (at weight 0) back to it. At the start of
every task the mask is pruned to the target and then grown by one extra point of
density, so each new task finds free weights to learn into: the task-aware part.
In the last stretch of a task the mask is frozen so the weights settle.

Granularity `weight` (the reference) masks single weights. Granularity
`channel` masks whole output channels of each masked convolution: the same
schedule on channel counts, keep = max(1, round(C_out * density)), a channel's
score the sum of |w| + lambda |grad w| over it. Counts use round(), so on a
narrow layer a small step (drop_extra, task_extra of 1%) can be 0 channels:
with 8 channels at density 0.1 every step keeps exactly 1. A dead channel also
zeroes the affine weight and bias of the BatchNorm after its convolution, so it
outputs exactly 0 and can be removed from the computation (see
clients.backbones.SmallCNN's compacted forward). A regrown channel starts, as a
regrown weight does, at weight 0, with that BatchNorm reset to its initial state
(scale 1, shift 0, statistics 0 and 1): it still outputs 0, so the function is
unchanged, and it can learn (with scale 0 it would never get a gradient).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from clients.backbones import norm_after
from clients.errors import InputError

GRANULARITIES = ("weight", "channel")


@dataclass(frozen=True)
class TDMConfig:
    sparsity: float = 0.9          # target fraction of zeros in every masked layer
    update_every: float = 0.1      # mask update period, as a fraction of a task's epochs (5 of 50)
    freeze_last: float = 0.1       # final fraction of a task with the mask frozen (5 of 50)
    drop_lambda: float = 0.5       # weight of |grad| in the drop score
    drop_extra: float = 0.01       # an update drops to sparsity + this, then regrows
    task_extra: float = 0.01       # density added at each task start
    regrow_seed: int | None = None  # shared by a fleet: devices at the same point regrow the same positions
    granularity: str = "weight"     # weight: single weights (the reference); channel: whole output channels
    sparse_kernels: bool = False    # weight masks on SparseProp's kernels where faster (clients.sparcl.sparse_kernels)
    # the control: the initial magnitude-pruned mask kept for the whole stream (no update, no task start)
    static: bool = False

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise InputError(f"tdm granularity {self.granularity!r} is unknown "
                             f"(choose from: {', '.join(GRANULARITIES)})")
        if self.sparse_kernels and self.granularity == "channel":
            raise InputError("sparse kernels run weight masks; channel masks already run compacted")
        if not 0.0 <= self.sparsity < 1.0:
            raise InputError(f"sparsity must be in [0, 1), got {self.sparsity}")
        for name in ("update_every", "freeze_last", "drop_extra", "task_extra"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise InputError(f"tdm {name} must be in [0, 1), got {getattr(self, name)}")


def keep_count(numel: int, density: float) -> int:
    """How many entries a tensor of `numel` keeps at `density` (at least one)."""
    return max(1, min(numel, int(round(numel * density))))


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of exactly the k largest scores (ties broken by position)."""
    flat = scores.flatten()
    order = torch.argsort(flat, descending=True, stable=True)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[order[:k]] = True
    return mask.view_as(scores)


def drop_score(weight: torch.Tensor, grad: torch.Tensor | None, drop_lambda: float) -> torch.Tensor:
    """The reference's score of a weight: |w| + lambda |grad w| (|w| without a gradient)."""
    score = weight.abs()
    if grad is not None:
        score = score + drop_lambda * grad.abs()
    return score


def keep_best(mask: torch.Tensor, score: torch.Tensor, k: int) -> torch.Tensor:
    """The k on-entries of `mask` with the highest (non-negative) scores."""
    score = torch.where(mask, score, torch.full_like(score, -1.0))
    return top_k_mask(score, min(k, int(mask.sum())))


def drop(mask: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor | None,
         k: int, drop_lambda: float) -> torch.Tensor:
    """Keep the k kept entries with the highest |w| + lambda |grad|."""
    return keep_best(mask, drop_score(weight, grad, drop_lambda), k)


# -- channel granularity: a mask is a per-output-channel vector broadcast over (in, kh, kw)

def channel_scores(weight: torch.Tensor, grad: torch.Tensor | None, drop_lambda: float) -> torch.Tensor:
    """Per output channel, the sum of the weight scores over its (in, kh, kw) entries."""
    return drop_score(weight, grad, drop_lambda).flatten(1).sum(1)


def channels_of(mask: torch.Tensor) -> torch.Tensor:
    """Which output channels have any live entry (1-D bool)."""
    return mask.flatten(1).any(1)


def expand_channels(channels: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A weight-shaped mask, constant over each output channel's entries."""
    return channels.view(-1, *([1] * (len(shape) - 1))).expand(shape).clone()


def channel_drop(channels: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor | None,
                 k: int, drop_lambda: float) -> torch.Tensor:
    """Keep the k live channels with the highest summed score."""
    return keep_best(channels, channel_scores(weight, grad, drop_lambda), k)


def regrow(mask: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Turn on random off-entries until exactly k entries are on.

    Each entry draws a random priority and the off-entries with the highest win,
    so two devices with the same generator seed and similar masks regrow nearly
    the same positions (their updates then average instead of adding up).
    """
    grow = k - int(mask.sum())
    if grow <= 0:
        return mask
    priority = torch.rand(mask.numel(), generator=generator).to(mask.device)  # drawn on the CPU: same on a GPU
    priority[mask.flatten()] = -1.0
    return mask | top_k_mask(priority.view_as(mask), grow)


class WeightMasks:
    """The masks of one model, with the TDM schedule's three operations.

    Under `channel` granularity `norms` names the BatchNorm after each masked
    convolution (default: clients.backbones.norm_after); its scale and shift
    are masked with the convolution's output channels.
    """

    def __init__(self, model: nn.Module, names: list[str], config: TDMConfig,
                 generator: torch.Generator, norms: dict[str, str] | None = None) -> None:
        params = dict(model.named_parameters())
        self.params = {name: params[name] for name in names}
        self.config = config
        self.generator = generator
        self.target = 1.0 - config.sparsity
        self.channel = config.granularity == "channel"
        self.norms: dict[str, nn.BatchNorm2d] = {}
        self.norm_names: dict[str, str] = {}
        if self.channel:
            modules = dict(model.named_modules())
            norms = norm_after(model) if norms is None else norms
            for name in names:
                if name in norms:
                    norm = modules[norms[name]]
                    assert isinstance(norm, nn.BatchNorm2d), f"{norms[name]} is not a BatchNorm2d"
                    self.norms[name] = norm
            self.norm_names = {name: norms[name] for name in names if name in norms}
            self.masks = {
                name: expand_channels(top_k_mask(channel_scores(p.detach(), None, 0.0),
                                                 keep_count(p.shape[0], self.target)), p.shape)
                for name, p in self.params.items()
            }
        else:
            self.masks = {
                name: top_k_mask(p.detach().abs(), keep_count(p.numel(), self.target))
                for name, p in self.params.items()
            }
        # weights computed with but not trained (the fleet's shared model under local masks)
        self.frozen: dict[str, torch.Tensor] = {}
        self.apply()

    def live(self, name: str) -> torch.Tensor:
        """Entries the forward pass uses: this device's mask plus any frozen shared weights."""
        return self.masks[name] | self.frozen[name] if name in self.frozen else self.masks[name]

    def norm_masks(self) -> dict[str, torch.Tensor]:
        """Channel granularity: which channels of each following norm's tensors (scale, shift, running
        statistics) are live. Sent with an update, they keep a channel this device has not trained
        out of the fleet's average (its zeros and decayed statistics say nothing)."""
        masks = {}
        for name, module in self.norm_names.items():
            alive = channels_of(self.live(name))
            for tensor in ("weight", "bias", "running_mean", "running_var"):
                masks[f"{module}.{tensor}"] = alive.clone()
        return masks

    def live_channels(self) -> dict[str, torch.Tensor]:
        """Per masked layer, the indices of the output channels the forward pass uses (channel granularity)."""
        return {name: channels_of(self.live(name)).nonzero().flatten() for name in self.masks}

    @torch.no_grad()
    def apply(self) -> None:
        """Zero every weight outside the live entries (after init, regrowth and each step);
        under channel granularity also the scale and shift of dead channels' norms."""
        for name, p in self.params.items():
            p.mul_(self.live(name))
        for name, norm in self.norms.items():
            alive = channels_of(self.live(name))
            norm.weight.mul_(alive)
            norm.bias.mul_(alive)

    @torch.no_grad()
    def mask_grads(self) -> None:
        for name, p in self.params.items():
            if p.grad is not None:
                p.grad.mul_(self.masks[name])
        for name, norm in self.norms.items():  # a dead channel's norm stays 0 (it is trained where live)
            alive = channels_of(self.live(name))
            for q in (norm.weight, norm.bias):
                if q.grad is not None:
                    q.grad.mul_(alive)

    def regrow_generator(self, event: tuple[int, ...], layer: int) -> torch.Generator:
        """The learner's own generator, or one seeded by (fleet seed, event, layer) when shared."""
        if self.config.regrow_seed is None:
            return self.generator
        return torch.Generator().manual_seed(hash((self.config.regrow_seed, *event, layer)) % 2**62)

    @torch.no_grad()
    def reshape(self, grads: dict[str, torch.Tensor] | None, drop_to: float, grow_to: float,
                event: tuple[int, ...] = ()) -> None:
        """Drop to density `drop_to` by score, regrow at random to `grow_to`, zero the regrown."""
        for layer, (name, p) in enumerate(self.params.items()):
            grad = grads.get(name) if grads else None
            generator = self.regrow_generator(event, layer)
            if self.channel:
                channels = channels_of(self.masks[name])
                kept_channels = channel_drop(channels, p, grad, keep_count(p.shape[0], drop_to),
                                             self.config.drop_lambda)
                grown = regrow(kept_channels, keep_count(p.shape[0], grow_to), generator)
                self._reset_norm(name, grown & ~channels_of(self.live(name)))  # new to the forward pass
                kept, self.masks[name] = expand_channels(kept_channels, p.shape), expand_channels(grown, p.shape)
            else:
                kept = drop(self.masks[name], p, grad, keep_count(p.numel(), drop_to), self.config.drop_lambda)
                self.masks[name] = regrow(kept, keep_count(p.numel(), grow_to), generator)
            frozen = self.frozen.get(name)
            p.mul_(kept if frozen is None else kept | frozen)  # dropped weights are zeroed; regrown start at 0
        self.apply()

    @torch.no_grad()
    def _reset_norm(self, name: str, channels: torch.Tensor) -> None:
        """A regrown channel's norm back to its initial state (see the module docstring)."""
        norm = self.norms.get(name)
        if norm is None or not bool(channels.any()):
            return
        norm.weight[channels] = 1.0
        norm.bias[channels] = 0.0
        if norm.running_mean is not None and norm.running_var is not None:  # both or neither (track_running_stats)
            norm.running_mean[channels] = 0.0
            norm.running_var[channels] = 1.0

    def update(self, grads: dict[str, torch.Tensor] | None, event: tuple[int, ...] = ()) -> None:
        """The periodic renewal inside a task (`event` names it, e.g. (task, epoch))."""
        self.reshape(grads, self.target - self.config.drop_extra, self.target, event)

    def begin_task(self, grads: dict[str, torch.Tensor] | None, event: tuple[int, ...] = ()) -> None:
        """Prune to the target, then open one extra point of density for the new task (a static mask
        keeps its initial entries)."""
        if self.config.static:
            return
        self.reshape(grads, self.target, self.target + self.config.task_extra, event)

    def densities(self) -> dict[str, float]:
        """Forward density per layer (frozen shared weights included)."""
        return {name: float(self.live(name).float().mean()) for name in self.masks}

    def trainable_densities(self) -> dict[str, float]:
        return {name: float(m.float().mean()) for name, m in self.masks.items()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: m.clone() for name, m in self.masks.items()}

    def load_state_dict(self, masks: dict[str, torch.Tensor]) -> None:
        """Take masks; under channel granularity a channel with any live entry is live whole
        (masks from channel-granular peers and the channel resparsify are already whole)."""
        self.masks = {name: masks[name].to(device=p.device, dtype=torch.bool, copy=True)
                      for name, p in self.params.items()}
        if self.channel:
            self.masks = {name: expand_channels(channels_of(m), m.shape) for name, m in self.masks.items()}
        self.apply()


def update_epochs(epochs: int, config: TDMConfig) -> set[int]:
    """Epochs of a task (0-based) at whose start the mask is renewed.

    Every `update_every` of the task, never at epoch 0 (that is the task
    boundary) and never within the final `freeze_last` of the task (at least
    one epoch when freeze_last > 0, so short tasks still settle).
    """
    if config.static:
        return set()
    period = max(1, int(round(config.update_every * epochs)))
    frozen = max(1, int(round(config.freeze_last * epochs))) if config.freeze_last > 0 else 0
    frozen_from = epochs - frozen
    return {e for e in range(period, frozen_from, period)}
