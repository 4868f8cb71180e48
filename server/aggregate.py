"""Aggregation of sparse client updates as pure functions over name -> array dicts.

Zero-filled FedAvg treats a pruned (masked-out) weight as a vote for zero, so
weights kept by only some clients shrink towards zero. Mask-aware averaging
instead averages each element over the clients that actually kept it.
"""

from __future__ import annotations

from numbers import Real

import numpy as np

from clients.errors import InputError

Weights = dict[str, np.ndarray]
Masks = dict[str, np.ndarray]
Update = tuple[Weights, Masks, float]  # weights, masks, the update's weight (its examples)


# --------------------------------------------------------------------------- checks


def _check_count(n: object, k: int) -> float:
    """An update's weight: its sample count (a plain client's may be a fraction of one, see
    server.strategy), a finite number >= 0."""
    if isinstance(n, bool) or not isinstance(n, Real) or not np.isfinite(float(n)) or n < 0:
        raise InputError(f"update {k}: n_examples must be a finite number >= 0, got {n!r}")
    return float(n)


def _mask_of(masks: Masks, name: str, shape: tuple[int, ...], k: int) -> np.ndarray:
    """The client's mask for one tensor; a tensor sent without one counts as dense."""
    m = masks.get(name)
    if m is None:
        return np.ones(shape, dtype=bool)
    if not isinstance(m, np.ndarray) or m.dtype != np.bool_:
        raise InputError(f"update {k}: mask of {name!r} must be a bool numpy array")
    if m.shape != shape:
        raise InputError(f"update {k}: mask of {name!r} has shape {m.shape} but the model has {shape}")
    return m


def _check_update(update: Update, previous: Weights, k: int) -> tuple[Weights, Masks, float]:
    """Each update must cover exactly the model's tensors, with matching shapes."""
    weights, masks, n = update
    names, expected = set(weights), set(previous)
    if names != expected:
        culprit = sorted(expected - names) or sorted(names - expected)
        what = "lacks" if expected - names else "has unexpected"
        raise InputError(f"update {k} {what} tensor {culprit[0]!r}")
    extra_masks = sorted(set(masks) - expected)
    if extra_masks:
        raise InputError(f"update {k} has a mask for unknown tensor {extra_masks[0]!r}")
    for name, w in weights.items():
        if np.shape(w) != np.shape(previous[name]):
            raise InputError(
                f"update {k}: {name!r} has shape {np.shape(w)} but the model has {np.shape(previous[name])}"
            )
    return weights, masks, _check_count(n, k)


def _copy(previous: Weights) -> Weights:
    """A float32 copy, so callers never alias the previous global model."""
    return {name: np.array(w, dtype=np.float32, copy=True) for name, w in previous.items()}


# --------------------------------------------------------------------------- averaging


def mask_aware_average(updates: list[Update], previous: Weights) -> Weights:
    """Per element: sum_k n_k m_k w_k / sum_k n_k m_k; kept by nobody -> previous value.

    Updates are (weights, masks, n_examples); a tensor without a mask is dense.
    Returns float32 arrays; an empty list returns a copy of `previous`.
    """
    checked = [_check_update(u, previous, k) for k, u in enumerate(updates)]
    out = _copy(previous)
    for name, prev in previous.items():
        shape = np.shape(prev)
        num = np.zeros(shape, dtype=np.float64)
        den = np.zeros(shape, dtype=np.float64)
        for k, (weights, masks, n) in enumerate(checked):
            m = _mask_of(masks, name, shape, k)
            num += n * np.where(m, weights[name], 0.0)
            den += n * m
        kept = den > 0
        out[name][kept] = (num[kept] / den[kept]).astype(np.float32)
    return out


def zero_filled_fedavg(updates: list[Update], previous: Weights) -> Weights:
    """Naive baseline: sum_k n_k w_k m_k / sum_k n_k (masked-out entries count as 0).

    An empty list, or one whose sample counts sum to 0, returns a copy of `previous`.
    """
    checked = [_check_update(u, previous, k) for k, u in enumerate(updates)]
    total = sum(n for _, _, n in checked)
    if total == 0:
        return _copy(previous)
    out: Weights = {}
    for name, prev in previous.items():
        shape = np.shape(prev)
        acc = np.zeros(shape, dtype=np.float64)
        for k, (weights, masks, n) in enumerate(checked):
            acc += n * np.where(_mask_of(masks, name, shape, k), weights[name], 0.0)
        out[name] = np.asarray(acc / total, dtype=np.float32)
    return out


def pool_statistics(updates: list[tuple[Weights, float]], names: list[str] | tuple[str, ...],
                    averaged: Weights) -> Weights:
    """Normalisation statistics pooled over devices: per name, sum_k b_k s_k / sum_k b_k.

    b_k is the number of batches device k's recalibration pass ran
    (clients.sparcl.learner.Learner.recalibrate_norms). That pass leaves
    BatchNorm's running mean and variance as plain averages over its batches,
    so the pooled statistics are exactly those of one pass over every device's
    batches: the fleet's data seen through each device's weights. Updates
    with b_k = 0 (no pass, a plain client) count for nothing; if none made
    one, `averaged` (the weights' own average) stands.
    """
    counted = [(w, float(b)) for w, b in updates if b > 0]
    out = dict(averaged)
    total = sum(b for _, b in counted)
    if not total:
        return out
    for name in names:
        acc = np.zeros(np.shape(averaged[name]), dtype=np.float64)
        for weights, b in counted:
            acc += b * np.asarray(weights[name], dtype=np.float64)
        out[name] = (acc / total).astype(np.float32)
    return out


def in_mask_share(weights: Weights, previous: Weights, masks: Masks) -> float:
    """The share of an update's squared change, over the masked tensors, that falls where `masks`
    keep weights (1.0 for an update that did not change them).

    A plain dense client grows weights the sparse model does not have; projected onto the mask,
    only this share of its step survives, and it was taken together with the part that did not.
    """
    inside = total = 0.0
    for name, m in masks.items():
        change = np.square(np.asarray(weights[name], np.float64) - np.asarray(previous[name], np.float64))
        inside += float(change[m].sum())
        total += float(change.sum())
    return 1.0 if total == 0.0 else inside / total


# --------------------------------------------------------------------------- masks


def union_mask(masks_list: list[Masks]) -> Masks:
    """Elementwise OR of the clients' masks, per tensor name (over the dicts holding it)."""
    out: Masks = {}
    for k, masks in enumerate(masks_list):
        for name, m in masks.items():
            if not isinstance(m, np.ndarray) or m.dtype != np.bool_:
                raise InputError(f"masks {k}: mask of {name!r} must be a bool numpy array")
            if name not in out:
                out[name] = m.copy()
            elif out[name].shape != m.shape:
                raise InputError(f"masks {k}: mask of {name!r} has shape {m.shape}, others have {out[name].shape}")
            else:
                out[name] |= m
    return out


def _check_sparsity(sparsity: object) -> float:
    """Sparsity is the pruned fraction; 1.0 would prune everything."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, Real) or not 0.0 <= float(sparsity) < 1.0:
        raise InputError(f"sparsity {sparsity!r} must be a number in [0, 1)")
    return float(sparsity)


def keep_count(numel: int, sparsity: float) -> int:
    """How many entries survive pruning a tensor of `numel` elements."""
    return min(numel, max(0, round(numel * (1.0 - sparsity))))


def top_k_mask(w: np.ndarray, k: int) -> np.ndarray:
    """Mask of exactly the k largest-|w| entries; ties go to the lower flat index."""
    flat = np.abs(np.asarray(w, dtype=np.float64)).ravel()
    order = np.argsort(-flat, kind="stable")
    mask = np.zeros(flat.size, dtype=bool)
    mask[order[:k]] = True
    return mask.reshape(np.shape(w))


GRANULARITIES = ("weight", "channel")


def channel_keep_count(channels: int, sparsity: float) -> int:
    """How many output channels survive: round(C_out * (1 - sparsity)), at least one as on the devices
    (clients.sparcl.tdm.keep_count): a layer with no channel left would cut the network."""
    return min(channels, max(1, round(channels * (1.0 - sparsity))))


def top_k_channels(w: np.ndarray, k: int) -> np.ndarray:
    """Mask of exactly the k output channels (axis 0) with the largest L1 norm, whole;
    ties go to the lower channel index."""
    w = np.asarray(w)
    norms = np.abs(w.astype(np.float64)).reshape(w.shape[0], -1).sum(axis=1)
    keep = np.zeros(w.shape[0], dtype=bool)
    keep[np.argsort(-norms, kind="stable")[:k]] = True
    return np.broadcast_to(keep.reshape(-1, *([1] * (w.ndim - 1))), w.shape).copy()


def resparsify(weights: Weights, masked_names: list[str], sparsity: float,
               granularity: str = "weight") -> tuple[Weights, Masks]:
    """Re-prune the named tensors to `sparsity` by magnitude after averaging.

    Averaging over clients densifies the model (the union of their masks); this
    restores the target density. `weight` keeps the largest-|w| entries;
    `channel` keeps whole output channels, those with the largest L1 norm
    (for channel-granular TDM; each device zeroes the norms of the dropped
    channels when it applies the masks). Returns (all weights, copied; masks of
    the named tensors).
    """
    s = _check_sparsity(sparsity)
    if granularity not in GRANULARITIES:
        raise InputError(f"granularity {granularity!r} is unknown (choose from: {', '.join(GRANULARITIES)})")
    unknown = [name for name in masked_names if name not in weights]
    if unknown:
        raise InputError(f"cannot resparsify unknown tensor {unknown[0]!r}")
    out = {name: np.array(w, copy=True) for name, w in weights.items()}
    masks: Masks = {}
    for name in masked_names:
        w = out[name]
        if not np.all(np.isfinite(w)):
            raise InputError(f"cannot resparsify {name!r}: it holds NaN or Inf")
        if granularity == "channel":
            if w.ndim == 0 or w.shape[0] == 0:
                raise InputError(f"cannot resparsify {name!r} by channel: it has no output channels")
            masks[name] = top_k_channels(w, channel_keep_count(w.shape[0], s))
        else:
            masks[name] = top_k_mask(w, keep_count(w.size, s))
        w[~masks[name]] = 0
    return out, masks


# --------------------------------------------------------------------------- asynchronous (FedBuff)


def staleness_weight(staleness: int) -> float:
    """The share of its change a stale update contributes: 1 / sqrt(1 + s) for an update computed on a
    global model s versions old (FedAsync's polynomial discount with a = 1/2, the one FedBuff uses)."""
    if isinstance(staleness, bool) or not isinstance(staleness, (int, np.integer)) or staleness < 0:
        raise InputError(f"staleness must be an int >= 0 (versions), got {staleness!r}")
    return 1.0 / float(np.sqrt(1.0 + staleness))


def change_of(update: Weights, base: Weights) -> Weights:
    """What a device changed: its update minus the global model it started from (float64, exact for float32)."""
    return {name: np.asarray(update[name], np.float64) - np.asarray(base[name], np.float64) for name in base}


def stale_applied(current: Weights, change: Weights, weight: float) -> Weights:
    """A stale update as the newest global model plus `weight` times its change.

    This is what the buffered server averages (mask-aware, each device's own
    mask): an entry the device's mask kept moves by weight x its change from
    wherever the global model has it now, so a change made on an older model
    is replayed onto the newer one rather than overwriting it. Fresh (weight
    1, change from the current model) it is the update itself.
    """
    return {name: (np.asarray(w, np.float64) + weight * change[name]).astype(np.float32)
            for name, w in current.items()}
