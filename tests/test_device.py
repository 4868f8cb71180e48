"""One device's federated round without Flower: schedule, data split, state, sparse update."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clients import wire
from clients.device import DeviceSpec, device_data, run_round, spec_task
from clients.sparcl.learner import Learner, LearnerConfig, TrainConfig


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


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


def test_budget_metrics_compare_the_memory_estimate_with_the_budget():
    from clients.device import budget_metrics

    assert budget_metrics(2**20, {"budget-memory-mb": 1.0}) == {"fits-memory-budget": 1}
    assert budget_metrics(2**20 + 1, {"budget-memory-mb": 1.0}) == {"fits-memory-budget": 0}
    assert budget_metrics(10, {}) == {}
