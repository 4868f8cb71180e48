"""Continual-learning metrics on hand-made logits and accuracy matrices."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clients.metrics import average_accuracy, forgetting, learning_accuracy, task_accuracy

# The model is the identity: the inputs are the logits. 6 classes; the task is classes (2, 3).
LOGITS = torch.tensor([
    [0.0, 0.0, 5.0, 1.0, 0.0, 0.0],   # y=2: Class-IL right, Task-IL right
    [9.0, 0.0, 1.0, 2.0, 0.0, 0.0],   # y=3: Class-IL wrong (class 0), Task-IL right (3 > 2)
    [0.0, 0.0, 3.0, 1.0, 8.0, 0.0],   # y=3: Class-IL wrong, Task-IL wrong (2 > 3)
    [0.0, 0.0, 1.0, 4.0, 0.0, 0.0],   # y=3: both right
    [0.0, 7.0, 0.0, 0.0, 0.0, 0.0],   # y=2: Class-IL wrong, Task-IL: tie 0/0 -> first (class 2) right
])
LABELS = torch.tensor([2, 3, 3, 3, 2])


class Recorder(nn.Identity):
    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []
        self.sizes: list[int] = []

    def forward(self, x):
        self.modes.append(self.training)
        self.sizes.append(x.shape[0])
        return x


def test_task_accuracy_class_il_vs_task_il():
    cil, til = task_accuracy(nn.Identity(), LOGITS, LABELS, (2, 3))
    assert cil == pytest.approx(100.0 * 2 / 5)
    assert til == pytest.approx(100.0 * 4 / 5)


def test_task_accuracy_batches_and_restores_mode():
    model = Recorder()
    model.train()
    cil, til = task_accuracy(model, LOGITS, LABELS, (2, 3), batch_size=2)
    assert (cil, til) == (pytest.approx(40.0), pytest.approx(80.0))
    assert model.sizes == [2, 2, 1]
    assert model.modes == [False, False, False]  # evaluated in eval mode
    assert model.training


def test_task_accuracy_other_task():
    # told the task is (4, 5): the Task-IL answer is picked among 4 and 5 only
    y = torch.tensor([4, 5])
    logits = torch.tensor([[9.0, 0.0, 0.0, 0.0, 1.0, 0.5], [0.0, 0.0, 0.0, 0.0, 1.0, 0.5]])
    assert task_accuracy(nn.Identity(), logits, y, (4, 5)) == (pytest.approx(0.0), pytest.approx(50.0))


def test_task_accuracy_with_a_real_linear_model():
    model = nn.Linear(2, 4, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, -1.0]]))
    x = torch.tensor([[1.0, 0.5], [1.0, 3.0], [0.0, -1.0]])
    # logits: [1, .5, 2, -.5] -> argmax 2; [1, 3, 2, -3] -> 1; [0, -1, 0, 1] -> 3
    y = torch.tensor([0, 1, 1])
    # Task (0, 1): Task-IL argmax among {0, 1}: 0, 1, 0
    assert task_accuracy(model, x, y, (0, 1)) == (pytest.approx(100 / 3), pytest.approx(200 / 3))


def test_average_accuracy():
    assert average_accuracy([80.0, 60.0, 70.0]) == pytest.approx(70.0)
    assert average_accuracy([]) == 0.0


def test_forgetting_on_hand_matrix():
    matrix = [
        [90.0],
        [70.0, 95.0],
        [80.0, 60.0, 85.0],
        [50.0, 65.0, 40.0, 88.0],
    ]
    # task 0: best earlier 90 -> 50: 40; task 1: best 95 -> 65: 30; task 2: 85 -> 40: 45
    assert forgetting(matrix) == pytest.approx((40 + 30 + 45) / 3)


def test_forgetting_uses_best_not_first_and_can_be_negative():
    matrix = [[10.0], [60.0, 50.0], [70.0, 40.0, 30.0]]
    # task 0: best earlier is 60 (not the first, 10) -> 70: -10; task 1: 50 -> 40: 10
    assert forgetting(matrix) == pytest.approx(0.0)
    assert forgetting([[10.0], [30.0, 50.0]]) == pytest.approx(-20.0)


def test_forgetting_single_task_is_zero():
    assert forgetting([[77.0]]) == 0.0
    assert forgetting([]) == 0.0


def test_learning_accuracy_is_the_mean_of_the_diagonal():
    matrix = [[90.0], [70.0, 60.0], [80.0, 50.0, 30.0]]
    assert learning_accuracy(matrix) == pytest.approx((90 + 60 + 30) / 3)  # not the final row's 53.3
    assert learning_accuracy([]) == 0.0
