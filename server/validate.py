"""Validation of one client's update against the global model before aggregation.

One bad reply (a truncated bitmask, a NaN, a tensor of the wrong shape) must not
poison the global model, so every update is decoded and checked here and either
accepted as (weights, masks) or rejected with a one-line reason naming the tensor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from clients.wire import SEP, WireError, decode_model, split_model

ACCEPTED_DTYPES: tuple[str, ...] = ("float16", "float32")
_MAX_NAMES = 5

Arrays = dict[str, np.ndarray]


class UpdateRejected(ValueError):
    """A client update that fails validation; str(err) is a one-line reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"update rejected: {reason}")


def _name_list(names: set[str]) -> str:
    """Quoted, sorted names, capped so the message stays one readable line."""
    ordered = sorted(names)
    shown = ", ".join(repr(n) for n in ordered[:_MAX_NAMES])
    more = len(ordered) - _MAX_NAMES
    return shown + (f" and {more} more" if more > 0 else "")


def _check_names(names: set[str], reference: Arrays) -> None:
    """The update must carry exactly the model's tensors."""
    missing, unexpected = set(reference) - names, names - set(reference)
    problems = []
    if missing:
        problems.append(f"missing tensor{'s' if len(missing) > 1 else ''} {_name_list(missing)}")
    if unexpected:
        problems.append(f"unexpected tensor{'s' if len(unexpected) > 1 else ''} {_name_list(unexpected)}")
    if problems:
        raise UpdateRejected("; ".join(problems))


def _check_tensor(name: str, w: np.ndarray, reference: np.ndarray) -> None:
    """Shape must match the model's and every value must be finite."""
    expected = tuple(np.shape(reference))
    if w.shape != expected:
        raise UpdateRejected(f"{name!r} has shape {w.shape} but the model has {expected}")
    bad = int(np.count_nonzero(~np.isfinite(w)))
    if bad:
        raise UpdateRejected(f"{name!r} has {bad} non-finite value{'s' if bad > 1 else ''} (NaN or Inf)")


def _plain_dense(arr: object, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A tensor from an ordinary (non-sparse) client: float16/32, counted as all kept."""
    if not isinstance(arr, np.ndarray):
        raise UpdateRejected(f"{name!r} is a {type(arr).__name__}, not a numpy array")
    if arr.dtype.name not in ACCEPTED_DTYPES:
        raise UpdateRejected(f"{name!r} has dtype {arr.dtype}; only float16/float32 are accepted")
    return arr.astype(np.float32), np.ones(arr.shape, dtype=bool)


def _is_plain(flat: dict[str, np.ndarray]) -> bool:
    """Plain dense updates use bare tensor names; wire updates use "<name>/<part>"."""
    plain = [str(k) for k in flat if SEP not in str(k)]
    if plain and len(plain) != len(flat):
        raise UpdateRejected(f"key {plain[0]!r} mixes a plain tensor into a wire-encoded update")
    return bool(plain)


def _drop_counters(flat: Arrays, reference: Arrays) -> Arrays:
    """A plain client sends its whole state_dict(); integer buffers the global model does not carry
    (BatchNorm's num_batches_tracked) are bookkeeping, not weights, and are set aside."""
    return {k: v for k, v in flat.items()
            if k in reference or not (isinstance(v, np.ndarray) and v.dtype.kind in "iub")}


def _decode_plain(flat: Arrays, reference: Arrays) -> tuple[Arrays, Arrays]:
    """Names first, then each tensor as a plain dense array."""
    flat = _drop_counters(flat, reference)
    _check_names(set(flat), reference)
    pairs = {name: _plain_dense(flat[name], name) for name in reference}
    return {n: p[0] for n, p in pairs.items()}, {n: p[1] for n, p in pairs.items()}


def _decode_wire(flat: Arrays, reference: Arrays) -> tuple[Arrays, Arrays]:
    """Names first (so junk tensors are never decoded), then clients.wire.decode_model."""
    try:
        _check_names(set(split_model(flat)), reference)
        return decode_model(flat)
    except WireError as err:  # decode_model's message already names the tensor
        raise UpdateRejected(str(err)) from None


def validate_update(flat: Arrays, reference: Arrays) -> tuple[Arrays, Arrays]:
    """Decode a client's update and check it against the global model.

    Accepts the flat wire format of clients.wire.encode_model, or a plain dense
    update keyed by the model's tensor names (all-ones masks; a full
    state_dict's integer counters are set aside). Returns
    (float32 weights, bool masks); raises UpdateRejected otherwise.
    """
    if not isinstance(flat, dict):
        raise UpdateRejected(f"update is a {type(flat).__name__}, not a dict")
    weights, masks = _decode_plain(flat, reference) if _is_plain(flat) else _decode_wire(flat, reference)
    for name in reference:
        _check_tensor(name, weights[name], reference[name])
    return weights, masks


def reported_figures(values: Mapping[str, object], keys: tuple[str, ...]) -> dict[str, float]:
    """The figures a device reported under `keys` (FLOPs, bytes, seconds, examples), each a finite number >= 0;
    absent ones (or None) are left out. The server books them (time, energy, the average's weights), so one
    that is not rejects the reply instead of crashing the run or poisoning the totals."""
    figures = {}
    for key in keys:
        value = values.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise UpdateRejected(f"its {key!r} must be a finite number >= 0, got {value!r:.40}")
        figures[key] = float(value)
    return figures
