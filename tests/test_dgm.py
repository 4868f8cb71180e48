"""DGM gradient masks: top-|grad| patterns, restriction to live weights, refresh period."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clients.errors import InputError
from clients.sparcl.dgm import DGMConfig, GradientMasks, gradient_pattern
from clients.sparcl.tdm import keep_count


def positions(mask: torch.Tensor) -> set[int]:
    return set(mask.flatten().nonzero().flatten().tolist())


GRAD = torch.tensor([0.1, -5.0, 0.3, 4.0, -0.2, 3.0, 0.05, -2.0, 1.0, 0.4])


def test_pattern_without_weight_mask_keeps_top_abs_grads():
    p = gradient_pattern(GRAD, None, 0.2)
    assert positions(p) == {1, 3}
    assert positions(gradient_pattern(GRAD, None, 0.4)) == {1, 3, 5, 7}
    assert int(gradient_pattern(GRAD, None, 1.0).sum()) == 10
    assert int(gradient_pattern(GRAD, None, 0.01).sum()) == 1  # at least one


def test_pattern_exact_count_on_a_conv_weight():
    g = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    for keep in (0.05, 0.2, 0.5):
        p = gradient_pattern(g, None, keep)
        k = keep_count(g.numel(), keep)
        assert p.shape == g.shape and p.dtype == torch.bool
        assert int(p.sum()) == k
        assert g.abs()[p].min() >= g.abs()[~p].max()


def test_pattern_with_weight_mask_is_restricted_to_live_weights():
    live = torch.zeros(10, dtype=torch.bool)
    live[[0, 2, 4, 5, 8]] = True
    # k = 2 over all entries; dead entries (1, 3, 7) have the largest |grad| but must not count
    p = gradient_pattern(GRAD, live, 0.2)
    assert positions(p) == {5, 8}
    assert not (p & ~live).any()
    # keep above the density: every live weight's gradient survives, nothing else
    assert positions(gradient_pattern(GRAD, live, 0.9)) == {0, 2, 4, 5, 8}


def test_dgm_config_validation():
    with pytest.raises(InputError):
        DGMConfig(keep=0.0)
    with pytest.raises(InputError):
        DGMConfig(keep=1.5)
    with pytest.raises(InputError):
        DGMConfig(refresh_every=0)


def one_layer() -> nn.Module:
    return nn.Sequential(nn.Linear(10, 1, bias=False))


def set_grad(model: nn.Module, g: torch.Tensor) -> None:
    model[0].weight.grad = g.view(1, 10).clone()


def test_apply_masks_grads_and_refreshes_only_every_n_batches():
    model = one_layer()
    gm = GradientMasks(model, ["0.weight"], DGMConfig(keep=0.2, refresh_every=3))
    first = GRAD
    second = torch.tensor([9.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -8.0])

    set_grad(model, first)
    gm.apply(None)  # batch 0: refresh
    assert positions(gm.patterns["0.weight"]) == {1, 3}
    expected = torch.zeros(10)
    expected[[1, 3]] = first[[1, 3]]
    assert torch.equal(model[0].weight.grad.flatten(), expected)
    assert gm.densities() == {"0.weight": pytest.approx(0.2)}

    for _ in range(2):  # batches 1 and 2 reuse the pattern though the grads changed
        set_grad(model, second)
        gm.apply(None)
        assert positions(gm.patterns["0.weight"]) == {1, 3}
        assert torch.equal(model[0].weight.grad.flatten(), torch.zeros(10))

    set_grad(model, second)
    gm.apply(None)  # batch 3: refresh
    assert positions(gm.patterns["0.weight"]) == {0, 9}
    assert model[0].weight.grad.flatten().tolist() == [9.0] + [0.0] * 8 + [-8.0]
    assert gm.batches == 4


def test_apply_with_weight_masks_uses_them_on_refresh():
    model = one_layer()
    gm = GradientMasks(model, ["0.weight"], DGMConfig(keep=0.2, refresh_every=2))
    live = torch.zeros(1, 10, dtype=torch.bool)
    live[0, [0, 2, 4, 5, 8]] = True
    set_grad(model, GRAD)
    gm.apply({"0.weight": live})
    assert positions(gm.patterns["0.weight"]) == {5, 8}
    g = model[0].weight.grad.flatten()
    assert positions(g != 0) == {5, 8}
    assert g[5] == GRAD[5] and g[8] == GRAD[8]


def test_apply_skips_params_without_grads():
    model = nn.Sequential(nn.Linear(10, 1, bias=False), nn.Linear(1, 1, bias=False))
    gm = GradientMasks(model, ["0.weight", "1.weight"], DGMConfig(keep=0.2, refresh_every=5))
    model[0].weight.grad = GRAD.view(1, 10).clone()
    gm.apply(None)
    assert set(gm.patterns) == {"0.weight"}
    assert model[1].weight.grad is None


def test_restart_refreshes_at_the_next_batch():
    """A new epoch or a changed weight mask: the next batch derives a fresh pattern."""
    model = one_layer()
    gm = GradientMasks(model, ["0.weight"], DGMConfig(keep=0.2, refresh_every=30))
    set_grad(model, GRAD)
    gm.apply(None)
    assert positions(gm.patterns["0.weight"]) == {1, 3}
    gm.restart()
    second = torch.tensor([9.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -8.0])
    set_grad(model, second)
    assert gm.apply(None) is True  # batch 1 of 30, but refreshed
    assert positions(gm.patterns["0.weight"]) == {0, 9}
    assert gm.batches == 1
