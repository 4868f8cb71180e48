"""Aggregation on tiny hand-made tensors with exact expected numbers."""

from __future__ import annotations

import numpy as np
import pytest

from clients.errors import InputError
from server.aggregate import (
    in_mask_share,
    mask_aware_average,
    resparsify,
    union_mask,
    zero_filled_fedavg,
)

T, F = True, False


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def b(*values: bool) -> np.ndarray:
    return np.array(values, dtype=bool)


@pytest.fixture
def previous() -> dict[str, np.ndarray]:
    return {"w": f32(10, 20, 30, 40), "bias": f32(100, 200)}


@pytest.fixture
def two_clients() -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]]:
    """A keeps elements 0,1 (1 example); B keeps 0,2 (3 examples); nobody keeps 3.

    "bias" is dense for A (no mask) and half-kept for B.
    """
    a = ({"w": f32(1, 2, 0, 0), "bias": f32(8, 4)}, {"w": b(T, T, F, F)}, 1)
    bb = ({"w": f32(5, 0, 7, 0), "bias": f32(12, 0)}, {"w": b(T, F, T, F), "bias": b(T, F)}, 3)
    return [a, bb]


# --------------------------------------------------------------------------- mask-aware average


def test_mask_aware_average_exact(previous, two_clients) -> None:
    out = mask_aware_average(two_clients, previous)
    # w[0] = (1*1 + 3*5) / (1 + 3) = 4; w[1] = 1*2 / 1 = 2; w[2] = 3*7 / 3 = 7; w[3] kept by nobody -> 40
    np.testing.assert_array_equal(out["w"], f32(4, 2, 7, 40))
    # bias: A has no mask (dense). bias[0] = (1*8 + 3*12) / 4 = 11; bias[1] = 1*4 / 1 = 4
    np.testing.assert_array_equal(out["bias"], f32(11, 4))
    assert all(a.dtype == np.float32 for a in out.values())


def test_mask_aware_average_ignores_values_at_masked_out_positions(previous, two_clients) -> None:
    two_clients[0][0]["w"][2:] = np.nan  # pruned by A: must not leak in
    out = mask_aware_average(two_clients, previous)
    np.testing.assert_array_equal(out["w"], f32(4, 2, 7, 40))


def test_zero_filled_fedavg_shrinks_where_masks_disagree(previous, two_clients) -> None:
    out = zero_filled_fedavg(two_clients, previous)
    # sum_k n_k w_k m_k / sum_k n_k with sum n = 4:
    # w[0] = (1 + 15)/4 = 4 (both kept: same as mask-aware)
    # w[1] = 2/4 = 0.5 (mask-aware: 2), w[2] = 21/4 = 5.25 (mask-aware: 7), w[3] = 0 (mask-aware: 40)
    np.testing.assert_array_equal(out["w"], f32(4, 0.5, 5.25, 0))
    # bias[0] = (8 + 36)/4 = 11, bias[1] = 4/4 = 1 (mask-aware: 4)
    np.testing.assert_array_equal(out["bias"], f32(11, 1))
    assert all(a.dtype == np.float32 for a in out.values())


def test_identical_dense_updates_agree(previous) -> None:
    upd = ({"w": f32(1, 2, 3, 4), "bias": f32(5, 6)}, {}, 7)
    for fn in (mask_aware_average, zero_filled_fedavg):
        out = fn([upd, upd], previous)
        np.testing.assert_array_equal(out["w"], f32(1, 2, 3, 4))
        np.testing.assert_array_equal(out["bias"], f32(5, 6))


@pytest.mark.parametrize("fn", [mask_aware_average, zero_filled_fedavg])
def test_empty_round_returns_a_copy_of_previous(fn, previous) -> None:
    out = fn([], previous)
    np.testing.assert_array_equal(out["w"], previous["w"])
    out["w"][0] = -1
    assert previous["w"][0] == 10  # no aliasing


@pytest.mark.parametrize("fn", [mask_aware_average, zero_filled_fedavg])
def test_zero_examples_keep_previous(fn, previous) -> None:
    upd = ({"w": f32(1, 2, 3, 4), "bias": f32(5, 6)}, {}, 0)
    out = fn([upd], previous)
    np.testing.assert_array_equal(out["w"], previous["w"])


def test_inputs_are_not_mutated(previous, two_clients) -> None:
    mask_aware_average(two_clients, previous)
    np.testing.assert_array_equal(previous["w"], f32(10, 20, 30, 40))
    np.testing.assert_array_equal(two_clients[0][0]["w"], f32(1, 2, 0, 0))


@pytest.mark.parametrize("fn", [mask_aware_average, zero_filled_fedavg])
def test_bad_updates_raise_input_error(fn, previous) -> None:
    good = {"w": f32(1, 2, 3, 4), "bias": f32(5, 6)}
    with pytest.raises(InputError, match=r"'w' has shape \(3,\)"):
        fn([({**good, "w": f32(1, 2, 3)}, {}, 1)], previous)
    with pytest.raises(InputError, match="lacks tensor 'bias'"):
        fn([({"w": good["w"]}, {}, 1)], previous)
    with pytest.raises(InputError, match="unexpected tensor 'extra'"):
        fn([({**good, "extra": f32(0)}, {}, 1)], previous)
    for bad in (-1, float("nan"), float("inf"), True, "3"):
        with pytest.raises(InputError, match="n_examples"):
            fn([(good, {}, bad)], previous)
    with pytest.raises(InputError, match=r"mask of 'w' has shape \(2,\)"):
        fn([(good, {"w": b(T, T)}, 1)], previous)


# --------------------------------------------------------------------------- masks


def test_union_mask() -> None:
    out = union_mask([{"w": b(T, F, F), "v": b(F, F)}, {"w": b(F, F, T)}, {"w": b(F, F, F), "v": b(F, T)}])
    np.testing.assert_array_equal(out["w"], b(T, F, T))
    np.testing.assert_array_equal(out["v"], b(F, T))
    assert union_mask([]) == {}


def test_union_mask_rejects_shape_mismatch() -> None:
    with pytest.raises(InputError, match="'w'"):
        union_mask([{"w": b(T, F)}, {"w": b(T)}])


def test_resparsify_exact_with_tie() -> None:
    weights = {"w": f32(0.5, -3, 1, -1, 2, 0), "bias": f32(0.1, 0.2)}
    out, masks = resparsify(weights, ["w"], 0.5)
    # keep round(6 * 0.5) = 3: |-3|, |2|, and the tie 1 vs -1 goes to the lower index
    np.testing.assert_array_equal(masks["w"], b(F, T, T, F, T, F))
    np.testing.assert_array_equal(out["w"], f32(0, -3, 1, 0, 2, 0))
    np.testing.assert_array_equal(out["bias"], f32(0.1, 0.2))  # not in masked_names: untouched
    assert set(masks) == {"w"}
    np.testing.assert_array_equal(weights["w"], f32(0.5, -3, 1, -1, 2, 0))  # input not mutated


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.95, 0.99])
def test_resparsify_keeps_exactly_the_target_count(sparsity: float) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
    w[0, 0] = 0.25  # a block of ties
    out, masks = resparsify({"conv2.weight": w}, ["conv2.weight"], sparsity)
    k = round(w.size * (1 - sparsity))
    m = masks["conv2.weight"]
    assert int(m.sum()) == k
    kept, dropped = np.abs(w[m]), np.abs(w[~m])
    if dropped.size:
        assert kept.min() >= dropped.max()
    np.testing.assert_array_equal(out["conv2.weight"], np.where(m, w, 0))


def test_resparsify_is_deterministic() -> None:
    w = np.ones(10, dtype=np.float32)  # all tied
    _, masks = resparsify({"w": w}, ["w"], 0.7)
    np.testing.assert_array_equal(masks["w"], np.arange(10) < 3)


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5, float("nan"), True, "0.5"])
def test_resparsify_rejects_bad_sparsity(sparsity) -> None:
    with pytest.raises(InputError, match="sparsity"):
        resparsify({"w": f32(1, 2)}, ["w"], sparsity)


def test_resparsify_rejects_unknown_name() -> None:
    with pytest.raises(InputError, match="'ghost'"):
        resparsify({"w": f32(1, 2)}, ["ghost"], 0.5)


@pytest.mark.parametrize("fn", [mask_aware_average, zero_filled_fedavg])
def test_zero_dim_tensor_stays_an_array(fn) -> None:
    out = fn([({"s": np.array(5, dtype=np.float32)}, {}, 2)], {"s": np.array(3, dtype=np.float32)})
    assert isinstance(out["s"], np.ndarray) and out["s"].shape == () and out["s"] == 5


# --------------------------------------------------------------------------- plain clients


def test_a_fractional_weight_counts_as_its_fraction(previous) -> None:
    a = ({"w": f32(0, 0, 0, 0), "bias": f32(0, 0)}, {}, 0.5)
    bb = ({"w": f32(3, 3, 3, 3), "bias": f32(3, 3)}, {}, 1)
    assert np.allclose(mask_aware_average([a, bb], previous)["w"], 2.0)  # (0.5 * 0 + 1 * 3) / 1.5


def test_in_mask_share_is_the_squared_change_where_the_mask_keeps_weights(previous) -> None:
    dense = {"w": f32(13, 20, 30, 44), "bias": f32(0, 0)}  # changes 3 (kept), 4 (pruned); bias unmasked
    assert in_mask_share(dense, previous, {"w": b(T, T, F, F)}) == pytest.approx(9 / 25)
    assert in_mask_share(dense, previous, {"w": b(T, T, T, T)}) == pytest.approx(1.0)
    assert in_mask_share(dense, previous, {"w": b(F, T, T, F)}) == pytest.approx(0.0)
    assert in_mask_share(previous, previous, {"w": b(T, F, F, F)}) == 1.0  # no change: nothing lost
