"""FLOPs and memory accounting against hand counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clients.accounting import (
    LayerCost, ModelCost, buffer_bytes, layer_forward_flops, peak_memory, profile_model, sparse_bytes,
    training_flops_per_example,
)
from clients.backbones import SmallCNN


def test_conv_flops_hand_count():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    cost = profile_model(nn.Sequential(conv), (3, 8, 8))
    assert len(cost.layers) == 1
    assert cost.layers[0].name == "0.weight"
    assert cost.layers[0].numel == 8 * 3 * 9
    assert cost.forward_flops == 2 * 3 * 9 * 8 * 64  # 27,648 per example


def test_conv_flops_stride_no_padding_and_groups():
    out = torch.zeros(2, 8, 3, 3)
    assert layer_forward_flops(nn.Conv2d(4, 8, 3, stride=2), out) == 2 * 4 * 9 * 8 * 9
    assert layer_forward_flops(nn.Conv2d(4, 8, 3, groups=2), out) == 2 * 2 * 9 * 8 * 9
    cost = profile_model(nn.Sequential(nn.Conv2d(2, 4, 3, stride=2)), (2, 9, 9))  # 4x4 output
    assert cost.forward_flops == 2 * 2 * 9 * 4 * 16


def test_linear_flops_hand_count():
    cost = profile_model(nn.Sequential(nn.Linear(20, 7)), (20,))
    assert cost.forward_flops == 2 * 20 * 7
    with pytest.raises(TypeError):
        layer_forward_flops(nn.ReLU(), torch.zeros(1, 3))


def hand_model() -> nn.Module:
    # conv 1->2 (3x3, pad 1) on 4x4, relu, flatten, linear 32->3
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))


CONV_F = 2 * 1 * 9 * 2 * 16   # 576
LIN_F = 2 * 32 * 3            # 192


def test_profile_hand_model():
    cost = profile_model(hand_model(), (1, 4, 4))
    assert [(c.name, c.forward_flops, c.numel) for c in cost.layers] == [
        ("0.weight", CONV_F, 18), ("3.weight", LIN_F, 96)]
    assert cost.elementwise_flops == 32  # the ReLU: one FLOP per element
    assert cost.forward_flops == CONV_F + LIN_F + 32
    assert cost.activation_elems == 32 + 32 + 32 + 3   # every leaf's output, one example
    assert cost.param_elems == {"0.weight": 18, "3.weight": 96, "3.bias": 3}


def test_profile_restores_training_mode():
    model = hand_model()
    model.train()
    profile_model(model, (1, 4, 4))
    assert model.training
    model.eval()
    profile_model(model, (1, 4, 4))
    assert not model.training


def test_small_cnn_forward_flops_hand_count():
    cost = profile_model(SmallCNN(1, 10, width=4), (1, 8, 8))
    expected = (2 * 1 * 9 * 16 * 64      # stem 1->16 at 8x8
                + 2 * 16 * 9 * 4 * 64    # 16->4 at 8x8
                + 2 * 4 * 9 * 4 * 64     # 4->4 at 8x8
                + 2 * 4 * 9 * 8 * 16     # 4->8 at 4x4 (after max-pool)
                + 2 * 8 * 9 * 8 * 16     # 8->8 at 4x4
                + 2 * 8 * 10)            # head
    assert expected == 138400
    elementwise = (5 * 16 * 64           # stem BatchNorm (4 per element) and ReLU (1) on 16x8x8
                   + 2 * 5 * 4 * 64      # two conv blocks at 4x8x8
                   + 4 * 4 * 16          # 2x2 max-pool: 4 comparisons per output of 4x4x4
                   + 2 * 5 * 8 * 16      # two conv blocks at 8x4x4
                   + 8 * 16)             # global average pool: one per input
    assert elementwise == 9344
    assert cost.elementwise_flops == elementwise
    assert cost.forward_flops == expected + elementwise


def test_training_flops_dense_is_three_forward():
    cost = profile_model(hand_model(), (1, 4, 4))
    assert training_flops_per_example(cost, {}, {}) == 3 * (CONV_F + LIN_F + 32)


def test_training_flops_masked_is_2d_plus_g():
    cost = profile_model(hand_model(), (1, 4, 4))
    # conv: d = 0.25, g = 0.1 -> (0.5 + 0.1) x 576; linear and ReLU dense: 3 x (192 + 32)
    flops = training_flops_per_example(cost, {"0.weight": 0.25}, {"0.weight": 0.1})
    assert flops == pytest.approx(0.6 * 576 + 3 * 192 + 3 * 32)
    # no gradient mask: g defaults to the weight density -> 3d
    assert training_flops_per_example(cost, {"0.weight": 0.25}, {}) == pytest.approx(0.75 * 576 + 576 + 96)


def test_training_flops_on_hand_cost():
    cost = ModelCost((LayerCost("a", 100.0, 10), LayerCost("b", 1000.0, 20)), 0, {"a": 10, "b": 20})
    assert training_flops_per_example(cost, {}, {}) == 3300.0
    assert training_flops_per_example(cost, {"b": 0.1}, {"b": 0.05}) == pytest.approx(300 + 250)


def test_sparse_bytes():
    assert sparse_bytes(18, 0.5) == 3 + 4 * 9
    assert sparse_bytes(16, 0.25) == 2 + 4 * 4
    assert sparse_bytes(1000, 0.1) == 125 + 400
    assert sparse_bytes(8, 0.0) == 1


def test_peak_memory_terms_on_hand_model():
    cost = profile_model(hand_model(), (1, 4, 4))
    mem = peak_memory(cost, {"0.weight": 0.5}, examples_per_step=10, buffer_bytes=1234, optimizer_slots=1)
    weights = (3 + 4 * 9) + 4 * 96 + 4 * 3   # sparse conv + dense linear weight and bias = 435
    assert mem.weights == weights == 435
    assert mem.gradients == weights
    assert mem.optimizer == weights
    assert mem.activations == 4 * 99 * 10
    assert mem.buffer == 1234
    assert mem.total == 3 * 435 + 3960 + 1234

    dense = peak_memory(cost, {"0.weight": 0.5}, examples_per_step=10, buffer_bytes=0, sparse_storage=False)
    assert dense.weights == 4 * (18 + 96 + 3)
    assert dense.optimizer == 0  # plain SGD
    plain = peak_memory(cost, {}, examples_per_step=1, buffer_bytes=0)
    assert plain.weights == 4 * 117 and plain.activations == 4 * 99


def test_buffer_bytes():
    assert buffer_bytes(500, (3, 32, 32), 10, with_logits=True) == 500 * (4 * 3072 + 8 + 40)
    assert buffer_bytes(50, (1, 8, 8), 10, with_logits=False) == 50 * (4 * 64 + 8)
    assert buffer_bytes(0, (1, 8, 8), 10, with_logits=True) == 0
