"""Continual-learning metrics: accuracy matrix, average accuracy, forgetting, learning accuracy.

`matrix[i][j]` is the accuracy on task j's test set after training task i
(j <= i). Class-IL predicts among all classes seen by the model; Task-IL is
told the task and predicts among that task's classes only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


@torch.no_grad()
def task_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: Sequence[int],
                  batch_size: int = 512) -> tuple[float, float]:
    """(Class-IL, Task-IL) accuracy in percent on one task's test set."""
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)  # test sets stay on the CPU; batches go to the model
    device = x.device if param is None else param.device
    class_il = task_il = 0
    others = None
    for start in range(0, x.shape[0], batch_size):
        logits = model(x[start:start + batch_size].to(device))
        yb = y[start:start + batch_size].to(device)
        class_il += int((logits.argmax(1) == yb).sum())
        if others is None:
            others = torch.ones(logits.shape[1], dtype=torch.bool, device=device)
            others[list(classes)] = False
        task_il += int((logits.masked_fill(others, float("-inf")).argmax(1) == yb).sum())
    model.train(was_training)
    n = max(1, x.shape[0])
    return 100.0 * class_il / n, 100.0 * task_il / n


def average_accuracy(row: Sequence[float]) -> float:
    return float(sum(row) / len(row)) if row else 0.0


def forgetting(matrix: Sequence[Sequence[float]], *, authors: bool = False) -> float:
    """Mean, over every task seen but the last, of its best accuracy minus its final accuracy.

    `matrix` rows are evaluations in order (after each task, or after each
    round of a fleet); row i holds the tasks seen by then. Ours (the default)
    takes the best over the rows before the final one, so a task that ends at
    its best counts as negative forgetting (backward transfer). The authors'
    (SparCL's code, mammoth's `forgetting`) take the best over every row, final
    included, so it is never negative.
    """
    if len(matrix) < 2:
        return 0.0
    final = matrix[-1]
    rows = matrix if authors else matrix[:-1]
    drops = []
    for j in range(len(final) - 1):
        earlier = [row[j] for row in rows if j < len(row)]
        if earlier:
            drops.append(max(earlier) - final[j])
    return float(sum(drops) / len(drops)) if drops else 0.0


def learning_accuracy(matrix: Sequence[Sequence[float]]) -> float:
    """Mean accuracy on each task right after training it (the diagonal): plasticity, where
    forgetting is stability. The SparCL reference logs it as "Learning Acc"."""
    return average_accuracy([row[i] for i, row in enumerate(matrix)])


def learning_accuracy_over_rounds(history: Sequence[Sequence[float]]) -> float:
    """A fleet's learning accuracy: from per-round evaluations (row r holds the tasks reached by
    round r), each task's accuracy in the last round while it was the newest, averaged."""
    ends: dict[int, float] = {}
    for row in history:
        if row:
            ends[len(row) - 1] = row[-1]
    return average_accuracy(list(ends.values()))


def last_k_mean(values: Sequence[float], k: int) -> float:
    """The mean of the last k values: a final figure that one noisy round cannot move alone."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    tail = list(values)[-k:]
    return float(sum(tail) / len(tail)) if tail else 0.0
