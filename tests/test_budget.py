"""Budgets that bind: the kernel model, the memory policy and the learner's budgeted round."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clients.budget import (
    MIN_BATCH, MIN_BUFFER, MIN_DRAW, KernelModel, RoundBudget, fit_memory, kernel_flops_per_example,
)
from clients.cl.methods import MethodConfig
from clients.errors import InputError
from clients.sparcl.config import LearnerConfig, SparCLConfig, TrainConfig
from clients.sparcl.learner import Learner
from clients.sparcl.tdm import TDMConfig

PAPER = ((0.9, 2.3), (0.95, 3.1))  # SparCL paper, Snapdragon 865 CPU


pytestmark = pytest.mark.usefixtures("one_thread")


def make(stream, sparsity: float | None = 0.9, epochs: int = 4, buffer: int = 20, batch: int = 8) -> Learner:
    sparcl = SparCLConfig(tdm=TDMConfig(sparsity=sparsity)) if sparsity is not None else SparCLConfig.dense()
    cfg = LearnerConfig(method=MethodConfig(name="derpp", buffer_size=buffer, minibatch=8), sparcl=sparcl,
                        train=TrainConfig(epochs_per_task=epochs, batch_size=batch, lr=0.05, seed=0),
                        backbone="small-cnn", width=4)
    learner = Learner(cfg, stream.input_shape, stream.num_classes)
    t = stream.tasks[0]
    learner.begin_task(t.task_id, t.classes, t.x_train, t.y_train)
    return learner


# -- the kernel model ---------------------------------------------------------------------

def test_dense_kernels_cost_the_same_at_any_density(stream):
    sparse, dense = make(stream, 0.9), make(stream, None)
    kernels = KernelModel("dense")
    a = kernel_flops_per_example(sparse.cost, sparse.weight_densities(), kernels)
    b = kernel_flops_per_example(dense.cost, dense.weight_densities(), kernels)
    assert a == b == 3 * dense.cost.forward_flops
    # same examples, same time: the 10%-density model's compute time equals the dense model's
    assert sparse.weight_densities() and all(d < 0.2 for d in sparse.weight_densities().values())


def test_sparse_kernels_divide_masked_layers_by_the_table(stream):
    learner = make(stream, 0.9)
    kernels = KernelModel("sparse", PAPER)
    dens = {n: 0.1 for n in learner.masked_names}
    masked = sum(layer.forward_flops for layer in learner.cost.layers if layer.name in dens)
    total = kernel_flops_per_example(learner.cost, dens, kernels)
    assert total == pytest.approx(3 * (learner.cost.forward_flops - masked) + 3 * masked / 2.3)


@pytest.mark.parametrize("density,expected", [(1.0, 1.0), (0.55, 1 + 1.3 * 0.5), (0.1, 2.3), (0.075, 2.7),
                                              (0.05, 3.1), (0.01, 3.1)])
def test_speedup_interpolates_through_one_at_dense(density, expected):
    assert KernelModel("sparse", PAPER).layer_speedup(density) == pytest.approx(expected)
    assert KernelModel("dense", PAPER).layer_speedup(density) == 1.0


@pytest.mark.parametrize("table,culprit", [
    (((0.95, 3.1), (0.9, 2.3)), "increasing"), (((0.9, 2.3), (0.9, 3.0)), "increasing"),
    (((1.0, 2.0),), "[0, 1)"), (((0.9, 0.0),), "> 0"), (((0.9, -1.0),), "> 0"), (((0.9,),), "point")])
def test_bad_speedup_tables_are_refused(table, culprit):
    with pytest.raises(InputError, match=culprit.replace("[", r"\[").replace(")", r"\)")):
        KernelModel("sparse", table)


def test_sparse_kernels_need_a_table_and_names_are_checked():
    with pytest.raises(InputError, match="needs a speedup table"):
        KernelModel("sparse")
    with pytest.raises(InputError, match="'magic' is unknown"):
        KernelModel("magic")


# -- the memory policy ---------------------------------------------------------------------

def linear_estimate(batch: int, draw: int, buffer: int) -> int:
    return 1000 + 100 * batch + 10 * draw + buffer


def test_memory_policy_shrinks_batch_then_draw_then_buffer():
    assert fit_memory(linear_estimate, None, 32, 32, 200).adaptations == ()
    fit = fit_memory(linear_estimate, 1000 + 100 * 8 + 10 * 32 + 200, 32, 32, 200)
    assert (fit.batch, fit.draw, fit.buffer) == (8, 32, 200)
    assert fit.adaptations == ("batch 32->16", "batch 16->8") and fit.declined is None
    budget = 1000 + 100 * MIN_BATCH + 10 * MIN_DRAW + 200
    fit = fit_memory(linear_estimate, budget, 32, 32, 200)
    assert (fit.batch, fit.draw, fit.buffer) == (MIN_BATCH, MIN_DRAW, 200)
    assert fit.adaptations[-1] == f"draw 8->{MIN_DRAW}"
    fit = fit_memory(linear_estimate, budget - 100, 32, 32, 200)
    assert fit.buffer == 100 and fit.adaptations[-1] == "buffer 200->100" and fit.memory_bytes <= budget - 100


def test_memory_policy_declines_with_its_reason_when_the_smallest_setting_does_not_fit():
    smallest = linear_estimate(MIN_BATCH, MIN_DRAW, MIN_BUFFER)
    fit = fit_memory(linear_estimate, smallest - 1, 32, 32, 200)
    assert (fit.batch, fit.draw, fit.buffer) == (MIN_BATCH, MIN_DRAW, MIN_BUFFER)
    assert fit.declined.startswith(f"needs {smallest / 2**20:.1f} MiB at batch {MIN_BATCH}, draw {MIN_DRAW}, "
                                   f"buffer {MIN_BUFFER}")
    assert fit_memory(linear_estimate, smallest, 32, 32, 200).declined is None


# -- the budgeted round ---------------------------------------------------------------------

def test_a_device_given_c_flops_does_at_most_c(stream):
    learner = make(stream)
    full = make(stream).train_round(2, RoundBudget())
    assert full.steps == 2 * 5 and not full.compute_limited  # 40 examples, batch 8
    budget = 0.37 * full.kernel_flops
    work = learner.train_round(2, RoundBudget(compute_flops=budget))
    assert 0 < work.kernel_flops <= budget
    assert work.compute_limited and 0 < work.steps < full.steps
    assert learner.counters.kernel_flops == work.kernel_flops
    assert learner.epoch == work.steps // 5 and learner.cursor == 8 * (work.steps % 5)  # real progress


def test_under_dense_kernels_sparcl_and_dense_derpp_execute_the_same_flops_for_the_same_steps(stream):
    """Dense kernels multiply the masked zeros: SparCL-DER++ at 0.9 and dense DER++ run the same kernels a
    step, so equal steps are equal executed FLOPs (time), while SparCL's counted FLOPs are far fewer."""
    sparse, dense = make(stream, 0.9), make(stream, None)
    kernels = KernelModel("dense")
    for learner in (sparse, dense):
        learner.use_kernels(kernels)
    a, b = sparse.train_round(1, RoundBudget()), dense.train_round(1, RoundBudget())
    assert a.steps == b.steps == 5 and a.examples == b.examples
    assert a.kernel_flops == b.kernel_flops > 0
    assert a.train_flops < 0.5 * b.train_flops


def test_the_epoch_position_carries_over_between_rounds(stream):
    a, b = make(stream), make(stream)
    per_round = [a.train_round(2, RoundBudget(compute_flops=3.5 * 24 * a.step_costs()[1])).steps
                 for _ in range(3)]
    assert all(0 < s < 5 for s in per_round)  # each round stops inside an epoch
    for _ in range(sum(per_round)):  # the same steps without rounds
        if b.order is None:
            b._start_epoch()
        b._train_batch(8)
        if b.cursor >= len(b.order):
            b._finish_epoch()
    assert (a.epoch, a.cursor) == (b.epoch, b.cursor) and a.cursor > 0
    assert torch.equal(a.model.stem[0].weight, b.model.stem[0].weight)  # the very same training


def test_a_budget_that_fits_no_step_declines_without_training(stream):
    learner = make(stream)
    before = learner.to_bytes()
    work = learner.train_round(2, RoundBudget(compute_flops=1.0))
    assert work.steps == 0 and work.declined.startswith("its compute budget of 1e-09 GFLOPs fits no step")
    assert learner.counters.steps == 0
    assert learner.model.state_dict().keys() and before  # nothing trained


def test_memory_budget_shrinks_the_batch_and_is_reported(stream):
    learner = make(stream)
    needed = learner.round_memory(8, 8, 20)
    smaller = learner.round_memory(4, 8, 20)
    work = learner.train_round(1, RoundBudget(memory_bytes=(needed + smaller) / 2))
    assert work.fit.adaptations == ("batch 8->4",) and work.declined is None
    assert work.steps == 10  # one epoch of 40 examples at batch 4
    assert work.peak_memory_bytes <= (needed + smaller) / 2
    assert learner.batch_size == 8  # the next round starts from the configured batch again


def test_memory_budget_below_the_smallest_setting_declines(stream):
    learner = make(stream)
    smallest = learner.round_memory(MIN_BATCH, MIN_DRAW, MIN_BUFFER)
    work = learner.train_round(1, RoundBudget(memory_bytes=smallest - 1))
    assert work.declined and "over its" in work.declined and work.steps == 0
    assert learner.counters.steps == 0


def test_dense_kernels_hold_dense_weights_in_the_memory_estimate(stream):
    learner = make(stream, 0.9)
    dense_hold = learner.round_memory(8, 8, 20)
    learner.kernels = KernelModel("sparse", PAPER)
    assert learner.round_memory(8, 8, 20) < dense_hold


def test_a_round_cut_short_resumes_from_its_saved_state(stream):
    a, b = make(stream), make(stream)
    budget = RoundBudget(compute_flops=3.5 * 24 * a.step_costs()[1])
    a.train_round(2, budget)
    assert a.order is not None and a.cursor > 0  # stopped inside an epoch
    b.load_bytes(a.to_bytes())
    b.attach(stream.tasks[0].x_train, stream.tasks[0].y_train)
    assert isinstance(b.order, np.ndarray) and np.array_equal(a.order, b.order) and b.cursor == a.cursor
    wa, wb = a.train_round(2, budget), b.train_round(2, budget)
    assert wa.steps == wb.steps and torch.equal(a.model.stem[0].weight, b.model.stem[0].weight)


def test_a_compacted_layer_is_as_fast_as_measured_never_faster_than_its_flops():
    from clients.budget import table_speedup

    measured = KernelModel(compaction=((0.75, 2.5), (0.9, 4.5)))
    assert measured.compacted_speedup(0.1) == pytest.approx(4.5)        # 90% of the FLOPs saved: measured 4.5x
    assert measured.compacted_speedup(0.175) == pytest.approx(3.5)      # between the points
    assert measured.compacted_speedup(0.01) == pytest.approx(4.5)       # beyond the table: the last point
    assert KernelModel(compaction=((0.5, 3.0),)).compacted_speedup(0.5) == pytest.approx(2.0)  # capped at 1/share
    assert KernelModel().compacted_speedup(0.25) == pytest.approx(4.0)  # no table: the ideal
    assert table_speedup(((0.9, 2.3),), 0.0) == 1.0


def test_scenarios_cost_compacted_layers_by_the_measured_table_by_default():
    import yaml

    from fleet.world import MEASURED_COMPACTION_SPEEDUP
    from fleet.config import parse_scenario

    base = {"name": "c", "sparcl": {"granularity": "channel"}}
    assert parse_scenario(base).kernel_model().compaction == MEASURED_COMPACTION_SPEEDUP
    own = parse_scenario({**base, "timing": {"compaction_speedup": {0.5: 1.5}}}).kernel_model()
    assert own.compaction == ((0.5, 1.5),)
    with pytest.raises(InputError, match="timing.compaction_speedup"):
        parse_scenario({**base, "timing": {"compaction_speedup": {0.5: 2.0, 0.9: 1.0}}})
    with pytest.raises(InputError, match="sparcl.granularity channel"):
        parse_scenario(yaml.safe_load("name: c\nsparcl: {granularity: channel, tdm: false}"))
