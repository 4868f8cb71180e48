"""Wire format of a sparse model update as plain numpy arrays.

Flower's ArrayRecord carries numpy arrays, not torch sparse tensors, so a
sparse tensor travels as a packed bitmask (1 bit per element) plus the kept
values, or as a dense array when that is not larger. Only numpy is used here,
so the format is testable without torch or Flower.

One tensor encodes to either
    {"bitmask": uint8[ceil(numel/8)], "values": float[nnz], "shape": int64[ndim]}
or
    {"dense": float[shape], "shape": int64[ndim]}.
A model flattens to one dict keyed "<tensor name>/<part>" (names never hold "/").
"""

from __future__ import annotations

import math

import numpy as np

from clients.errors import InputError

VALUE_DTYPES: tuple[str, ...] = ("float32", "float16")
SEP = "/"
SPARSE_KEYS = frozenset({"bitmask", "values", "shape"})
DENSE_KEYS = frozenset({"dense", "shape"})


class WireError(ValueError):
    """A malformed encoded update; str(err) is a one-line reason.

    `tensor` names the offending tensor when known, so a caller can report it.
    """

    def __init__(self, message: str, tensor: str | None = None) -> None:
        super().__init__(message)
        self.tensor = tensor


# --------------------------------------------------------------------------- encode


def _check_value_dtype(value_dtype: str) -> np.dtype:
    """Only fp32/fp16 travel: the receiver rejects anything else."""
    if value_dtype not in VALUE_DTYPES:
        raise InputError(f"value_dtype {value_dtype!r} is not one of {', '.join(VALUE_DTYPES)}")
    return np.dtype(value_dtype)


def _check_tensor(w: np.ndarray, mask: np.ndarray | None) -> None:
    """Reject inputs that would encode to something the decoder refuses."""
    if not isinstance(w, np.ndarray):
        raise InputError(f"weights must be a numpy array, got {type(w).__name__}")
    if not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)):
        raise InputError(f"weights must be real numbers, got dtype {w.dtype}")
    if mask is None:
        return
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        raise InputError("mask must be a bool numpy array")
    if mask.shape != w.shape:
        raise InputError(f"mask has shape {mask.shape} but the weights have {w.shape}")


def _sparse_nbytes(numel: int, nnz: int, itemsize: int) -> int:
    """Bytes of bitmask + values (the shape array is common to both forms)."""
    return math.ceil(numel / 8) + nnz * itemsize


def encode(
    w: np.ndarray, mask: np.ndarray | None, *, value_dtype: str = "float32"
) -> dict[str, np.ndarray]:
    """Encode one tensor, sparse or dense, whichever form is not larger (ties go dense).

    Values at masked-out positions are never sent.
    """
    dtype = _check_value_dtype(value_dtype)
    _check_tensor(w, mask)
    shape = np.asarray(w.shape, dtype=np.int64)
    if mask is not None:
        nnz = int(np.count_nonzero(mask))
        if _sparse_nbytes(w.size, nnz, dtype.itemsize) < w.size * dtype.itemsize:
            flat_mask = mask.ravel()
            return {
                "bitmask": np.packbits(flat_mask),
                "values": w.ravel()[flat_mask].astype(dtype),
                "shape": shape,
            }
    dense = w.astype(dtype) if mask is None else np.where(mask, w, 0).astype(dtype)
    return {"dense": dense, "shape": shape}


# --------------------------------------------------------------------------- decode


def _require_array(enc: dict[str, np.ndarray], key: str) -> np.ndarray:
    """Fetch one part, insisting it is a numpy array."""
    arr = enc[key]
    if not isinstance(arr, np.ndarray):
        raise WireError(f"{key!r} is a {type(arr).__name__}, not a numpy array")
    return arr


def _decode_shape(enc: dict[str, np.ndarray]) -> tuple[int, ...]:
    """The declared shape: a 1-D int64 array of non-negative sizes."""
    shape = _require_array(enc, "shape")
    if shape.dtype != np.int64:
        raise WireError(f"'shape' has dtype {shape.dtype}, expected int64")
    if shape.ndim != 1:
        raise WireError(f"'shape' must be 1-D, got {shape.ndim}-D")
    if np.any(shape < 0):
        raise WireError(f"'shape' {tuple(int(s) for s in shape)} has a negative size")
    return tuple(int(s) for s in shape)


def _check_float(arr: np.ndarray, key: str) -> None:
    """Only fp32/fp16 payloads are accepted."""
    if arr.dtype.name not in VALUE_DTYPES:
        raise WireError(f"{key!r} has dtype {arr.dtype}, expected float32 or float16")


def _check_keys(enc: dict[str, np.ndarray]) -> frozenset[str]:
    """The key set must be exactly the sparse or the dense form."""
    if not isinstance(enc, dict):
        raise WireError(f"encoding is a {type(enc).__name__}, not a dict")
    keys = frozenset(enc)
    if keys in (SPARSE_KEYS, DENSE_KEYS):
        return keys
    expected = SPARSE_KEYS if "bitmask" in keys or "values" in keys else DENSE_KEYS
    missing, extra = sorted(expected - keys), sorted(keys - expected)
    parts = ([f"missing {', '.join(map(repr, missing))}"] if missing else []) + (
        [f"unexpected {', '.join(map(repr, extra))}"] if extra else []
    )
    raise WireError(f"malformed encoding: {'; '.join(parts)}")


def _decode_dense(enc: dict[str, np.ndarray], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    dense = _require_array(enc, "dense")
    _check_float(dense, "dense")
    if dense.shape != shape:
        raise WireError(f"'dense' has shape {dense.shape} but 'shape' says {shape}")
    return dense.astype(np.float32), np.ones(shape, dtype=bool)


def _decode_sparse(enc: dict[str, np.ndarray], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    bitmask, values = _require_array(enc, "bitmask"), _require_array(enc, "values")
    numel = math.prod(shape)
    if bitmask.dtype != np.uint8 or bitmask.ndim != 1:
        raise WireError(f"'bitmask' must be a 1-D uint8 array, got {bitmask.ndim}-D {bitmask.dtype}")
    if bitmask.size != math.ceil(numel / 8):
        raise WireError(f"'bitmask' has {bitmask.size} bytes, expected {math.ceil(numel / 8)} for {numel} elements")
    bits = np.unpackbits(bitmask)
    if bits[numel:].any():
        raise WireError("'bitmask' has padding bits set past the last element")
    _check_float(values, "values")
    nnz = int(np.count_nonzero(bits))
    if values.ndim != 1 or values.size != nnz:
        raise WireError(f"'values' has {values.size} entries but the bitmask keeps {nnz}")
    mask = bits[:numel].astype(bool)
    out = np.zeros(numel, dtype=np.float32)
    out[mask] = values
    return out.reshape(shape), mask.reshape(shape)


def decode(enc: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Decode one tensor to (float32 dense array, bool mask); zeros where masked out.

    Everything arriving from the network is checked; any defect raises WireError.
    """
    keys = _check_keys(enc)
    shape = _decode_shape(enc)
    if keys == DENSE_KEYS:
        return _decode_dense(enc, shape)
    return _decode_sparse(enc, shape)


def payload_bytes(enc: dict[str, np.ndarray]) -> int:
    """Bytes that actually travel: the sum of the arrays' sizes."""
    return sum(int(np.asarray(a).nbytes) for a in enc.values())


# --------------------------------------------------------------------------- model level


def encode_model(
    weights: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    value_dtype: str = "float32",
) -> dict[str, np.ndarray]:
    """Encode a whole model into one flat dict keyed "<name>/<part>".

    Tensors without a mask (or with a None mask) are sent dense.
    """
    unknown = sorted(set(masks) - set(weights))
    if unknown:
        raise InputError(f"mask given for unknown tensor {unknown[0]!r}")
    flat: dict[str, np.ndarray] = {}
    for name, w in weights.items():
        if not name or SEP in name:
            raise InputError(f"tensor name {name!r} must be non-empty and contain no {SEP!r}")
        try:
            enc = encode(w, masks.get(name), value_dtype=value_dtype)
        except InputError as err:
            raise InputError(f"tensor {name!r}: {err}") from None
        flat.update({f"{name}{SEP}{part}": arr for part, arr in enc.items()})
    return flat


def split_model(flat: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Group a flat dict into {name: {part: array}}; keys must be "<name>/<part>"."""
    if not isinstance(flat, dict):
        raise WireError(f"update is a {type(flat).__name__}, not a dict")
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in flat.items():
        name, sep, part = str(key).partition(SEP)
        if not sep or not name or not part:
            raise WireError(f"key {key!r} is not of the form '<name>/<part>'", tensor=str(key))
        groups.setdefault(name, {})[part] = arr
    return groups


def decode_model(flat: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Decode a flat dict from encode_model into (weights, masks) keyed by tensor name."""
    weights: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for name, enc in split_model(flat).items():
        try:
            weights[name], masks[name] = decode(enc)
        except WireError as err:
            raise WireError(f"tensor {name!r}: {err}", tensor=name) from None
    return weights, masks


def model_bytes(flat: dict[str, np.ndarray]) -> int:
    """Bytes a whole encoded model puts on the wire."""
    return payload_bytes(flat)
