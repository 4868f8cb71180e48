"""The replay buffer shared by every rehearsal method: reservoir sampling.

Reservoir sampling keeps a uniform sample of everything seen so far in a fixed
number of slots, without knowing the stream's length: the n-th example takes a
random slot with probability capacity / n.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def reservoir_slot(num_seen: int, capacity: int, generator: torch.Generator) -> int:
    """Slot for the next example after `num_seen` were offered, or -1 to skip it."""
    if num_seen < capacity:
        return num_seen
    j = int(torch.randint(0, num_seen + 1, (1,), generator=generator))
    return j if j < capacity else -1


class ReservoirBuffer:
    """Fixed-size store of (example, label, logits) filled by reservoir sampling."""

    def __init__(self, capacity: int, generator: torch.Generator) -> None:
        self.capacity = capacity
        self.generator = generator
        self.num_seen = 0
        self.examples: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None

    def __len__(self) -> int:
        return min(self.num_seen, self.capacity)

    def _allocate(self, x: torch.Tensor, logits: torch.Tensor | None) -> None:
        self.examples = torch.zeros((self.capacity, *x.shape[1:]), dtype=x.dtype, device=x.device)
        self.labels = torch.zeros(self.capacity, dtype=torch.long, device=x.device)
        if logits is not None:
            self.logits = torch.zeros((self.capacity, logits.shape[1]), dtype=logits.dtype, device=x.device)

    def add(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None = None) -> None:
        """Offer a batch; each example independently takes a slot or is skipped."""
        if self.capacity == 0:
            return
        if self.examples is None:
            self._allocate(x, logits)
        assert self.examples is not None and self.labels is not None  # _allocate sets both
        for i in range(x.shape[0]):
            slot = reservoir_slot(self.num_seen, self.capacity, self.generator)
            self.num_seen += 1
            if slot < 0:
                continue
            self.examples[slot] = x[i]
            self.labels[slot] = y[i]
            if logits is not None and self.logits is not None:
                self.logits[slot] = logits[i]

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Draw min(n, len) stored examples without replacement."""
        size = len(self)
        idx = torch.randperm(size, generator=self.generator)[: min(n, size)]  # CPU draws: same on a GPU
        # callers draw only from a non-empty buffer, whose tensors `add` or `load_state_dict` allocated
        assert self.examples is not None and self.labels is not None, "sample() from an empty buffer"
        idx = idx.to(self.examples.device)
        logits = self.logits[idx] if self.logits is not None else None
        return self.examples[idx], self.labels[idx], logits

    def shrink(self, capacity: int) -> None:
        """Keep a uniform random subset of `capacity` slots (a memory budget's last resort).

        A uniform subset of a uniform sample is still a uniform sample of the
        stream, so reservoir sampling carries on correctly with the smaller size.
        """
        if capacity >= self.capacity:
            return
        keep = torch.randperm(len(self), generator=self.generator)[:capacity]
        self.capacity = capacity
        for key in ("examples", "labels", "logits"):
            value = getattr(self, key)
            if value is not None:
                shrunk = torch.zeros((capacity, *value.shape[1:]), dtype=value.dtype, device=value.device)
                shrunk[: keep.numel()] = value[keep.to(value.device)]
                setattr(self, key, shrunk)

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        state: dict[str, torch.Tensor | int] = {"num_seen": self.num_seen, "capacity": self.capacity}
        for key in ("examples", "labels", "logits"):
            value = getattr(self, key)
            if value is not None:
                state[key] = value[: len(self)].clone()
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor | int], device: torch.device | str = "cpu") -> None:
        """Restore a saved buffer onto `device` (the learner's)."""
        self.num_seen = int(state["num_seen"])
        self.capacity = int(state.get("capacity", self.capacity))
        for key in ("examples", "labels", "logits"):
            setattr(self, key, None)
            if key in state:
                stored = state[key]
                assert isinstance(stored, torch.Tensor)  # state_dict saves the three stores as tensors
                full = torch.zeros((self.capacity, *stored.shape[1:]), dtype=stored.dtype, device=device)
                full[: stored.shape[0]] = stored
                setattr(self, key, full)
