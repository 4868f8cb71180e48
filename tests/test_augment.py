"""The CIFAR path's random crop and horizontal flip."""

from __future__ import annotations

import torch

from clients.augment import crop_flip


def test_each_output_is_a_shifted_window_of_the_padded_image_possibly_flipped():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8) + 1  # no zeros inside
    gen = torch.Generator().manual_seed(0)
    out = crop_flip(x, gen, pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)


def test_seeded_and_varied():
    x = torch.randn(64, 3, 8, 8)
    a = crop_flip(x, torch.Generator().manual_seed(1))
    b = crop_flip(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, x)  # 64 images: some crop moved or some flip happened
    flipped = sum(torch.equal(a[i], x[i].flip(-1)) for i in range(64))
    assert flipped < 64
