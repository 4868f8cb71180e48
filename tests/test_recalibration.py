"""Norm recalibration at a task's end: it changes the running statistics and nothing else, and is paid for."""

from __future__ import annotations

import pytest
import torch

from clients.accounting import forward_flops_per_example, profile_model
from clients.budget import RoundBudget
from clients.cl.methods import MethodConfig
from clients.errors import InputError
from clients.sparcl.config import LearnerConfig, SparCLConfig, TrainConfig
from clients.sparcl.learner import Learner
from clients.sparcl.tdm import TDMConfig
from fleet.bench import BenchConfig, learner_config
from fleet.config import parse_scenario

pytestmark = pytest.mark.usefixtures("one_thread")


def make(stream, recalibrate: bool, sparcl: SparCLConfig | None = None, epochs: int = 3) -> Learner:
    cfg = LearnerConfig(
        method=MethodConfig(name="derpp", buffer_size=12, minibatch=8),
        sparcl=SparCLConfig() if sparcl is None else sparcl,
        train=TrainConfig(epochs_per_task=epochs, batch_size=8, lr=0.05, seed=0, recalibrate_norms=recalibrate),
        backbone="small-cnn", width=4,
    )
    return Learner(cfg, stream.input_shape, stream.num_classes)


def train_task(learner: Learner, task) -> None:
    learner.begin_task(task.task_id, task.classes, task.x_train, task.y_train)
    while not learner.task_done:
        learner.train_epoch()


def norms(learner: Learner) -> list[torch.nn.BatchNorm2d]:
    return [m for m in learner.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_recalibration_changes_the_statistics_and_nothing_else(stream):
    """Training uses batch statistics, so with the learner's random streams untouched the weights,
    masks, buffer and removals of a recalibrating learner stay bit-identical to the reference's."""
    plain, recal = make(stream, False), make(stream, True)
    for task in stream.tasks[:3]:
        train_task(plain, task)
        train_task(recal, task)
        for (name, p), q in zip(plain.model.named_parameters(), recal.model.parameters()):
            assert torch.equal(p, q), name
        assert all(torch.equal(plain.masks.masks[n], recal.masks.masks[n]) for n in plain.masks.masks)
        assert torch.equal(plain.method.buffer.examples, recal.method.buffer.examples)
        assert (plain.removal.active == recal.removal.active).all()
        assert any(not torch.equal(a.running_mean, b.running_mean) for a, b in zip(norms(plain), norms(recal)))


def test_statistics_are_the_average_over_the_task_and_buffer_mix(stream):
    """The stem norm's running mean is the average of its per-batch input means over the pass:
    every task example and the method's buffer draws (reset first, not blended with the old average)."""
    learner = make(stream, True)
    for task in stream.tasks[:2]:
        train_task(learner, task)
    batches = list(learner._recalibration_batches())
    assert sum(len(b) for b in batches) == learner.recalibration_examples()
    task_rows = torch.cat(batches[::1 + learner.method.draws])
    assert sorted(map(tuple, task_rows.flatten(1).tolist())) == sorted(map(tuple, learner.x.flatten(1).tolist()))
    stem_conv, stem_norm = learner.model.stem[0], learner.model.stem[1]
    with torch.no_grad():
        means = torch.stack([stem_conv(b).mean(dim=(0, 2, 3)) for b in batches])
    torch.testing.assert_close(stem_norm.running_mean, means.mean(0), rtol=1e-5, atol=1e-6)
    assert int(stem_norm.num_batches_tracked) == len(batches)
    assert stem_norm.momentum == 0.1  # the training momentum is back


def test_recalibration_fixes_statistics_left_stale(stream):
    """Statistics from another network (here: a norm's running average scrambled) are replaced."""
    learner = make(stream, True, SparCLConfig.dense())
    train_task(learner, stream.tasks[0])
    expected = [m.running_var.clone() for m in norms(learner)]
    for m in norms(learner):
        m.running_var.mul_(50.0)
    learner.recalibrate_norms()
    for m, want in zip(norms(learner), expected):
        torch.testing.assert_close(m.running_var, want)


def test_the_pass_is_counted_as_forward_flops_and_not_as_training_examples(stream):
    plain, recal = make(stream, False), make(stream, True)
    for learner in (plain, recal):
        train_task(learner, stream.tasks[0])
    before = {id(x): (x.counters.train_flops, x.counters.kernel_flops) for x in (plain, recal)}
    for learner in (plain, recal):
        train_task(learner, stream.tasks[1])  # the same steps (the first test): they differ by the pass alone
    (plain_flops, plain_kernel), (recal_flops, recal_kernel) = (
        (x.counters.train_flops - before[id(x)][0], x.counters.kernel_flops - before[id(x)][1]) for x in (plain, recal))
    flops, kernel, densities = recal.step_costs()
    forward = forward_flops_per_example(recal.cost, densities)
    n = recal.recalibration_examples()
    assert n == len(recal.y) + 5 * 2 * 8  # 40 examples in 5 batches, each with two draws of 8
    assert recal_flops == pytest.approx(plain_flops + n * forward, rel=1e-9)
    assert recal_kernel == pytest.approx(plain_kernel + n * kernel / 3.0, rel=1e-9)
    assert recal.counters.examples == plain.counters.examples
    assert 0 < forward < flops / 2  # a sparse forward pass without any gradient


def test_forward_flops_of_a_dense_model_are_its_forward_pass():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 10))
    cost = profile_model(model, (1, 8, 8))
    assert forward_flops_per_example(cost, {}) == pytest.approx(cost.forward_flops)
    conv = cost.layers[0]
    half = forward_flops_per_example(cost, {conv.name: 0.5})
    assert half == pytest.approx(cost.forward_flops - 0.5 * conv.forward_flops)
    assert forward_flops_per_example(cost, {conv.name: 0.5}, {conv.name: 0.25}) == pytest.approx(
        cost.forward_flops - 0.75 * conv.forward_flops)  # compacted layers run their live share


def test_a_compute_budget_pays_for_the_pass_before_the_task_ends(stream):
    """A budget that fits the task's steps but not the pass stops before the last step."""
    sparcl = SparCLConfig(tdm=TDMConfig(sparsity=0.5), ddr=None, dgm=None)
    first, task = stream.tasks[0], stream.tasks[1]

    def at_second_task(recalibrate: bool) -> Learner:  # a full buffer: the pass has its draws
        learner = make(stream, recalibrate, sparcl, epochs=1)
        train_task(learner, first)
        learner.begin_task(task.task_id, task.classes, task.x_train, task.y_train)
        return learner

    steps_only = at_second_task(False).train_round(1).kernel_flops
    for extra, finished in ((0.0, False), (1.001, True)):
        learner = at_second_task(True)
        pass_cost = learner.recalibration_examples() * learner.step_costs()[1] / 3.0
        work = learner.train_round(1, RoundBudget(compute_flops=steps_only + extra * pass_cost))
        assert learner.task_done is finished and work.compute_limited is not finished
        assert work.kernel_flops <= steps_only + extra * pass_cost


def test_bench_and_scenario_pass_the_setting_on():
    bench = BenchConfig(recalibrate_norms=True)
    assert learner_config(bench, SparCLConfig.dense(), seed=0).train.recalibrate_norms
    assert not learner_config(BenchConfig(), SparCLConfig.dense(), seed=0).train.recalibrate_norms
    scenario = parse_scenario({"name": "r", "train": {"recalibrate_norms": True}})
    assert scenario.learner_config(3).train.recalibrate_norms
    assert not parse_scenario({"name": "r"}).learner_config(3).train.recalibrate_norms
    with pytest.raises(InputError, match="train.recalibrate_norms"):
        parse_scenario({"name": "r", "train": {"recalibrate_norms": "yes"}})
