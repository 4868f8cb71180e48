"""The dry run counts a device's round as its learner trains it, and its training FLOPs bound the real ones.

A real device (clients.device.run_round, the ClientApp's round) and the dry
run's model of it go through the same rounds and budgets: the steps and the
executed FLOPs are equal, replay draws included from the second step on; the
counted FLOPs of the dry run are never below the real count.
"""

from __future__ import annotations

import csv

import pytest

from clients import wire
from clients.budget import KernelModel, RoundBudget
from clients.device import run_round, spec_task
from clients.sparcl.learner import Learner
from conftest import binding_deadline_scenario
from fleet.run.dryrun import FLOPS_BOUND, DeviceBook, StepCost, partition_sizes, round_work, step_cost, train_steps
from fleet.run import device_spec
from fleet.config import parse_scenario


def cost(draws: int = 2, **over) -> StepCost:
    base = dict(train_flops_per_example=2.0, kernel_flops_per_example=10.0, batch=10, draw=5, draws=draws,
                buffer=100, memory=lambda batch, draw, buffer: 0, forward_flops_per_example=1.0, epochs_per_task=8)
    return StepCost(**{**base, **over})


def test_replay_starts_at_the_second_step_and_draws_what_the_buffer_holds():
    """DER++ from an empty buffer: the first step draws nothing; each step offers its batch to the buffer,
    so the second draws min(5, 10) twice. 25 examples, batch 10: steps of 10, 10, 5 an epoch."""
    steps, book = train_steps(cost(), DeviceBook(active=25, task=0), examples=25, epochs=2, batch=10, draw=5,
                              capacity=100, compute=None)
    assert steps.steps == 6 and steps.examples == 50 + 5 * 2 * 5  # every step after the first draws 2 x 5
    assert steps.kernel_flops == 10.0 * steps.examples
    assert (book.seen, book.epoch, book.order) == (50, 2, None)


def test_a_small_buffer_draws_all_it_holds_until_it_holds_a_draw():
    """Batch 4, draw 12, ER: the draws grow 0, 4, 8, 12, 12 as the buffer fills; a capacity of 6 caps them."""
    steps, _ = train_steps(cost(draws=1), DeviceBook(active=20, task=0), examples=20, epochs=1, batch=4, draw=12,
                           capacity=100, compute=None)
    assert steps.examples == 20 + 0 + 4 + 8 + 12 + 12
    small, book = train_steps(cost(draws=1), DeviceBook(active=20, task=0), examples=20, epochs=1, batch=4,
                              draw=12, capacity=6, compute=None)
    assert small.examples == 20 + 0 + 4 + 6 + 6 + 6 and book.seen == 20  # seen counts every offer


def test_ddr_removes_at_the_epochs_start_and_the_rounds_steps_stay_as_planned():
    """The learner fixes a round's steps from the examples active at its start (2 epochs of ceil(25 / 10));
    removing 5 at epoch 1 makes its epochs shorter, so the round runs into a third epoch."""
    steps, book = train_steps(cost(draws=0, removals=((1, 0.2),)), DeviceBook(active=25, task=0), examples=25,
                              epochs=2, batch=10, draw=5, capacity=0, compute=None)
    assert steps.steps == 6 and steps.removed == 5
    assert steps.examples == (10 + 10 + 5) + (10 + 10) + 10
    assert (book.active, book.epoch, book.cursor, book.order) == (20, 2, 10, 20)


def test_a_compute_budget_stops_before_the_step_that_overruns_and_the_next_round_goes_on_from_there():
    first, book = train_steps(cost(draws=0), DeviceBook(active=25, task=0), examples=25, epochs=1, batch=10,
                              draw=5, capacity=0, compute=240.0)
    assert first.steps == 2 and first.limited and first.kernel_flops == 200.0 and book.cursor == 20
    second, book = train_steps(cost(draws=0), book, examples=25, epochs=1, batch=10, draw=5, capacity=0,
                               compute=None)
    assert second.examples == 5 + 10 + 10 and (book.epoch, book.cursor) == (1, 20)


def test_a_round_that_is_not_ok_leaves_the_book_as_it_was():
    book = DeviceBook(seen=7)
    work, after = round_work(cost(), 0, 100, 1, book, {"compute-flops": 900.0, "fail-after-flops": 300.0})
    assert work.status == "failed" and work.kernel_flops == 200.0 and after is book  # one step of 10 + 2 x 5
    work, after = round_work(cost(), 0, 100, 1, book, {"compute-flops": 50.0})
    assert work.status == "declined" and "fits no step (one costs" in work.reason and after is book


def scenario_data(method: str, **over) -> dict:
    data = {"name": "bound", "seed": 1, "dataset": {"name": "synthetic"}, "fleet": {"devices": 2},
            "stream": {"rounds_per_task": 2},
            "method": {"name": method, "buffer_size": 40, "minibatch": 12},
            "train": {"local_epochs": 2, "batch_size": 8, "width": 4, "lr": 0.05}}
    for key, value in over.items():
        data[key] = {**data.get(key, {}), **value}
    return data


# each round's plan, in units of one full step's kernel FLOPs: None (no limit), a compute budget, a memory
# budget that halves the batch and the draw, and a failure before the budget ends (failed, nothing kept)
PLANS = [None, 3.5, None, 0.4, 5.2, "memory", (6.0, 2.5), None]


def plan_for(entry, cost_: StepCost) -> tuple[dict, RoundBudget, float | None]:
    step = (cost_.batch + cost_.draws * cost_.draw) * cost_.kernel_flops_per_example
    if entry is None:
        return {}, RoundBudget(), None
    if entry == "memory":
        memory = float(cost_.memory(cost_.batch // 2, cost_.draw // 2, cost_.buffer))
        return {"memory-bytes": memory}, RoundBudget(memory_bytes=memory), None
    if isinstance(entry, tuple):
        compute, fail = entry[0] * step, entry[1] * step
        return ({"compute-flops": compute, "fail-after-flops": fail}, RoundBudget(compute_flops=compute), fail)
    return {"compute-flops": entry * step}, RoundBudget(compute_flops=entry * step), None


@pytest.mark.parametrize("method, over", [
    ("derpp", {}),                                                    # SparCL-DER++: TDM, DDR, DGM, the pass
    ("er", {"train": {"recalibrate_norms": True}}),                   # the task-end pass inside the round
    ("derpp", {"sparcl": {"enabled": False}, "federation": {"norm_statistics": "averaged"}}),  # dense
    ("finetune", {"sparcl": {"ddr": False}}),
    ("der", {"federation": {"mask_policy": "local"}, "sparcl": {"dgm_keep": 0.05}}),
    ("derpp", {"train": {"batches": "balanced"}}),                    # DDR's epochs cut into balanced batches
])
def test_the_dry_run_trains_as_a_real_device_and_bounds_its_counted_flops(method, over):
    scenario = parse_scenario(scenario_data(method, **over), source="bound")
    spec = device_spec(scenario)
    sizes, stream = partition_sizes(spec)
    server = Learner(spec.learner.with_device("cpu"), stream.input_shape, stream.num_classes)
    cost_ = step_cost(spec, server, KernelModel(), resparsify=True)
    assert cost_.fixed_kernels
    update = wire.encode_model(server.weights_numpy(), server.masks_numpy(), value_dtype="float32")
    device, state, book = 1, None, DeviceBook()
    seen_statuses = set()
    for server_round, entry in enumerate(PLANS, start=1):
        plan, budget, fail = plan_for(entry, cost_)
        task = spec_task(spec, device, server_round)
        real = run_round(spec, device, server_round, update, state, budget, fail)
        dry, after = round_work(cost_, task, int(sizes[task, device]), spec.local_epochs, book, plan)
        where = f"round {server_round} ({entry})"
        assert dry.status == real.status, where
        assert dry.steps == real.metrics["steps"], where
        assert dry.examples == real.metrics["examples-processed"], where
        assert dry.kernel_flops == pytest.approx(real.metrics["kernel-flops"], rel=1e-9, abs=1e-3), where
        assert dry.train_flops >= real.metrics["train-flops"] * (1 - 1e-9), where  # the counters round
        assert dry.train_flops <= 1.3 * real.metrics["train-flops"] + 1e-3, where  # a bound, not a guess
        if real.status == "ok":
            state, book = real.state, after
        seen_statuses.add(real.status)
    assert seen_statuses == {"ok", "declined", "failed"}


@pytest.mark.e2e
def test_on_a_real_flower_run_the_dry_runs_flops_bound_every_round(tmp_path):
    """A real run with a binding deadline, failures and replay: round by round the dry run's executed
    FLOPs are the real ones and its counted FLOPs are at least the real count; time and energy follow."""
    from fleet.run import dry_run
    from fleet.run import run_scenario
    from fleet.config import load_scenario

    scenario = load_scenario(binding_deadline_scenario(tmp_path / "s.yaml", "bound", rounds=5))
    run_scenario(scenario, tmp_path / "real")
    summary = dry_run(scenario, tmp_path / "dry")
    assert summary["estimate"] == FLOPS_BOUND and summary["flops_upper_bound"] is True
    real = list(csv.DictReader((tmp_path / "real" / "rounds.csv").open()))
    dry = list(csv.DictReader((tmp_path / "dry" / "rounds.csv").open()))
    for a, b in zip(real, dry, strict=True):
        counted = [float(r["train_flops"]) + float(r["wasted_train_flops"]) for r in (a, b)]
        executed = [float(r["executed_flops"]) + float(r["wasted_executed_flops"]) for r in (a, b)]
        assert a["statuses"] == b["statuses"] and a["download_bytes"] == b["download_bytes"]
        assert float(b["upload_bytes"]) == pytest.approx(float(a["upload_bytes"]), rel=0.05)  # nnz drifts
        assert executed[1] == pytest.approx(executed[0], rel=1e-9)
        assert counted[1] >= counted[0] * (1 - 1e-9)  # equal where a mask is at its densest
        assert float(b["sim_time_s"]) == pytest.approx(float(a["sim_time_s"]), rel=1e-3)
        assert float(b["energy_j"]) == pytest.approx(float(a["energy_j"]), rel=1e-3)
