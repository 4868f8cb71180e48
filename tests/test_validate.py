"""Validation of client updates against the global model: accept good ones, reject each defect by name."""

from __future__ import annotations

import re

import numpy as np
import pytest

from clients.wire import encode_model
from server.validate import UpdateRejected, validate_update


@pytest.fixture
def reference() -> dict[str, np.ndarray]:
    return {
        "conv2.weight": np.zeros((64, 32, 3, 3), dtype=np.float32),
        "conv2.bias": np.zeros(64, dtype=np.float32),
        "fc.weight": np.zeros((10, 20), dtype=np.float32),
    }


@pytest.fixture
def model() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A client's weights at 0.9 sparsity on the two weight tensors; bias dense."""
    rng = np.random.default_rng(0)
    weights = {
        "conv2.weight": rng.standard_normal((64, 32, 3, 3)).astype(np.float32),
        "conv2.bias": rng.standard_normal(64).astype(np.float32),
        "fc.weight": rng.standard_normal((10, 20)).astype(np.float32),
    }
    masks = {name: rng.random(weights[name].shape) < 0.1 for name in ("conv2.weight", "fc.weight")}
    return weights, masks


def rejected(message: str):
    """Expect UpdateRejected whose message is exactly `message`."""
    return pytest.raises(UpdateRejected, match="^" + re.escape(message) + "$")


# --------------------------------------------------------------------------- accepts


def test_accepts_a_wire_update(reference, model) -> None:
    weights, masks = model
    out_w, out_m = validate_update(encode_model(weights, masks), reference)
    assert set(out_w) == set(out_m) == set(reference)
    for name in ("conv2.weight", "fc.weight"):
        np.testing.assert_array_equal(out_m[name], masks[name])
        np.testing.assert_array_equal(out_w[name], np.where(masks[name], weights[name], 0))
    assert out_m["conv2.bias"].all()
    np.testing.assert_array_equal(out_w["conv2.bias"], weights["conv2.bias"])


def test_accepts_fp16_wire_update(reference, model) -> None:
    weights, masks = model
    out_w, _ = validate_update(encode_model(weights, masks, value_dtype="float16"), reference)
    assert all(w.dtype == np.float32 for w in out_w.values())


def test_accepts_plain_dense_update_as_all_ones(reference, model) -> None:
    weights, _ = model
    plain = {**weights, "conv2.bias": weights["conv2.bias"].astype(np.float16)}
    out_w, out_m = validate_update(plain, reference)
    assert set(out_w) == set(reference)
    for name, w in plain.items():
        assert out_m[name].dtype == np.bool_ and out_m[name].all() and out_m[name].shape == w.shape
        assert out_w[name].dtype == np.float32
        np.testing.assert_array_equal(out_w[name], w.astype(np.float32))


def test_a_full_state_dict_sets_its_integer_counters_aside(reference, model) -> None:
    """What an ordinary Flower client sends: model.state_dict(), BatchNorm's num_batches_tracked included."""
    weights, _ = model
    full = {**weights, "bn.num_batches_tracked": np.array(12, dtype=np.int64)}
    out_w, _ = validate_update(full, reference)
    assert set(out_w) == set(reference)
    with rejected("update rejected: unexpected tensor 'bn.running_mean'"):
        validate_update({**full, "bn.running_mean": np.zeros(3, np.float32)}, reference)  # floats still count


def test_nan_at_a_pruned_position_is_not_sent(reference, model) -> None:
    weights, masks = model
    weights["fc.weight"][~masks["fc.weight"]] = np.nan
    validate_update(encode_model(weights, masks), reference)


# --------------------------------------------------------------------------- rejects


def test_update_rejected_is_a_value_error() -> None:
    assert issubclass(UpdateRejected, ValueError)


def test_rejects_nan_in_kept_values(reference, model) -> None:
    weights, masks = model
    i, j = np.argwhere(masks["fc.weight"])[0]
    weights["fc.weight"][i, j] = np.nan
    with rejected("update rejected: 'fc.weight' has 1 non-finite value (NaN or Inf)"):
        validate_update(encode_model(weights, masks), reference)


def test_rejects_inf_in_dense_tensor(reference, model) -> None:
    weights, masks = model
    weights["conv2.bias"][[3, 5]] = [np.inf, -np.inf]
    with rejected("update rejected: 'conv2.bias' has 2 non-finite values (NaN or Inf)"):
        validate_update(encode_model(weights, masks), reference)


def test_rejects_fp16_overflow(reference, model) -> None:
    weights, masks = model
    weights["conv2.bias"][0] = 1e6  # beyond float16's 65504
    with pytest.warns(RuntimeWarning), rejected("update rejected: 'conv2.bias' has 1 non-finite value (NaN or Inf)"):
        validate_update(encode_model(weights, masks, value_dtype="float16"), reference)


def test_rejects_nan_in_plain_update(reference, model) -> None:
    weights, _ = model
    weights["conv2.weight"][0, 0, 0, 0] = np.nan
    with rejected("update rejected: 'conv2.weight' has 1 non-finite value (NaN or Inf)"):
        validate_update(weights, reference)


def test_rejects_wrong_shape(reference, model) -> None:
    weights, masks = model
    weights["conv2.weight"] = np.ones((3, 3), dtype=np.float32)
    del masks["conv2.weight"]
    with rejected("update rejected: 'conv2.weight' has shape (3, 3) but the model has (64, 32, 3, 3)"):
        validate_update(encode_model(weights, masks), reference)
    with rejected("update rejected: 'conv2.weight' has shape (3, 3) but the model has (64, 32, 3, 3)"):
        validate_update(weights, reference)


def test_rejects_truncated_bitmask(reference, model) -> None:
    flat = encode_model(*model)
    flat["fc.weight/bitmask"] = flat["fc.weight/bitmask"][:-1]
    with rejected(
        "update rejected: tensor 'fc.weight': 'bitmask' has 24 bytes, expected 25 for 200 elements"
    ):
        validate_update(flat, reference)


def test_rejects_wrong_values_count(reference, model) -> None:
    flat = encode_model(*model)
    flat["conv2.weight/values"] = flat["conv2.weight/values"][1:]
    with pytest.raises(UpdateRejected, match="tensor 'conv2.weight': 'values' has"):
        validate_update(flat, reference)


def test_rejects_missing_tensor(reference, model) -> None:
    weights, masks = model
    del weights["fc.weight"], masks["fc.weight"]
    with rejected("update rejected: missing tensor 'fc.weight'"):
        validate_update(encode_model(weights, masks), reference)
    with rejected("update rejected: missing tensor 'fc.weight'"):
        validate_update(weights, reference)


def test_rejects_missing_part(reference, model) -> None:
    flat = encode_model(*model)
    del flat["fc.weight/values"]
    with rejected("update rejected: tensor 'fc.weight': malformed encoding: missing 'values'"):
        validate_update(flat, reference)


def test_rejects_extra_tensor(reference, model) -> None:
    weights, masks = model
    weights["fc2.weight"] = np.zeros(5, dtype=np.float32)
    with rejected("update rejected: unexpected tensor 'fc2.weight'"):
        validate_update(encode_model(weights, masks), reference)
    with rejected("update rejected: unexpected tensor 'fc2.weight'"):
        validate_update(weights, reference)


def test_rejects_missing_and_extra_in_one_line(reference, model) -> None:
    weights, masks = model
    weights["x"] = weights.pop("conv2.bias")
    with rejected("update rejected: missing tensor 'conv2.bias'; unexpected tensor 'x'"):
        validate_update(encode_model(weights, masks), reference)


def test_rejects_empty_update(reference) -> None:
    with rejected("update rejected: missing tensors 'conv2.bias', 'conv2.weight', 'fc.weight'"):
        validate_update({}, reference)


def test_rejects_float64_plain_tensor(reference, model) -> None:
    weights, _ = model
    weights["fc.weight"] = weights["fc.weight"].astype(np.float64)
    with rejected("update rejected: 'fc.weight' has dtype float64; only float16/float32 are accepted"):
        validate_update(weights, reference)


def test_rejects_float64_wire_values(reference, model) -> None:
    flat = encode_model(*model)
    flat["fc.weight/values"] = flat["fc.weight/values"].astype(np.float64)
    with pytest.raises(UpdateRejected, match="tensor 'fc.weight': 'values' has dtype float64"):
        validate_update(flat, reference)


def test_rejects_mixed_plain_and_wire_keys(reference, model) -> None:
    weights, masks = model
    flat = encode_model(weights, masks)
    flat["conv2.bias"] = flat.pop("conv2.bias/dense")
    with pytest.raises(UpdateRejected, match="'conv2.bias'"):
        validate_update(flat, reference)
