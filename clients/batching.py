"""How an epoch's shuffled order is cut into minibatches.

"loader" cuts it as PyTorch's DataLoader does with drop_last=False, as the
SparCL reference trains: full batches, then the remainder, however small.
After DDR's removals that remainder can be a handful of examples (420 active
of a 600-example task at batch 32: a last batch of 4), and one step at the
full learning rate on it, with BatchNorm normalising by the statistics of
those few, can undo a task: on Split Fashion-MNIST (width 32, SparCL-DER++
0.90, 20 epochs, seed 0) the first task's Task-IL fell from 98.2% to 75.9% on
its very last step, a batch of 4.

"balanced" takes the same number of steps over the same examples, in batches
that differ by at most one example (420 -> 14 batches of 30) and never exceed
the batch size, so a step's memory and compute budget hold as they do for
"loader".
"""

from __future__ import annotations

import math
from collections.abc import Iterator

BATCHINGS = ("loader", "balanced")


def next_batch(remaining: int, batch: int, batching: str = "loader") -> int:
    """The size of the next minibatch, with `remaining` examples of the epoch's order left."""
    if batching == "balanced" and remaining > batch:
        return math.ceil(remaining / math.ceil(remaining / batch))
    return min(batch, remaining)


def batch_slices(n: int, batch: int, batching: str = "loader") -> Iterator[slice]:
    """A whole epoch of `n` examples, cut batch by batch (next_batch)."""
    start = 0
    while start < n:
        size = next_batch(n - start, batch, batching)
        yield slice(start, start + size)
        start += size
