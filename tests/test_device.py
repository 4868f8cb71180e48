"""One device's federated round without Flower: schedule, data split, state, sparse update."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clients import wire
from clients.device import DeviceSpec, device_data, run_round, spec_task
from clients.sparcl.config import LearnerConfig, TrainConfig
from clients.sparcl.learner import Learner


pytestmark = pytest.mark.usefixtures("one_thread")


def spec(**kw) -> DeviceSpec:
    base = dict(dataset="synthetic", devices=3, rounds_per_task=2, local_epochs=1,
                learner=LearnerConfig(width=4, train=TrainConfig(epochs_per_task=2)))
    return DeviceSpec(**{**base, **kw})


def initial_update(s: DeviceSpec) -> dict[str, np.ndarray]:
    learner = Learner(s.learner, (1, 8, 8), 10)
    return wire.encode_model(learner.weights_numpy(), learner.masks_numpy())


def test_spec_round_trips_through_json():
    s = spec(alpha=0.5, mask_policy="local", value_dtype="float16")
    assert DeviceSpec.from_json(s.to_json()) == s


def test_schedule_with_stagger():
    s = spec(devices=3, rounds_per_task=2, stagger_rounds=2, n_tasks=5)
    assert [spec_task(s, 0, r) for r in range(1, 8)] == [0, 0, 1, 1, 2, 2, 3]
    assert [spec_task(s, 2, r) for r in range(1, 8)] == [0, 0, 0, 0, 1, 1, 2]


def test_devices_split_a_task_without_overlap():
    s = spec()
    parts = [device_data(s, d, 0) for d in range(3)]
    total = sum(len(y) for _, y in parts)
    rows = torch.cat([x.flatten(1) for x, _ in parts])
    assert total == len(torch.unique(rows, dim=0))  # disjoint
    assert all(set(y.tolist()) <= {0, 1} for _, y in parts)


def test_state_carries_the_task_position_and_buffer_across_rounds():
    s = spec()
    first = run_round(s, 1, 1, initial_update(s), None)
    second = run_round(s, 1, 2, first.update, first.state)
    third = run_round(s, 1, 3, second.update, second.state)
    assert [r.metrics["task-id"] for r in (first, second, third)] == [0, 0, 1]
    restored = Learner(s.learner, (1, 8, 8), 10)
    restored.load_bytes(third.state)
    assert restored.task_id == 1 and restored.epoch == 1
    assert restored.method.buffer.num_seen > 0


def test_update_is_sparse_and_counts_its_bytes():
    s = spec(learner=LearnerConfig(width=16, train=TrainConfig(epochs_per_task=2)))
    result = run_round(s, 0, 1, initial_update(s), None)
    weights, masks = wire.decode_model(result.update)
    dense_bytes = sum(w.nbytes for w in weights.values())
    assert result.metrics["up-bytes"] == wire.model_bytes(result.update)
    assert result.metrics["up-bytes"] < 0.3 * dense_bytes
    assert result.metrics["train-flops"] > 0 and result.metrics["num-examples"] > 0


def test_budget_comes_from_the_config_values():
    from clients.device import budget_from_config

    budget, fail = budget_from_config({"budget-compute-flops": 5e9, "budget-memory-bytes": 2.0**20,
                                       "budget-kernels": "sparse", "budget-speedup": "[[0.9, 2.3]]",
                                       "budget-fail-after-flops": 3e9})
    assert budget.compute_flops == 5e9 and fail == 3e9  # run_round caps the planned compute at the failure
    assert budget.memory_bytes == 2.0**20 and budget.kernels.speedup == ((0.9, 2.3),)
    budget, fail = budget_from_config({})
    assert budget.compute_flops is None and budget.memory_bytes is None and fail is None


def test_a_declined_round_leaves_the_state_byte_identical():
    from clients.budget import RoundBudget

    s = spec()
    first = run_round(s, 1, 1, initial_update(s), None)
    declined = run_round(s, 1, 2, first.update, first.state, RoundBudget(compute_flops=1.0))
    assert declined.status == "declined" and declined.update == {}
    assert declined.state == first.state
    assert declined.reason.startswith("its compute budget")


def test_a_crash_mid_round_loses_the_update_and_keeps_the_old_state():
    from clients.budget import RoundBudget

    s = spec()
    first = run_round(s, 1, 1, initial_update(s), None)
    full = run_round(s, 1, 2, first.update, first.state)
    half = full.metrics["kernel-flops"] / 2
    crashed = run_round(s, 1, 2, first.update, first.state, RoundBudget(compute_flops=half), half)
    assert crashed.status == "failed" and crashed.update == {} and crashed.state == first.state
    assert 0 < crashed.metrics["kernel-flops"] <= half  # the work it did before failing is reported
    limited = run_round(s, 1, 2, first.update, first.state, RoundBudget(compute_flops=half), 10 * half)
    assert limited.status == "ok" and limited.metrics["compute-limited"] == 1


def test_the_client_app_under_a_stock_strategy_says_what_it_needs(monkeypatch):
    """A stock FedAvg sends no device spec: one clear message instead of a bare KeyError."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from clients.app import train

    for attr, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):  # what a ServerApp process has
        monkeypatch.setattr(TaskIdentity, attr, value)

    msg = Message(RecordDict({"arrays": ArrayRecord(), "config": ConfigRecord({"lr": 0.1})}), dst_node_id=1,
                  message_type="train")
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
    with pytest.raises(ValueError, match="needs the sparcl-fleet server"):
        train(msg, context)
