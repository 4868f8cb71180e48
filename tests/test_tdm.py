"""TDM weight masks: exact counts after init/update/begin_task, drop ranking, schedule, config."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clients.backbones import SmallCNN, masked_parameter_names
from clients.errors import InputError
from clients.sparcl.tdm import TDMConfig, WeightMasks, drop, keep_count, regrow, top_k_mask, update_epochs

# 10 weights with distinct magnitudes 1..10, placed out of order on purpose.
HAND = torch.tensor([3.0, -10.0, 1.0, 8.0, -2.0, 7.0, -9.0, 4.0, -5.0, 6.0])
# sparsity 0.6 -> keep 4 of 10; an update drops to 3 then regrows to 4; a task start opens 6.
HAND_CFG = TDMConfig(sparsity=0.6, drop_extra=0.1, task_extra=0.2, drop_lambda=0.5)


def hand_layer(values: torch.Tensor = HAND) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(1, 1, kernel_size=(2, 5), bias=False))
    with torch.no_grad():
        model[0].weight.copy_(values.view(1, 1, 2, 5))
    return model


def hand_masks(values: torch.Tensor = HAND, cfg: TDMConfig = HAND_CFG, seed: int = 0):
    model = hand_layer(values)
    masks = WeightMasks(model, ["0.weight"], cfg, torch.Generator().manual_seed(seed))
    return model, masks


def positions(mask: torch.Tensor) -> set[int]:
    return set(mask.flatten().nonzero().flatten().tolist())


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SmallCNN(1, 10, width=4)


# --------------------------------------------------------------------------- helpers


def test_keep_count_rounds_and_clamps():
    assert keep_count(10, 0.4) == 4
    assert keep_count(576, 0.1) == 58            # 57.6 -> 58
    assert keep_count(100, 0.0) == 1             # at least one
    assert keep_count(10, 1.5) == 10             # at most all


def test_top_k_mask_exact_count_with_ties_broken_by_position():
    scores = torch.tensor([1.0, 2.0, 2.0, 2.0, 0.5, 2.0])
    m = top_k_mask(scores, 3)
    assert m.tolist() == [False, True, True, True, False, False]
    assert int(top_k_mask(torch.zeros(7), 4).sum()) == 4
    assert top_k_mask(torch.zeros(7), 4).tolist() == [True] * 4 + [False] * 3
    # shape preserved, exactly k even when everything ties
    m2 = top_k_mask(torch.ones(3, 4), 5)
    assert m2.shape == (3, 4) and int(m2.sum()) == 5
    assert int(top_k_mask(torch.ones(3, 4), 0).sum()) == 0
    assert int(top_k_mask(torch.ones(3, 4), 12).sum()) == 12


def test_drop_keeps_top_scores_by_magnitude_only():
    w = torch.tensor([5.0, -1.0, 3.0, 0.0, -4.0, 2.0])
    mask = torch.tensor([True, True, True, False, True, True])
    kept = drop(mask, w, None, 3, 0.5)
    assert positions(kept) == {0, 2, 4}


def test_drop_gradient_term_changes_the_ranking():
    w = torch.tensor([5.0, -1.0, 3.0, 0.0, -4.0, 2.0])
    mask = torch.tensor([True, True, True, False, True, True])
    # |w| + 0.5|g|: 5, 1+4.5=5.5, 3, -, 4, 2+0.5  -> top 3 = {1, 0, 4}
    g = torch.tensor([0.0, 9.0, 0.0, 100.0, 0.0, -1.0])
    kept = drop(mask, w, g, 3, 0.5)
    assert positions(kept) == {0, 1, 4}
    # an off entry never comes back through drop, however large its gradient
    assert not kept[3]
    # with lambda 0 the gradient is ignored again
    assert positions(drop(mask, w, g, 3, 0.0)) == {0, 2, 4}


def test_regrow_adds_only_off_entries_up_to_exactly_k():
    mask = torch.tensor([True, False, False, True, False, False, False, False])
    new = regrow(mask, 5, torch.Generator().manual_seed(3))
    assert int(new.sum()) == 5
    assert new[0] and new[3]
    assert mask.tolist() == [True, False, False, True, False, False, False, False]  # input untouched
    # already at (or above) k: unchanged
    assert torch.equal(regrow(mask, 2, torch.Generator()), mask)


# --------------------------------------------------------------------------- WeightMasks on a hand tensor


def test_init_is_magnitude_pruning_to_exact_count():
    model, masks = hand_masks()
    mask = masks.masks["0.weight"]
    # largest |w|: 10 (idx 1), 9 (idx 6), 8 (idx 3), 7 (idx 5)
    assert positions(mask) == {1, 3, 5, 6}
    w = model[0].weight.detach().flatten()
    expected = torch.zeros(10)
    expected[[1, 3, 5, 6]] = HAND[[1, 3, 5, 6]]
    assert torch.equal(w, expected)
    assert masks.densities() == {"0.weight": pytest.approx(0.4)}


def test_update_without_grads_drops_smallest_and_regrows_at_zero():
    model, masks = hand_masks()
    masks.update(None)
    mask = masks.masks["0.weight"]
    assert int(mask.sum()) == 4
    # idx 5 (|w| = 7) is the smallest kept and must go; the others survive
    assert {1, 3, 6} <= positions(mask)
    grown = positions(mask) - {1, 3, 6}
    assert len(grown) == 1
    w = model[0].weight.detach().flatten()
    for i in range(10):
        if i in {1, 3, 6}:
            assert w[i] == HAND[i]
        else:
            assert w[i] == 0.0  # regrown (inside the mask) and masked-out weights are exactly zero


def test_update_gradient_term_changes_which_weight_is_dropped():
    model, masks = hand_masks()
    grads = {"0.weight": torch.zeros(10)}
    # idx 5 (|w| 7) gets |g| 6 -> score 10; idx 3 (|w| 8) gets 0 -> the lowest score now
    grads["0.weight"][5] = 6.0
    grads["0.weight"][0] = 1000.0  # off entry: irrelevant to the drop
    masks.update({"0.weight": grads["0.weight"].view(1, 1, 2, 5)})
    mask = masks.masks["0.weight"]
    assert int(mask.sum()) == 4
    assert {1, 5, 6} <= positions(mask)
    w = model[0].weight.detach().flatten()
    assert w[3] == 0.0  # dropped, even if it was regrown
    assert w[5] == HAND[5]


def test_begin_task_prunes_to_target_then_opens_task_extra():
    model, masks = hand_masks()
    masks.begin_task(None)
    mask = masks.masks["0.weight"]
    assert int(mask.sum()) == 6  # target 0.4 + task_extra 0.2
    assert {1, 3, 5, 6} <= positions(mask)  # at target already: nothing dropped
    w = model[0].weight.detach().flatten()
    assert int((w != 0).sum()) == 4
    assert all(w[i] == 0 for i in positions(mask) - {1, 3, 5, 6})
    # the next update drops back below the target and regrows to exactly the target
    masks.update(None)
    assert int(masks.masks["0.weight"].sum()) == 4
    # a second task start from the enlarged mask first prunes to the target
    masks.begin_task(None)
    masks.begin_task(None)
    assert int(masks.masks["0.weight"].sum()) == 6


def test_dropped_then_regrown_weights_restart_at_zero():
    # sparsity 0: the update drops the 2 weakest of 10 and must regrow exactly those two
    model, masks = hand_masks(cfg=TDMConfig(sparsity=0.0, drop_extra=0.2))
    assert int(masks.masks["0.weight"].sum()) == 10
    masks.update(None)
    assert int(masks.masks["0.weight"].sum()) == 10
    expected = HAND.clone()
    expected[[2, 4]] = 0.0  # |w| = 1 and 2 were dropped; back in the mask, but at weight 0
    assert torch.equal(model[0].weight.detach().flatten(), expected)


def test_begin_task_drops_weakest_trained_weights_of_an_enlarged_mask():
    model, masks = hand_masks()
    masks.begin_task(None)  # 6 entries: {1, 3, 5, 6} plus two regrown at 0
    grown = sorted(positions(masks.masks["0.weight"]) - {1, 3, 5, 6})
    with torch.no_grad():  # training moved the regrown weights: one large, one small
        w = model[0].weight.view(-1)
        w[grown[0]] = 20.0
        w[grown[1]] = 0.5
    masks.begin_task(None)
    mask = masks.masks["0.weight"]
    assert int(mask.sum()) == 6
    w = model[0].weight.detach().flatten()
    # pruned to the target 4 by |w|: 20, 10, 9, 8 survive; 7 (idx 5) and 0.5 are dropped
    assert positions(w != 0) == {grown[0], 1, 3, 6}
    assert w[grown[0]] == 20.0


def test_mask_grads_and_apply_zero_masked_entries():
    model, masks = hand_masks()
    p = model[0].weight
    p.grad = torch.ones_like(p)
    masks.mask_grads()
    assert positions(p.grad.flatten() != 0) == {1, 3, 5, 6}
    with torch.no_grad():
        p.add_(1.0)
    masks.apply()
    assert positions(p.detach().flatten() != 0) == {1, 3, 5, 6}


def test_state_dict_round_trip():
    model, masks = hand_masks()
    masks.update(None)
    saved = masks.state_dict()
    model2, masks2 = hand_masks(seed=99)
    masks2.load_state_dict(saved)
    assert torch.equal(masks2.masks["0.weight"], masks.masks["0.weight"])
    assert masks2.masks["0.weight"].dtype == torch.bool
    saved["0.weight"].fill_(True)  # a copy, not the live mask
    assert int(masks.masks["0.weight"].sum()) == 4


# --------------------------------------------------------------------------- WeightMasks on a real backbone


@pytest.mark.parametrize("sparsity", [0.75, 0.9, 0.95])
def test_every_masked_layer_holds_exact_count_through_the_schedule(sparsity):
    model = small_cnn()
    names = masked_parameter_names(model)
    assert len(names) == 4
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
    cfg = TDMConfig(sparsity=sparsity)
    masks = WeightMasks(model, names, cfg, torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())
    target = 1.0 - sparsity

    def check(density: float) -> None:
        for n in names:
            p = params[n]
            k = keep_count(p.numel(), density)
            assert int(masks.masks[n].sum()) == k, n
            assert int((p.detach()[~masks.masks[n]] != 0).sum()) == 0, n

    check(target)
    for n in names:  # magnitude pruning of the initial weights
        expected = top_k_mask(initial[n].abs(), keep_count(initial[n].numel(), target))
        assert torch.equal(masks.masks[n], expected), n
        assert torch.equal(params[n].detach(), initial[n] * expected), n

    grads = {n: torch.randn(params[n].shape, generator=torch.Generator().manual_seed(1)) for n in names}
    before = {n: params[n].detach().clone() for n in names}
    old_masks = masks.state_dict()
    masks.update(grads)
    check(target)
    for n in names:
        drop_k = keep_count(params[n].numel(), target - cfg.drop_extra)
        score = torch.where(old_masks[n], before[n].abs() + cfg.drop_lambda * grads[n].abs(),
                            torch.full_like(before[n], -1.0))
        survivors = top_k_mask(score, drop_k)
        assert bool((masks.masks[n] | ~survivors).all()), n  # survivors still in the mask
        grown = masks.masks[n] & ~survivors
        assert int(grown.sum()) == keep_count(params[n].numel(), target) - drop_k
        assert int((params[n].detach()[grown] != 0).sum()) == 0, n  # regrown at exactly 0
        assert torch.equal(params[n].detach()[survivors], before[n][survivors])

    masks.begin_task(grads)
    check(target + cfg.task_extra)
    masks.update(grads)
    check(target)


# --------------------------------------------------------------------------- schedule and config


def test_update_epochs_50_and_20():
    cfg = TDMConfig()
    assert update_epochs(50, cfg) == {5, 10, 15, 20, 25, 30, 35, 40}
    assert update_epochs(20, cfg) == {2, 4, 6, 8, 10, 12, 14, 16}


@pytest.mark.parametrize("epochs", [1, 2, 3, 5, 7, 10, 15, 25, 50])
def test_update_epochs_sensible_at_any_length(epochs):
    cfg = TDMConfig()
    ups = update_epochs(epochs, cfg)
    assert 0 not in ups  # epoch 0 is the task boundary
    assert all(1 <= e < epochs for e in ups)
    # never inside the frozen final stretch
    assert all(e < epochs * (1 - cfg.freeze_last) + 1e-9 for e in ups)
    if epochs >= 3:
        assert ups  # a task of a few epochs still renews its mask


def test_update_epochs_5():
    # freeze_last 0.1 of 5 epochs rounds to 0, but a short task still freezes its last epoch
    assert update_epochs(5, TDMConfig()) == {1, 2, 3}
    assert update_epochs(5, TDMConfig(freeze_last=0.0)) == {1, 2, 3, 4}
    assert update_epochs(5, TDMConfig(update_every=0.4, freeze_last=0.2)) == {2}


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_config_rejects_sparsity_outside_unit_interval(bad):
    with pytest.raises(InputError, match="sparsity"):
        TDMConfig(sparsity=bad)


def test_config_accepts_edges_and_rejects_bad_fractions():
    TDMConfig(sparsity=0.0)
    TDMConfig(sparsity=0.999)
    with pytest.raises(InputError, match="drop_extra"):
        TDMConfig(drop_extra=1.0)
    with pytest.raises(InputError, match="freeze_last"):
        TDMConfig(freeze_last=-0.5)


def test_a_shared_regrow_seed_makes_devices_regrow_the_same_positions():
    """Devices of a fleet share their regrowth draws, so their updates average instead of adding up."""
    def masks_after_task_start(device_seed: int) -> dict:
        torch.manual_seed(0)  # same global init on both "devices"
        model = nn.Sequential(nn.Conv2d(4, 8, 3))
        cfg = TDMConfig(sparsity=0.9, regrow_seed=7)
        masks = WeightMasks(model, ["0.weight"], cfg, torch.Generator().manual_seed(device_seed))
        masks.begin_task(None, (1, 0))
        return masks.masks

    a, b = masks_after_task_start(1), masks_after_task_start(2)
    assert torch.equal(a["0.weight"], b["0.weight"])
    assert int(a["0.weight"].sum()) == keep_count(8 * 4 * 9, 0.1 + 0.01)


def test_a_static_mask_is_the_initial_one_for_the_whole_stream():
    """The control of issue 24: magnitude-pruned at the start, never updated, not reshaped at task starts."""
    import torch

    from clients.cl.methods import MethodConfig
    from clients.data import load_stream
    from clients.sparcl.config import LearnerConfig, SparCLConfig, TrainConfig
    from clients.sparcl.learner import Learner
    from clients.sparcl.tdm import TDMConfig, update_epochs
    from fleet.bench import BenchConfig, sparcl_variants

    assert update_epochs(20, TDMConfig(static=True)) == set() and update_epochs(20, TDMConfig())
    assert sparcl_variants(BenchConfig(ablation="static"))["static"].tdm.static
    stream = load_stream("synthetic", max_per_class=16)
    masks = {}
    for static in (True, False):
        cfg = LearnerConfig(method=MethodConfig(name="derpp", buffer_size=8, minibatch=4),
                            sparcl=SparCLConfig(tdm=TDMConfig(sparsity=0.9, static=static), ddr=None, dgm=None),
                            train=TrainConfig(epochs_per_task=10, batch_size=8), backbone="small-cnn", width=4)
        learner = Learner(cfg, stream.input_shape, stream.num_classes)
        initial = {n: m.clone() for n, m in learner.masks.masks.items()}
        for task in stream.tasks[:2]:
            learner.begin_task(task.task_id, task.classes, task.x_train, task.y_train)
            while not learner.task_done:
                learner.train_epoch()
        masks[static] = all(torch.equal(initial[n], m) for n, m in learner.masks.masks.items())
        # the pruned weights stay zero under both
        assert all(float(p.detach()[~learner.masks.masks[n]].abs().max()) == 0.0
                   for n, p in learner.masks.params.items())
    assert masks == {True: True, False: False}
