"""Dynamic gradient masks (DGM): update only the weights with the largest gradients.

Every `refresh_every` batches a pattern is computed per masked layer that keeps
the largest `keep` share of |grad| (the percentile is taken over all entries of
the layer, pruned ones included, whose gradient is zero once the weight mask is
applied); the batches in between reuse it. As in the reference, the count
restarts every epoch, and any change of the weight mask (task start, TDM
update, new global weights) forces a refresh: a stale pattern would zero the
gradients of every regrown weight, so they could never learn. With `keep` at or above the weight
density the pattern keeps every live gradient and DGM changes nothing: it bites
at moderate sparsity (0.75 weight sparsity with keep 0.2 skips a fifth of the
remaining weight gradients).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from clients.errors import InputError
from clients.sparcl.tdm import keep_count, top_k_mask


@dataclass(frozen=True)
class DGMConfig:
    keep: float = 0.2          # share of each layer's gradient entries kept
    refresh_every: int = 30    # batches between pattern refreshes

    def __post_init__(self) -> None:
        if not 0.0 < self.keep <= 1.0:
            raise InputError(f"dgm keep must be in (0, 1], got {self.keep}")
        if self.refresh_every < 1:
            raise InputError(f"dgm refresh_every must be >= 1, got {self.refresh_every}")


def gradient_pattern(grad: torch.Tensor, weight_mask: torch.Tensor | None, keep: float) -> torch.Tensor:
    """The top-`keep` share of |grad| over all entries, restricted to live weights."""
    g = grad.abs() if weight_mask is None else grad.abs() * weight_mask
    pattern = top_k_mask(g, keep_count(g.numel(), keep))
    return pattern if weight_mask is None else pattern & weight_mask


class GradientMasks:
    """Applies (and every N batches refreshes) the gradient patterns of a model."""

    def __init__(self, model: nn.Module, names: list[str], config: DGMConfig) -> None:
        params = dict(model.named_parameters())
        self.params = {name: params[name] for name in names}
        self.config = config
        self.patterns: dict[str, torch.Tensor] = {}
        self.batches = 0

    def restart(self) -> None:
        """Refresh at the next batch (a new epoch, or the weight mask changed)."""
        self.patterns = {}
        self.batches = 0

    @torch.no_grad()
    def apply(self, weight_masks: dict[str, torch.Tensor] | None) -> bool:
        """Mask this batch's gradients, refreshing the patterns first when due; say if it did."""
        refresh = self.batches % self.config.refresh_every == 0 or not self.patterns
        if refresh:
            self.patterns = {
                name: gradient_pattern(p.grad, weight_masks.get(name) if weight_masks else None,
                                       self.config.keep)
                for name, p in self.params.items() if p.grad is not None
            }
        for name, p in self.params.items():
            if p.grad is not None and name in self.patterns:
                p.grad.mul_(self.patterns[name])
        self.batches += 1
        return refresh

    def densities(self) -> dict[str, float]:
        return {name: float(m.float().mean()) for name, m in self.patterns.items()}
