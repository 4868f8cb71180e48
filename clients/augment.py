"""Training-time augmentation: the random crop and horizontal flip of the CIFAR path.

The SparCL reference (like mammoth) pads by 4, crops back at a random offset
and flips half the images, on the current batch and on every buffer draw; the
buffer itself stores the non-augmented images. Batched and seeded by the
learner's generator, so a run is reproducible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Each image of an (N, C, H, W) batch zero-padded by `pad`, cropped at random, flipped with p=0.5."""
    n, _, h, w = x.shape
    if n == 0:
        return x
    padded = F.pad(x, (pad, pad, pad, pad))
    device = x.device  # the draws come from the CPU generator, so a GPU batch gets the same crops
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(device)
    rows = (dy[:, None] + torch.arange(h, device=device)[None, :])[:, None, :, None]      # (N, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=device)[None, :])[:, None, None, :]      # (N, 1, 1, W)
    batch = torch.arange(n, device=device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=device)[None, :, None, None]
    out = padded[batch, chan, rows, cols]
    flip = (torch.rand(n, generator=generator) < 0.5).to(device)
    return torch.where(flip[:, None, None, None], out.flip(-1), out)
