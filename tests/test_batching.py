"""How an epoch is cut into batches: the reference's DataLoader cut, and balanced batches that leave DDR no
tiny last step (clients.batching), in the learner and in the dry run's count of it."""

from __future__ import annotations

import math

import pytest

from clients.batching import batch_slices
from clients.cl.methods import MethodConfig
from clients.errors import InputError
from clients.sparcl.config import LearnerConfig, SparCLConfig, TrainConfig
from clients.sparcl.ddr import DDRConfig
from clients.sparcl.learner import Learner
from clients.sparcl.tdm import TDMConfig
from fleet.run.dryrun import DeviceBook, StepCost, train_steps

pytestmark = pytest.mark.usefixtures("one_thread")


def cut(n: int, batch: int, batching: str) -> list[int]:
    parts = list(batch_slices(n, batch, batching))
    assert [p.start for p in parts] == [0, *(p.stop for p in parts[:-1])]  # contiguous, in order
    return [p.stop - p.start for p in parts]


def test_the_loader_cut_is_full_batches_then_the_remainder():
    assert cut(420, 32, "loader") == [32] * 13 + [4]  # what DDR leaves of a 600-example task
    assert cut(64, 32, "loader") == [32, 32] and cut(5, 32, "loader") == [5]


def test_balanced_batches_are_as_many_steps_within_one_example_and_never_above_the_batch():
    assert cut(420, 32, "balanced") == [30] * 14
    assert cut(600, 32, "balanced") == [32] * 11 + [31] * 8
    for n in range(1, 400):
        for batch in (1, 7, 32):
            sizes = cut(n, batch, "balanced")
            assert sum(sizes) == n and len(sizes) == math.ceil(n / batch), (n, batch)
            assert max(sizes) <= batch and max(sizes) - min(sizes) <= 1, (n, batch, sizes)


def test_an_unknown_batching_is_refused_naming_it():
    with pytest.raises(InputError, match="batches must be one of loader, balanced, got 'tiny'"):
        TrainConfig(batches="tiny")


def learner(stream, batches: str) -> Learner:
    config = LearnerConfig(
        method=MethodConfig(name="derpp", buffer_size=20, minibatch=8),
        sparcl=SparCLConfig(tdm=TDMConfig(sparsity=0.5), ddr=DDRConfig(points=(0.2,), fraction=0.3), dgm=None),
        train=TrainConfig(epochs_per_task=3, batch_size=8, lr=0.05, batches=batches), backbone="small-cnn", width=4)
    return Learner(config, stream.input_shape, stream.num_classes)


@pytest.mark.parametrize("batches", ["loader", "balanced"])
def test_the_learner_takes_the_same_steps_over_the_same_examples_either_way(stream, batches):
    """40 examples, DDR removes 12 at epoch 1: 28 active, 4 steps an epoch (8, 8, 8, 4 or 7, 7, 7, 7)."""
    task, seen = stream.tasks[0], []
    model = learner(stream, batches)
    model.begin_task(task.task_id, task.classes, task.x_train, task.y_train)
    original = model._train_batch
    model._train_batch = lambda n: seen.append(n) or original(n)
    while not model.task_done:
        model.train_epoch()
    last_epochs = seen[5:]  # after the first epoch's 40 examples
    assert sum(seen) == 40 + 28 + 28 and len(seen) == 5 + 4 + 4
    assert last_epochs == ([8, 8, 8, 4] * 2 if batches == "loader" else [7, 7, 7, 7] * 2)
    assert model.counters.steps == 13 and model.counters.removed == 12


@pytest.mark.parametrize("batches, examples", [("loader", 25 + 0 + 10 + 12), ("balanced", 25 + 0 + 9 + 12)])
def test_the_dry_run_counts_the_batches_as_the_learner_cuts_them(batches, examples):
    """25 examples at batch 10 (10, 10, 5 or 9, 8, 8), ER drawing up to 12: the buffer holds what the steps
    before offered, so the second step draws 10 or 9, the third 12."""
    cost = StepCost(train_flops_per_example=1.0, kernel_flops_per_example=1.0, batch=10, draw=12, draws=1,
                    buffer=100, memory=lambda batch, draw, buffer: 0, epochs_per_task=8, batches=batches)
    steps, _ = train_steps(cost, DeviceBook(active=25, task=0), examples=25, epochs=1, batch=10, draw=12,
                           capacity=100, compute=None)
    assert steps.steps == 3 and steps.examples == examples
