"""Wire format of sparse updates: round trips, byte counts, form choice, rejection of malformed input."""

from __future__ import annotations

import numpy as np
import pytest

from clients.errors import InputError
from clients.wire import (
    WireError,
    decode,
    decode_model,
    encode,
    encode_model,
    model_bytes,
    payload_bytes,
)


def sparse_tensor(shape: tuple[int, ...], nnz: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A float32 tensor with exactly nnz kept entries (and junk at the pruned ones)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32)
    mask = np.zeros(w.size, dtype=bool)
    mask[rng.choice(w.size, size=nnz, replace=False)] = True
    return w, mask.reshape(shape)


# --------------------------------------------------------------------------- round trips


def test_fp32_round_trip_is_bit_exact() -> None:
    w, mask = sparse_tensor((10, 100), nnz=100)
    enc = encode(w, mask)
    assert set(enc) == {"bitmask", "values", "shape"}
    assert enc["bitmask"].dtype == np.uint8 and enc["values"].dtype == np.float32
    out, out_mask = decode(enc)
    assert out.dtype == np.float32 and out.shape == (10, 100)
    np.testing.assert_array_equal(out_mask, mask)
    assert np.array_equal(out[mask].view(np.uint32), w[mask].view(np.uint32))
    assert np.all(out[~mask] == 0)


def test_fp16_round_trip_within_fp16_precision() -> None:
    w, mask = sparse_tensor((10, 100), nnz=100)
    enc = encode(w, mask, value_dtype="float16")
    assert enc["values"].dtype == np.float16
    out, out_mask = decode(enc)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out_mask, mask)
    np.testing.assert_allclose(out[mask], w[mask], rtol=2**-11, atol=2**-24)
    assert np.all(out[~mask] == 0)


def test_dense_round_trip_when_mask_is_none() -> None:
    w = np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5
    enc = encode(w, None)
    assert set(enc) == {"dense", "shape"}
    out, mask = decode(enc)
    np.testing.assert_array_equal(out, w)
    assert mask.dtype == np.bool_ and mask.all() and mask.shape == (3, 4)


@pytest.mark.parametrize("shape", [(), (0,), (1,), (3, 0, 2), (2, 3, 5, 7)])
def test_round_trip_odd_shapes(shape: tuple[int, ...]) -> None:
    numel = int(np.prod(shape))
    w, mask = sparse_tensor(shape, nnz=numel // 5)
    out, out_mask = decode(encode(w, mask))
    assert out.shape == shape and out_mask.shape == shape
    np.testing.assert_array_equal(out, np.where(out_mask, w, 0))


# --------------------------------------------------------------------------- bytes and form choice


def test_bytes_of_a_90_percent_sparse_tensor() -> None:
    w, mask = sparse_tensor((10, 100), nnz=100)  # 1000 elements, 0.90 sparse
    enc = encode(w, mask)
    assert payload_bytes(enc) == 1000 // 8 + 4 * 100 + 2 * 8  # bitmask + values + int64 shape
    dense_bytes = payload_bytes(encode(w, None))
    assert dense_bytes == 4 * 1000 + 2 * 8
    assert payload_bytes(enc) / dense_bytes == pytest.approx(541 / 4016)  # about 0.13x


def test_bitmask_length_rounds_up() -> None:
    w, mask = sparse_tensor((3, 7), nnz=2)  # 21 elements -> 3 bitmask bytes
    enc = encode(w, mask)
    assert enc["bitmask"].shape == (3,)
    assert payload_bytes(enc) == 3 + 4 * 2 + 2 * 8


def test_fp16_halves_value_bytes() -> None:
    w, mask = sparse_tensor((10, 100), nnz=100)
    assert payload_bytes(encode(w, mask, value_dtype="float16")) == 125 + 2 * 100 + 16


def test_dense_chosen_when_density_is_high() -> None:
    w, mask = sparse_tensor((10, 100), nnz=990)  # 125 + 4*990 > 4*1000
    enc = encode(w, mask)
    assert set(enc) == {"dense", "shape"}
    out, _ = decode(enc)
    np.testing.assert_array_equal(out, np.where(mask, w, 0))  # pruned values are not sent


def test_form_choice_at_the_exact_boundary() -> None:
    # fp16, 16 elements: dense = 32 bytes; sparse = 2 + 2*nnz. A tie goes dense.
    w, mask = sparse_tensor((16,), nnz=15)
    assert set(encode(w, mask, value_dtype="float16")) == {"dense", "shape"}
    w, mask = sparse_tensor((16,), nnz=14)
    assert set(encode(w, mask, value_dtype="float16")) == {"bitmask", "values", "shape"}


def test_all_true_mask_goes_dense() -> None:
    w = np.ones((4, 4), dtype=np.float32)
    assert set(encode(w, np.ones((4, 4), dtype=bool))) == {"dense", "shape"}


# --------------------------------------------------------------------------- encode input errors


def test_encode_rejects_bad_value_dtype() -> None:
    with pytest.raises(InputError, match="float64"):
        encode(np.zeros(3, dtype=np.float32), None, value_dtype="float64")


def test_encode_rejects_mask_shape_mismatch() -> None:
    with pytest.raises(InputError, match=r"mask has shape \(4,\)"):
        encode(np.zeros(3, dtype=np.float32), np.ones(4, dtype=bool))


def test_encode_rejects_non_bool_mask() -> None:
    with pytest.raises(InputError, match="bool"):
        encode(np.zeros(3, dtype=np.float32), np.ones(3, dtype=np.float32))


# --------------------------------------------------------------------------- decode rejects malformed input


@pytest.fixture
def enc21() -> dict[str, np.ndarray]:
    """A sparse encoding of 21 elements: 3 bitmask bytes with 3 padding bits."""
    w, mask = sparse_tensor((3, 7), nnz=4)
    return encode(w, mask)


def test_wire_error_is_a_value_error() -> None:
    assert issubclass(WireError, ValueError)


def test_decode_rejects_truncated_bitmask(enc21: dict[str, np.ndarray]) -> None:
    enc21["bitmask"] = enc21["bitmask"][:-1]
    with pytest.raises(WireError, match="'bitmask' has 2 bytes, expected 3 for 21 elements"):
        decode(enc21)


def test_decode_rejects_too_few_values(enc21: dict[str, np.ndarray]) -> None:
    enc21["values"] = enc21["values"][:-1]
    with pytest.raises(WireError, match="'values' has 3 entries but the bitmask keeps 4"):
        decode(enc21)


def test_decode_rejects_too_many_values(enc21: dict[str, np.ndarray]) -> None:
    enc21["values"] = np.append(enc21["values"], np.float32(1.0))
    with pytest.raises(WireError, match="'values' has 5 entries but the bitmask keeps 4"):
        decode(enc21)


def test_decode_rejects_padding_bits(enc21: dict[str, np.ndarray]) -> None:
    enc21["bitmask"] = enc21["bitmask"].copy()
    enc21["bitmask"][-1] |= 0b00000001  # bit 23, past element 20
    with pytest.raises(WireError, match="padding bits"):
        decode(enc21)


@pytest.mark.parametrize("key", ["bitmask", "values", "shape"])
def test_decode_rejects_missing_sparse_key(enc21: dict[str, np.ndarray], key: str) -> None:
    del enc21[key]
    with pytest.raises(WireError, match=f"missing '{key}'"):
        decode(enc21)


def test_decode_rejects_missing_dense_key() -> None:
    enc = encode(np.zeros(3, dtype=np.float32), None)
    del enc["shape"]
    with pytest.raises(WireError, match="missing 'shape'"):
        decode(enc)
    with pytest.raises(WireError, match="missing 'dense', 'shape'"):
        decode({})


def test_decode_rejects_unexpected_key(enc21: dict[str, np.ndarray]) -> None:
    enc21["dense"] = np.zeros(21, dtype=np.float32)
    with pytest.raises(WireError, match="unexpected 'dense'"):
        decode(enc21)


@pytest.mark.parametrize(
    ("key", "dtype", "reason"),
    [
        ("values", np.float64, "'values' has dtype float64"),
        ("values", np.int32, "'values' has dtype int32"),
        ("bitmask", np.int8, "'bitmask' must be a 1-D uint8 array"),
        ("shape", np.int32, "'shape' has dtype int32, expected int64"),
    ],
)
def test_decode_rejects_wrong_dtypes(enc21: dict[str, np.ndarray], key: str, dtype: type, reason: str) -> None:
    enc21[key] = enc21[key].astype(dtype)
    with pytest.raises(WireError, match=reason):
        decode(enc21)


def test_decode_rejects_wrong_dense_dtype_and_shape() -> None:
    enc = encode(np.zeros((2, 3), dtype=np.float32), None)
    with pytest.raises(WireError, match="'dense' has dtype float64"):
        decode({**enc, "dense": enc["dense"].astype(np.float64)})
    with pytest.raises(WireError, match=r"'dense' has shape \(6,\) but 'shape' says \(2, 3\)"):
        decode({**enc, "dense": enc["dense"].ravel()})


def test_decode_rejects_negative_shape(enc21: dict[str, np.ndarray]) -> None:
    enc21["shape"] = np.array([-3, -7], dtype=np.int64)
    with pytest.raises(WireError, match="negative size"):
        decode(enc21)


def test_decode_rejects_non_array_part(enc21: dict[str, np.ndarray]) -> None:
    enc21["values"] = enc21["values"].tolist()
    with pytest.raises(WireError, match="'values' is a list, not a numpy array"):
        decode(enc21)


# --------------------------------------------------------------------------- model level


def small_model() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    w3, m3 = sparse_tensor((16, 8, 3, 3), nnz=115, seed=1)
    w5, m5 = sparse_tensor((10, 64), nnz=64, seed=2)
    weights = {
        "features.3.weight": w3,
        "features.3.bias": np.linspace(-1, 1, 16, dtype=np.float32),
        "classifier.5.weight": w5,
    }
    return weights, {"features.3.weight": m3, "classifier.5.weight": m5}


def test_encode_model_keys() -> None:
    weights, masks = small_model()
    flat = encode_model(weights, masks)
    assert set(flat) == {
        "features.3.weight/bitmask",
        "features.3.weight/values",
        "features.3.weight/shape",
        "features.3.bias/dense",
        "features.3.bias/shape",
        "classifier.5.weight/bitmask",
        "classifier.5.weight/values",
        "classifier.5.weight/shape",
    }
    assert all(isinstance(a, np.ndarray) for a in flat.values())


def test_model_round_trip_and_bytes() -> None:
    weights, masks = small_model()
    flat = encode_model(weights, masks)
    out_w, out_m = decode_model(flat)
    assert set(out_w) == set(out_m) == set(weights)
    for name, w in weights.items():
        m = masks.get(name, np.ones(w.shape, dtype=bool))
        np.testing.assert_array_equal(out_m[name], m)
        np.testing.assert_array_equal(out_w[name], np.where(m, w, 0))
    expected = (1152 // 8 + 4 * 115 + 4 * 8) + (4 * 16 + 8) + (640 // 8 + 4 * 64 + 2 * 8)
    assert model_bytes(flat) == expected


def test_model_round_trip_fp16() -> None:
    weights, masks = small_model()
    out_w, _ = decode_model(encode_model(weights, masks, value_dtype="float16"))
    for name, w in weights.items():
        m = masks.get(name, np.ones(w.shape, dtype=bool))
        np.testing.assert_allclose(out_w[name], np.where(m, w, 0), rtol=2**-11, atol=2**-24)


def test_encode_model_rejects_slash_in_name() -> None:
    with pytest.raises(InputError, match="'a/b'"):
        encode_model({"a/b": np.zeros(2, dtype=np.float32)}, {})


def test_encode_model_rejects_mask_for_unknown_tensor() -> None:
    with pytest.raises(InputError, match="'ghost'"):
        encode_model({"a": np.zeros(2, dtype=np.float32)}, {"ghost": np.ones(2, dtype=bool)})


def test_decode_model_error_names_the_tensor() -> None:
    weights, masks = small_model()
    flat = encode_model(weights, masks)
    flat["classifier.5.weight/bitmask"] = flat["classifier.5.weight/bitmask"][:-1]
    with pytest.raises(WireError, match="tensor 'classifier.5.weight': 'bitmask' has 79 bytes") as info:
        decode_model(flat)
    assert info.value.tensor == "classifier.5.weight"


def test_decode_model_rejects_key_without_part() -> None:
    with pytest.raises(WireError, match="'fc.weight' is not of the form"):
        decode_model({"fc.weight": np.zeros(2, dtype=np.float32)})
