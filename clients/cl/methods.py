"""Rehearsal methods: finetune, ER, DER, DER++ over one reservoir buffer.

Each method is a small class over `RehearsalMethod` with three hooks, in the
spirit of mammoth's `observe`, but split so that SparCL can act between the
backward pass and the optimizer step:

- `begin_task(classes)` when a new task starts;
- `loss(x, y)` builds the training loss of one step (current batch plus any
  buffer draws) and says how many examples it processed;
- `end_step(x, y, logits)` after the optimizer step: the buffer update.

Methods hold no optimizer and never call backward: the learner does that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clients.augment import crop_flip
from clients.cl.buffer import ReservoirBuffer
from clients.errors import InputError, excerpt

METHODS = ("finetune", "er", "der", "derpp")


@dataclass(frozen=True)
class MethodConfig:
    """Settings of a rehearsal method (DER++ defaults from the SparCL reference)."""

    name: str = "derpp"
    buffer_size: int = 200
    minibatch: int = 32        # size of each buffer draw
    alpha: float = 0.1         # DER / DER++: weight of the logit MSE
    beta: float = 0.5          # DER++: weight of the buffer cross-entropy
    mask_other_classes: bool = False  # current-task loss ignores logits of other tasks' classes
    augment: bool = False      # random crop + flip on the current batch and buffer draws (CIFAR)

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise InputError(f"method {excerpt(self.name)} is unknown (choose from: {', '.join(METHODS)})")
        if self.buffer_size < 0:
            raise InputError(f"buffer_size must be >= 0, got {self.buffer_size}")
        if self.minibatch < 1:
            raise InputError(f"minibatch must be >= 1, got {self.minibatch}")


@dataclass
class StepLoss:
    loss: torch.Tensor      # scalar to backpropagate
    logits: torch.Tensor    # current-batch logits (for accuracy, DDR and the buffer)
    examples: int           # examples pushed through the model this step, buffer draws included


class RehearsalMethod:
    """Finetune: cross-entropy on the current batch only (the lower bound)."""

    draws = 0  # buffer minibatches per step

    def __init__(self, model: nn.Module, config: MethodConfig, buffer: ReservoirBuffer,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.model = model
        self.config = config
        self.buffer = buffer
        self.augment = augment or (lambda x: x)
        self.classes: tuple[int, ...] = ()
        self.minibatch = config.minibatch  # a memory budget may shrink it for a round

    def step_examples(self, batch: int) -> int:
        """Examples one step pushes through the model: the batch plus every buffer draw."""
        return batch + self.draws * min(self.minibatch, len(self.buffer))

    def draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One buffer minibatch, augmented like the current batch."""
        bx, by, blogits = self.buffer.sample(self.minibatch)
        return self.augment(bx), by, blogits

    def begin_task(self, classes: tuple[int, ...]) -> None:
        self.classes = tuple(classes)

    def current_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits the current-task loss sees: other tasks' classes at -inf if masked."""
        if not self.config.mask_other_classes:
            return logits
        keep = torch.full_like(logits, float("-inf"))
        keep[:, list(self.classes)] = 0.0
        return logits + keep

    def current_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.current_logits(logits), y)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> StepLoss:
        logits = self.model(self.augment(x))
        return StepLoss(self.current_loss(logits, y), logits, x.shape[0])

    def end_step(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> None:
        """Nothing to remember for finetune (x is the non-augmented batch)."""


class ER(RehearsalMethod):
    """Experience replay: cross-entropy on the current batch plus one buffer draw."""

    draws = 1

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> StepLoss:
        step = super().loss(x, y)
        if len(self.buffer) == 0:
            return step
        bx, by, _ = self.draw()
        step.loss = step.loss + F.cross_entropy(self.model(bx), by)
        step.examples += bx.shape[0]
        return step

    def end_step(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> None:
        self.buffer.add(x, y)


class DER(RehearsalMethod):
    """Dark experience replay: match the logits stored with buffer examples."""

    draws = 1

    def logit_term(self, step: StepLoss) -> None:
        bx, _, blogits = self.draw()
        step.loss = step.loss + self.config.alpha * F.mse_loss(self.model(bx), blogits)
        step.examples += bx.shape[0]

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> StepLoss:
        step = super().loss(x, y)
        if len(self.buffer) > 0:
            self.logit_term(step)
        return step

    def end_step(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> None:
        self.buffer.add(x, y, logits.detach())


class DERPP(DER):
    """DER++: DER plus cross-entropy on a second, independent buffer draw."""

    draws = 2

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> StepLoss:
        step = super().loss(x, y)
        if len(self.buffer) > 0:
            bx, by, _ = self.draw()
            step.loss = step.loss + self.config.beta * F.cross_entropy(self.model(bx), by)
            step.examples += bx.shape[0]
        return step


_CLASSES: dict[str, type[RehearsalMethod]] = {
    "finetune": RehearsalMethod, "er": ER, "der": DER, "derpp": DERPP,
}


def build_method(model: nn.Module, config: MethodConfig, generator: torch.Generator) -> RehearsalMethod:
    capacity = 0 if config.name == "finetune" else config.buffer_size
    augment = (lambda x: crop_flip(x, generator)) if config.augment else None
    return _CLASSES[config.name](model, config, ReservoirBuffer(capacity, generator), augment)
