"""Reservoir buffer: fill order, uniformity of the sample, sampling without replacement, state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clients.cl.buffer import ReservoirBuffer, reservoir_slot


def stream(n: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.arange(start, start + n, dtype=torch.float32)
    return ids.view(n, 1), torch.arange(start, start + n) % 10


def test_fills_to_capacity_in_order():
    buf = ReservoirBuffer(5, torch.Generator().manual_seed(0))
    assert len(buf) == 0
    x, y = stream(3)
    buf.add(x, y)
    assert len(buf) == 3 and buf.num_seen == 3
    x, y = stream(2, start=3)
    buf.add(x, y)
    assert len(buf) == 5
    assert buf.examples.flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert buf.labels.tolist() == [0, 1, 2, 3, 4]
    assert buf.logits is None
    x, y = stream(50, start=5)
    buf.add(x, y)
    assert len(buf) == 5 and buf.num_seen == 55
    stored = buf.examples.flatten().long()
    assert torch.equal(buf.labels, stored % 10)  # example and label stay paired


def test_logits_stored_with_examples():
    buf = ReservoirBuffer(4, torch.Generator().manual_seed(0))
    x, y = stream(20)
    logits = x.repeat(1, 3) * torch.tensor([1.0, 2.0, 3.0])
    buf.add(x, y, logits)
    ids = buf.examples.flatten()
    assert torch.equal(buf.logits, ids.view(-1, 1) * torch.tensor([1.0, 2.0, 3.0]))


def test_zero_capacity_stores_nothing():
    buf = ReservoirBuffer(0, torch.Generator())
    buf.add(*stream(10))
    assert len(buf) == 0 and buf.examples is None


def test_reservoir_slot_probability():
    # the (n+1)-th example is kept with probability capacity / (n+1), at a uniform slot
    gen = torch.Generator().manual_seed(1)
    assert reservoir_slot(3, 10, gen) == 3
    trials = 20000
    slots = np.array([reservoir_slot(39, 10, gen) for _ in range(trials)])
    kept = slots >= 0
    assert abs(kept.mean() - 0.25) < 0.02  # 10 / 40; 4.4 sigma
    counts = np.bincount(slots[kept], minlength=10)
    assert counts.min() > 0.8 * kept.sum() / 10


def inclusion_counts(n: int, capacity: int, runs: int) -> np.ndarray:
    counts = np.zeros(n)
    x, y = stream(n)
    for seed in range(runs):
        buf = ReservoirBuffer(capacity, torch.Generator().manual_seed(seed))
        for start in range(0, n, 32):  # offered in minibatches, as training does
            buf.add(x[start:start + 32], y[start:start + 32])
        ids = buf.examples.flatten().long().numpy()
        assert len(set(ids.tolist())) == capacity  # no example stored twice
        counts[ids] += 1
    return counts


def test_reservoir_sample_is_uniform():
    n, capacity, runs = 1000, 100, 200
    counts = inclusion_counts(n, capacity, runs)
    freq = counts / runs
    assert freq.mean() == pytest.approx(0.1)
    # each item is in the buffer with probability 0.1. Group items into 10 blocks of 100
    # consecutive ids (expected 2000 inclusions per block, sd ~ 42): a chi-square with 9 dof;
    # 40 is far beyond its 99.99th percentile (~33.7), while "keep the first 100" or
    # "keep the last 100" give a statistic of ~180000.
    blocks = counts.reshape(10, 100).sum(1)
    expected = runs * capacity / 10
    chi2 = ((blocks - expected) ** 2 / expected).sum()
    assert chi2 < 40, blocks
    # the first and the last hundred items are kept as often as the rest
    assert abs(freq[:100].mean() - 0.1) < 0.02
    assert abs(freq[-100:].mean() - 0.1) < 0.02
    # and no single item is far off (binomial(200, 0.1): mean 20, sd 4.2)
    assert counts.max() < 45 and counts.min() > 3


def test_sample_without_replacement():
    buf = ReservoirBuffer(20, torch.Generator().manual_seed(0))
    buf.add(*stream(20))
    for _ in range(20):
        bx, by, bl = buf.sample(8)
        ids = bx.flatten().long().tolist()
        assert len(ids) == 8 and len(set(ids)) == 8
        assert torch.equal(by, bx.flatten().long() % 10)
        assert bl is None
    bx, _, _ = buf.sample(100)  # more than stored: everything once
    assert sorted(bx.flatten().long().tolist()) == list(range(20))


def test_sample_only_from_filled_slots():
    buf = ReservoirBuffer(50, torch.Generator().manual_seed(0))
    buf.add(*stream(6, start=1))  # ids 1..6; empty slots hold zeros
    for _ in range(10):
        bx, _, _ = buf.sample(6)
        assert sorted(bx.flatten().long().tolist()) == [1, 2, 3, 4, 5, 6]


def test_state_dict_round_trip():
    gen = torch.Generator().manual_seed(0)
    buf = ReservoirBuffer(8, gen)
    x, y = stream(30)
    buf.add(x[:20], y[:20], x[:20].repeat(1, 2))
    state = buf.state_dict()
    assert state["num_seen"] == 20
    assert state["examples"].shape == (8, 1)
    assert state["capacity"] == 8
    snapshot = {k: v.clone() for k, v in state.items() if k not in ("num_seen", "capacity")}

    gen2 = torch.Generator()
    gen2.set_state(gen.get_state())
    copy = ReservoirBuffer(8, gen2)
    copy.load_state_dict(state)
    assert len(copy) == 8 and copy.num_seen == 20
    for key in ("examples", "labels", "logits"):
        assert torch.equal(getattr(copy, key), getattr(buf, key)), key
    # both continue identically
    buf.add(x[20:], y[20:], x[20:].repeat(1, 2))
    copy.add(x[20:], y[20:], x[20:].repeat(1, 2))
    assert torch.equal(copy.examples, buf.examples)
    assert not torch.equal(buf.examples, snapshot["examples"])  # the adds replaced something...
    for key, value in snapshot.items():  # ... but the saved state is a snapshot, not a view
        assert torch.equal(state[key], value), key
    a, b = buf.sample(4), copy.sample(4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])


def test_state_dict_round_trip_partial_buffer():
    buf = ReservoirBuffer(10, torch.Generator().manual_seed(0))
    buf.add(*stream(4))
    state = buf.state_dict()
    assert state["examples"].shape[0] == 4 and "logits" not in state
    copy = ReservoirBuffer(10, torch.Generator().manual_seed(0))
    copy.load_state_dict(state)
    assert len(copy) == 4 and copy.examples.shape == (10, 1) and copy.logits is None
    assert copy.examples.flatten()[:4].tolist() == [0.0, 1.0, 2.0, 3.0]
    copy.add(*stream(2, start=4))
    assert copy.examples.flatten()[:6].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    empty = ReservoirBuffer(10, torch.Generator())
    empty.load_state_dict(ReservoirBuffer(10, torch.Generator()).state_dict())
    assert len(empty) == 0 and empty.examples is None


def test_shrink_keeps_a_subset_and_carries_on():
    gen = torch.Generator().manual_seed(0)
    buf = ReservoirBuffer(8, gen)
    x, y = stream(30)
    buf.add(x[:20], y[:20])
    before = set(buf.examples.flatten().long().tolist())
    buf.shrink(3)
    assert buf.capacity == 3 and len(buf) == 3 and buf.examples.shape == (3, 1)
    assert set(buf.examples.flatten().long().tolist()) <= before
    assert buf.state_dict()["capacity"] == 3
    buf.add(x[20:], y[20:])  # reservoir sampling goes on at the new size
    assert len(buf) == 3 and buf.num_seen == 30
    buf.shrink(5)  # never grows
    assert buf.capacity == 3
