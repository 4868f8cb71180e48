"""Rehearsal methods: finetune, ER, DER, DER++ over one reservoir buffer.

Each method is a small class over `RehearsalMethod` with three hooks, in the
spirit of mammoth's `observe`, but split so that SparCL can act between the
backward pass and the optimizer step:

- `begin_task(classes, task_id)` when a new task starts;
- `loss(x, y)` builds the training loss of one step (current batch plus any
  buffer draws) and says how many examples it processed;
- `end_step(x, y, logits)` after the optimizer step: the buffer update.

Methods hold no optimizer and never call backward: the learner does that.

Replay starts once the buffer holds an example, as in mammoth (its `observe`
replays `if not self.buffer.is_empty()` and fills the buffer after the step, so
from a task's second step). `replay_from_task: 1` is what SparCL's authors run:
their `train()` replays only `if ... not buffer.is_empty() and t > 0` while
filling the buffer in every task (neu-spiral/SparCL,
main_sparse_train_w_data_gradient_efficient.py, line 303; buffer.add_data at
lines 470-477, every step), so the first task trains on its own data alone.
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
    # the first task (0-based) whose steps add buffer terms; the buffer fills from the start either way.
    # 0: replay as soon as the buffer holds an example (mammoth); 1: from the second task (SparCL's code)
    replay_from_task: int = 0

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise InputError(f"method {excerpt(self.name)} is unknown (choose from: {', '.join(METHODS)})")
        if self.buffer_size < 0:
            raise InputError(f"buffer_size must be >= 0, got {self.buffer_size}")
        if self.minibatch < 1:
            raise InputError(f"minibatch must be >= 1, got {self.minibatch}")
        if isinstance(self.replay_from_task, bool) or not isinstance(self.replay_from_task, int) \
                or self.replay_from_task < 0:
            raise InputError(f"replay_from_task must be an integer >= 0, got {excerpt(self.replay_from_task)}")


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
        self.replay_on = config.replay_from_task == 0  # set per task by begin_task

    @property
    def replaying(self) -> bool:
        """Whether this step adds buffer terms: the task allows it and the buffer holds an example."""
        return self.replay_on and len(self.buffer) > 0

    @property
    def active_draws(self) -> int:
        """Buffer minibatches a step draws now (none before `replay_from_task` or with an empty buffer)."""
        return self.draws if self.replaying else 0

    def step_examples(self, batch: int) -> int:
        """Examples one step pushes through the model: the batch plus every buffer draw."""
        return batch + self.active_draws * min(self.minibatch, len(self.buffer))

    def draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One buffer minibatch, augmented like the current batch."""
        bx, by, blogits = self.buffer.sample(self.minibatch)
        return self.augment(bx), by, blogits

    def begin_task(self, classes: tuple[int, ...], task_id: int = 0) -> None:
        self.classes = tuple(classes)
        self.replay_on = task_id >= self.config.replay_from_task

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
        if not self.replaying:
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
        assert blogits is not None  # DER's end_step stores every example with its logits
        step.loss = step.loss + self.config.alpha * F.mse_loss(self.model(bx), blogits)
        step.examples += bx.shape[0]

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> StepLoss:
        step = super().loss(x, y)
        if self.replaying:
            self.logit_term(step)
        return step

    def end_step(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> None:
        self.buffer.add(x, y, logits.detach())


class DERPP(DER):
    """DER++: DER plus cross-entropy on a second, independent buffer draw."""

    draws = 2

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> StepLoss:
        step = super().loss(x, y)
        if self.replaying:
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
