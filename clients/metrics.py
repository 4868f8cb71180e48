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


def forgetting(matrix: Sequence[Sequence[float]]) -> float:
    """Mean over all but the last task of (best earlier accuracy - final accuracy)."""
    if len(matrix) < 2:
        return 0.0
    final = matrix[-1]
    drops = [max(row[j] for row in matrix[:-1] if j < len(row)) - final[j] for j in range(len(matrix) - 1)]
    return float(sum(drops) / len(drops))


def learning_accuracy(matrix: Sequence[Sequence[float]]) -> float:
    """Mean accuracy on each task right after training it (the diagonal): plasticity, where
    forgetting is stability. The SparCL reference logs it as "Learning Acc"."""
    return average_accuracy([row[i] for i, row in enumerate(matrix)])
