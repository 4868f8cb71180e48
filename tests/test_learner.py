"""The learner end to end on the tiny synthetic stream: sparsity, FLOPs, DDR, resume, every method."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clients.cl.methods import METHODS, MethodConfig
from clients.data import load_stream
from clients.experiment import run_stream
from clients.sparcl.ddr import DDRConfig, removal_schedule
from clients.sparcl.dgm import DGMConfig
from clients.sparcl.config import LearnerConfig, SparCLConfig, TrainConfig
from clients.sparcl.learner import Learner
from clients.sparcl.tdm import TDMConfig, keep_count

# SmallCNN(1, 10, width=4) on 1x8x8: forward FLOPs per example, counted by hand in test_accounting
FORWARD = 138400 + 9344  # convolutions and head, plus norms, ReLUs and pooling (test_accounting)
PER_TASK = 40  # 20 per class, 2 classes per task


pytestmark = pytest.mark.usefixtures("one_thread")


def make(stream, method: str = "derpp", sparcl: SparCLConfig | None = None, epochs: int = 5,
         batch: int = 8, seed: int = 0) -> Learner:
    cfg = LearnerConfig(
        method=MethodConfig(name=method, buffer_size=20, minibatch=8),
        sparcl=SparCLConfig() if sparcl is None else sparcl,
        train=TrainConfig(epochs_per_task=epochs, batch_size=batch, lr=0.05, seed=seed),
        backbone="small-cnn", width=4,
    )
    return Learner(cfg, stream.input_shape, stream.num_classes)


def run_task(learner: Learner, task) -> list[float]:
    learner.begin_task(task.task_id, task.classes, task.x_train, task.y_train)
    accs = []
    while not learner.task_done:
        accs.append(learner.train_epoch())
    return accs


def restore(learner: Learner, blob: bytes, x: torch.Tensor, y: torch.Tensor) -> None:
    """Load a saved learner and give it the current task's data (not saved)."""
    if hasattr(learner, "attach"):
        learner.load_bytes(blob)
        learner.attach(x, y)
    else:  # the older signature took the data with the blob
        learner.load_bytes(blob, x, y)


def masked(learner: Learner) -> dict[str, torch.Tensor]:
    params = dict(learner.model.named_parameters())
    return {n: params[n] for n in learner.masked_names}


def test_stream_and_backbone_are_what_these_tests_assume(stream):
    assert stream.input_shape == (1, 8, 8) and stream.num_classes == 10 and len(stream) == 5
    assert all(len(t.y_train) == PER_TASK for t in stream.tasks)
    learner = make(stream, sparcl=SparCLConfig.dense())
    assert learner.cost.forward_flops == FORWARD
    assert learner.masked_names == ["features.0.0.weight", "features.1.0.weight",
                                    "features.3.0.weight", "features.4.0.weight"]


@pytest.mark.parametrize("sparsity", [0.75, 0.9])
def test_tdm_layers_hit_target_sparsity_after_each_task(stream, sparsity):
    learner = make(stream, sparcl=SparCLConfig(tdm=TDMConfig(sparsity=sparsity), ddr=None, dgm=None))
    for task in stream.tasks[:2]:
        learner.begin_task(task.task_id, task.classes, task.x_train, task.y_train)
        for name, p in masked(learner).items():  # the task starts one point above the target
            assert int(learner.masks.masks[name].sum()) == keep_count(p.numel(), 1 - sparsity + 0.01)
        while not learner.task_done:
            learner.train_epoch()
        for name, p in masked(learner).items():
            k = keep_count(p.numel(), 1 - sparsity)
            assert int(learner.masks.masks[name].sum()) == k, name
            assert int((p.detach()[~learner.masks.masks[name]] != 0).sum()) == 0, name
            zeros = int((p.detach() == 0).sum())
            if sparsity == 0.75:
                # every layer size is a multiple of 4 and every live weight got trained:
                # exactly 75% zeros. (At 0.9 a regrown weight can keep a zero gradient when
                # its unit has no live outgoing weights, so only the mask count is exact.)
                assert zeros == p.numel() - k, name
                assert zeros / p.numel() == 0.75
            # only weights regrown at the last update may still be 0: the survivors of its drop are live
            drop_k = keep_count(p.numel(), 1 - sparsity - 0.01)
            assert p.numel() - k <= zeros <= p.numel() - drop_k, name
    dens = learner.weight_densities()
    assert all(d == pytest.approx(1 - sparsity, abs=0.01) for d in dens.values())


def test_full_sparcl_keeps_mask_counts_and_zeros_outside(stream):
    learner = make(stream, sparcl=SparCLConfig(tdm=TDMConfig(sparsity=0.75)))
    for task in stream.tasks[:2]:
        run_task(learner, task)
        for name, p in masked(learner).items():
            mask = learner.masks.masks[name]
            assert int(mask.sum()) == p.numel() // 4
            assert int((p.detach()[~mask] != 0).sum()) == 0
            assert (p.detach() == 0).float().mean().item() >= 0.75


def test_dense_flops_are_examples_times_three_forward(stream):
    learner = make(stream, sparcl=SparCLConfig.dense())
    for task in stream.tasks[:2]:
        run_task(learner, task)
    c = learner.counters
    assert c.train_flops == c.examples * 3 * FORWARD
    assert c.removed == 0
    assert c.peak_memory == c.peak_memory_dense


def test_finetune_dense_counts_every_example_once_per_epoch(stream):
    learner = make(stream, method="finetune", sparcl=SparCLConfig.dense(), epochs=3)
    run_task(learner, stream.tasks[0])
    c = learner.counters
    assert c.examples == 3 * PER_TASK
    assert c.steps == 3 * math.ceil(PER_TASK / 8)
    assert c.train_flops == 3 * PER_TASK * 3 * FORWARD


def test_buffer_draws_are_counted(stream):
    # ER, batch 8, minibatch 8, buffer 20: step 1 sees an empty buffer, later steps draw 8
    learner = make(stream, method="er", sparcl=SparCLConfig.dense(), epochs=1)
    run_task(learner, stream.tasks[0])
    steps = PER_TASK // 8
    assert learner.counters.examples == PER_TASK + 8 * (steps - 1)
    derpp = make(stream, method="derpp", sparcl=SparCLConfig.dense(), epochs=1)
    run_task(derpp, stream.tasks[0])
    assert derpp.counters.examples == PER_TASK + 16 * (steps - 1)


@pytest.mark.parametrize("method", ["er", "derpp"])
def test_sparcl_flops_strictly_less_than_dense(stream, method):
    dense = make(stream, method=method, sparcl=SparCLConfig.dense())
    sparse = make(stream, method=method, sparcl=SparCLConfig(tdm=TDMConfig(sparsity=0.9)))
    tdm_only = make(stream, method=method, sparcl=SparCLConfig(tdm=TDMConfig(sparsity=0.9), ddr=None, dgm=None))
    for task in stream.tasks[:2]:
        for learner in (dense, sparse, tdm_only):
            run_task(learner, task)
    assert sparse.counters.train_flops < tdm_only.counters.train_flops < dense.counters.train_flops
    # per example too (not only because DDR dropped examples)
    assert tdm_only.counters.train_flops / tdm_only.counters.examples < 3 * FORWARD
    assert sparse.counters.examples < dense.counters.examples
    assert sparse.counters.peak_memory < dense.counters.peak_memory
    assert sparse.counters.peak_memory_dense == dense.counters.peak_memory_dense


def test_tdm_flops_match_the_density_formula(stream):
    # TDM only, no DGM: every masked layer costs 3 d F; read the layers from the learner's profile
    learner = make(stream, method="finetune", sparcl=SparCLConfig(tdm=TDMConfig(sparsity=0.75), ddr=None,
                                                                   dgm=None), epochs=1)
    learner.begin_task(0, stream.tasks[0].classes, stream.tasks[0].x_train, stream.tasks[0].y_train)
    dens = learner.weight_densities()
    per_example = (sum(3 * dens.get(layer.name, 1.0) * layer.forward_flops for layer in learner.cost.layers)
                   + 3 * learner.cost.elementwise_flops)
    learner.train_epoch()  # epoch 0 of 1: no mask update inside
    assert learner.counters.train_flops == pytest.approx(PER_TASK * per_example, rel=1e-12)


@pytest.mark.parametrize("epochs", [5, 20])
def test_ddr_removed_count_follows_the_schedule(stream, epochs):
    learner = make(stream, method="finetune", sparcl=SparCLConfig(tdm=None, ddr=DDRConfig(), dgm=None),
                   epochs=epochs, batch=20)
    schedule = removal_schedule(epochs, DDRConfig())
    per_task = sum(int(round(s * PER_TASK)) for s in schedule.values())
    assert per_task == 12  # 30% of 40
    sizes = []
    for task in stream.tasks[:2]:
        learner.begin_task(task.task_id, task.classes, task.x_train, task.y_train)
        assert learner.removal.active.size == PER_TASK  # full data again at each task
        while not learner.task_done:
            learner.train_epoch()
            sizes.append(learner.removal.active.size)
    assert learner.counters.removed == 2 * per_task
    # examples processed: each epoch trains on the data still active at its start
    assert learner.counters.examples == sum(sizes)
    if epochs == 5:
        assert sizes[:5] == [40, 34, 28, 28, 28]


def test_ddr_waiting_for_presentations_removes_later_in_the_learner(stream):
    """presentations=2 at 10 epochs: removals at the starts of epochs 2, 4, 6 and 8, each judged on
    the two epochs since the last (the statistics' presentations count them)."""
    ddr = DDRConfig(presentations=2)
    learner = make(stream, method="finetune", sparcl=SparCLConfig(tdm=None, ddr=ddr, dgm=None), epochs=10, batch=20)
    task = stream.tasks[0]
    learner.begin_task(task.task_id, task.classes, task.x_train, task.y_train)
    sizes, seen = [], []
    while not learner.task_done:
        before = learner.removal.tracker.presentations.max()
        learner.train_epoch()
        sizes.append(learner.removal.active.size)
        seen.append(int(before))
    assert sizes == [40, 40, 37, 37, 34, 34, 31, 31, 28, 28]  # 3 of 40 (7.5%) at each removal
    assert [seen[e] for e in (2, 4, 6, 8)] == [2, 2, 2, 2]  # presentations behind each removal
    assert learner.counters.removed == 12


def test_ddr_in_the_learner_records_every_presentation_and_removes_the_least_forgotten(stream):
    # this seed and rate leave about half the task unlearned after two epochs: counts differ
    cfg = LearnerConfig(
        method=MethodConfig(name="finetune"),
        sparcl=SparCLConfig(tdm=None, ddr=DDRConfig(), dgm=None),
        train=TrainConfig(epochs_per_task=20, batch_size=10, lr=0.05, seed=0),
        backbone="small-cnn", width=4,
    )
    learner = Learner(cfg, stream.input_shape, stream.num_classes)
    task = stream.tasks[0]
    learner.begin_task(task.task_id, task.classes, task.x_train, task.y_train)
    acc = learner.train_epoch()
    t = learner.removal.tracker
    assert t.presentations.tolist() == [1] * PER_TASK
    assert int(t.learned.sum()) == round(acc * PER_TASK / 100)
    learner.train_epoch()
    assert t.presentations.tolist() == [2] * PER_TASK
    counts = t.counts().copy()
    assert len(set(counts.tolist())) > 1  # the check below is not vacuous
    before = learner.removal.active.copy()
    learner.train_epoch()  # epoch 2: removes 3 of the least-forgotten
    gone = np.setdiff1d(before, learner.removal.active)
    assert gone.size == 3
    assert counts[gone].max() <= counts[learner.removal.active].min()
    assert learner.removal.tracker.presentations.sum() == PER_TASK - 3  # stats restarted, then one epoch


def test_state_round_trip_mid_task_continues_identically(stream):
    sparcl = SparCLConfig(tdm=TDMConfig(sparsity=0.75), dgm=DGMConfig(keep=0.2, refresh_every=3))
    a = make(stream, sparcl=sparcl, epochs=10)  # TDM updates at 1..8, DDR removals at 1..4
    run_task(a, stream.tasks[0])
    t1 = stream.tasks[1]
    a.begin_task(t1.task_id, t1.classes, t1.x_train, t1.y_train)
    a.train_epoch()
    a.train_epoch()  # mid-task: DDR removals and TDM updates still ahead
    blob = a.to_bytes()

    b = make(stream, sparcl=sparcl, epochs=10)
    restore(b, blob, t1.x_train, t1.y_train)
    assert b.epoch == 2 and b.task_id == 1 and b.classes == t1.classes
    # everything the next epochs depend on came back
    assert np.array_equal(b.removal.active, a.removal.active)
    for key in ("last", "events", "learned", "presentations"):
        assert np.array_equal(getattr(b.removal.tracker, key), getattr(a.removal.tracker, key)), key
    assert b.dgm.batches == a.dgm.batches
    assert all(torch.equal(b.dgm.patterns[n], a.dgm.patterns[n]) for n in a.dgm.patterns)
    assert all(torch.equal(b.last_grads[n], a.last_grads[n]) for n in a.last_grads)
    assert vars(b.counters) == vars(a.counters)

    acc_a, acc_b = a.train_epoch(), b.train_epoch()
    assert acc_a == acc_b
    for (na, pa), (nb, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert na == nb and torch.equal(pa, pb), na
    # ... and through the rest of the task and the next task start
    while not a.task_done:
        assert a.train_epoch() == b.train_epoch()
    assert np.array_equal(a.removal.active, b.removal.active)
    t2 = stream.tasks[2]
    for learner in (a, b):
        run_task(learner, t2)
    for (na, pa), (nb, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(pa, pb), na
    for n in a.masked_names:
        assert torch.equal(a.masks.masks[n], b.masks.masks[n])
    assert vars(a.counters) == vars(b.counters)
    assert torch.equal(a.method.buffer.examples, b.method.buffer.examples)
    assert torch.equal(a.method.buffer.logits, b.method.buffer.logits)


def test_state_round_trip_differs_from_a_fresh_learner(stream):
    # guard: the round trip test would be vacuous if a fresh learner matched anyway
    a = make(stream)
    run_task(a, stream.tasks[0])
    fresh = make(stream)
    assert not torch.equal(a.model.head.weight, fresh.model.head.weight)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_end_to_end_with_sparcl(stream, method):
    learner = make(stream, method=method, epochs=3)
    for task in stream.tasks[:2]:
        accs = run_task(learner, task)
        assert len(accs) == 3 and all(0.0 <= a <= 100.0 for a in accs)
    assert all(torch.isfinite(p).all() for p in learner.model.parameters())
    c = learner.counters
    assert c.train_flops > 0 and c.removed > 0
    if method == "finetune":
        assert len(learner.method.buffer) == 0
    else:
        assert len(learner.method.buffer) == 20
        assert c.examples > c.steps * 8  # buffer draws were made
    if method in ("der", "derpp"):
        assert learner.method.buffer.logits is not None
    else:
        assert learner.method.buffer.logits is None


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_dense(stream, method):
    learner = make(stream, method=method, sparcl=SparCLConfig.dense(), epochs=1)
    for task in stream.tasks[:2]:
        run_task(learner, task)
    assert learner.counters.train_flops == learner.counters.examples * 3 * FORWARD


def test_learner_learns_the_synthetic_task(stream):
    learner = make(stream, method="er", sparcl=SparCLConfig.dense(), epochs=5)
    accs = run_task(learner, stream.tasks[0])
    assert accs[-1] > accs[0] or accs[-1] == 100.0
    np.testing.assert_array_less(50.0, accs[-1])


def test_run_stream_with_er_and_sparcl(stream):
    cfg = make(stream, method="er", epochs=2).config
    result = run_stream(cfg, stream)
    assert result.label == "SparCL-ER" and result.components == "TDM+DDR+DGM"
    assert [len(r) for r in result.class_il_matrix] == [1, 2, 3, 4, 5]
    assert [len(r) for r in result.task_il_matrix] == [1, 2, 3, 4, 5]
    assert all(0.0 <= a <= 100.0 for row in result.class_il_matrix for a in row)
    assert result.removed == 5 * 12
    sizes = [576, 144, 288, 576]  # the masked 3x3 convolutions of SmallCNN width 4
    # at 2 epochs per task the last epoch is frozen, so the task-start density (+1 point) remains
    assert result.final_density == pytest.approx(sum(keep_count(n, 0.11) / n for n in sizes) / 4, rel=1e-6)


def test_local_masks_compute_with_the_shared_weights_frozen():
    """Under local masks a device trains and sends only its own mask; the rest of the
    global model takes part in the forward pass unchanged."""
    stream = load_stream("synthetic", max_per_class=20)
    cfg = LearnerConfig(sparcl=SparCLConfig(tdm=TDMConfig(sparsity=0.75), ddr=None, dgm=None), width=4,
                        train=TrainConfig(epochs_per_task=10, seed=0))
    learner = Learner(cfg, stream.input_shape, stream.num_classes)
    task = stream.tasks[0]
    learner.begin_task(0, task.classes, task.x_train, task.y_train)
    own = learner.masks_numpy()
    name = learner.masked_names[0]
    weights = {n: np.random.default_rng(1).normal(size=w.shape).astype(np.float32)
               for n, w in learner.weights_numpy().items()}
    shared = {n: ~m for n, m in own.items()}  # the global mask: everything this device does not hold
    learner.load_weights(weights, None, shared=shared)
    before = learner.weights_numpy()[name]
    learner.train_epoch()  # epoch 0: no mask update inside it
    after = learner.weights_numpy()[name]
    frozen = shared[name]
    assert np.array_equal(after[frozen], weights[name][frozen])      # used, never trained
    assert not np.array_equal(after[own[name]], before[own[name]])   # the device's own weights train
    assert np.array_equal(learner.masks_numpy()[name], own[name])    # what it sends: its own mask
    assert learner.weight_densities()[name] == 1.0                   # forward: own + shared
    assert learner.grad_densities()[name] == pytest.approx(own[name].mean(), abs=1e-6)


def first_step_grads(learner: Learner) -> dict[str, torch.Tensor]:
    """Run the next epoch, keeping the masked layers' gradients as the first optimizer step sees them."""
    seen: dict[str, torch.Tensor] = {}
    step = learner.optimizer.step

    def spy(*args, **kwargs):
        if not seen:
            seen.update({n: p.grad.detach().clone() for n, p in masked(learner).items()})
        return step(*args, **kwargs)

    learner.optimizer.step = spy
    learner.train_epoch()
    learner.optimizer.step = step
    return seen


@pytest.mark.parametrize("event", ["update", "task-start"])
def test_regrown_weights_get_gradients_on_the_first_step_with_dgm(stream, event):
    # at 0.9 sparsity DGM's top 20% covers every live weight: a fresh pattern lets every regrown
    # weight train; a stale one (derived before the mask changed) would zero their gradients
    sparcl = SparCLConfig(tdm=TDMConfig(sparsity=0.9), ddr=None, dgm=DGMConfig(keep=0.2, refresh_every=1000))
    learner = make(stream, method="finetune", sparcl=sparcl, epochs=10)
    task = stream.tasks[0]
    learner.begin_task(task.task_id, task.classes, task.x_train, task.y_train)
    learner.train_epoch()  # epoch 0; the mask is renewed at the start of epoch 1
    before = {n: m.clone() for n, m in learner.masks.masks.items()}
    if event == "task-start":
        nxt = stream.tasks[1]
        learner.begin_task(nxt.task_id, nxt.classes, nxt.x_train, nxt.y_train)
    grads = first_step_grads(learner)
    regrown = total = 0
    for name, mask in learner.masks.masks.items():
        new = mask & ~before[name]
        total += int(new.sum())
        regrown += int((grads[name][new] != 0).sum())
    assert total > 0
    assert regrown == total


def test_ddr_judges_raw_outputs_not_class_masked_ones(stream):
    # the current-task loss masks other tasks' logits; DDR's forgetting statistics must not
    cfg = LearnerConfig(
        method=MethodConfig(name="derpp", buffer_size=20, minibatch=8, mask_other_classes=True),
        sparcl=SparCLConfig(tdm=None, ddr=DDRConfig(), dgm=None),
        train=TrainConfig(epochs_per_task=5, batch_size=8, lr=0.05, seed=0), backbone="small-cnn", width=4)
    learner = Learner(cfg, stream.input_shape, stream.num_classes)
    run_task(learner, stream.tasks[0])
    nxt = stream.tasks[1]
    learner.begin_task(nxt.task_id, nxt.classes, nxt.x_train, nxt.y_train)
    logits_seen, recorded = [], []
    loss, record = learner.method.loss, learner.removal.tracker.record

    def spy_loss(x, y):
        step = loss(x, y)
        logits_seen.append((step.logits.detach().clone(), y.clone()))
        return step

    def spy_record(idx, hits):
        recorded.append(hits.copy())
        record(idx, hits)

    learner.method.loss, learner.removal.tracker.record = spy_loss, spy_record
    learner.train_epoch()
    raw = np.concatenate([(lg.argmax(1) == y).numpy() for lg, y in logits_seen])
    assert np.array_equal(np.concatenate(recorded), raw)
    # the case that tells them apart: the raw prediction is an old task's class
    outside = np.concatenate([~np.isin(lg.argmax(1).numpy(), nxt.classes) for lg, _ in logits_seen])
    assert outside.any()
