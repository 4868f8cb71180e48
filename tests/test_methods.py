"""Rehearsal methods: loss values against hand-computed combinations, draws, buffer updates."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clients.cl.buffer import ReservoirBuffer
from clients.cl.methods import DER, DERPP, ER, METHODS, MethodConfig, RehearsalMethod, build_method
from clients.errors import InputError


def linear_model() -> nn.Module:
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0, 0.2, 0.0],
                                         [0.1, 0.3, -0.4, 1.0],
                                         [-0.6, 0.2, 0.7, -0.3]]))
        model.bias.copy_(torch.tensor([0.1, -0.2, 0.05]))
    return model


def batch(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def fill(method, n: int = 10, with_logits: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Put n hand-made examples in the buffer (capacity >= n: all stored in order)."""
    x, y = batch(100, n)
    logits = torch.randn(n, 3, generator=torch.Generator().manual_seed(101))
    method.buffer.add(x, y, logits if with_logits else None)
    return x, y, logits


def clone_gen(gen: torch.Generator) -> torch.Generator:
    g = torch.Generator()
    g.set_state(gen.get_state())
    return g


def build(name: str, **kw):
    gen = torch.Generator().manual_seed(0)
    cfg = MethodConfig(name=name, buffer_size=16, minibatch=4, **kw)
    return build_method(linear_model(), cfg, gen), gen


def draw(gen: torch.Generator, size: int, n: int) -> torch.Tensor:
    """The indices ReservoirBuffer.sample takes: a permutation prefix from its generator."""
    return torch.randperm(size, generator=gen)[:n]


def test_build_method_classes_and_capacity():
    kinds = {"finetune": RehearsalMethod, "er": ER, "der": DER, "derpp": DERPP}
    for name in METHODS:
        m, _ = build(name)
        assert type(m) is kinds[name]
        assert m.buffer.capacity == (0 if name == "finetune" else 16)


@pytest.mark.parametrize("bad", ["icarl", "DER++", ""])
def test_unknown_method_is_input_error(bad):
    with pytest.raises(InputError, match="unknown"):
        MethodConfig(name=bad)


def test_config_validation():
    with pytest.raises(InputError):
        MethodConfig(buffer_size=-1)
    with pytest.raises(InputError):
        MethodConfig(minibatch=0)


def test_finetune_loss_is_plain_cross_entropy():
    m, _ = build("finetune")
    x, y = batch(1, 6)
    step = m.loss(x, y)
    expected = F.cross_entropy(m.model(x), y)
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert step.examples == 6
    assert torch.equal(step.logits, m.model(x))
    m.end_step(x, y, step.logits)
    assert len(m.buffer) == 0


def test_mask_other_classes():
    m, _ = build("finetune", mask_other_classes=True)
    m.begin_task((1, 2))
    x, _ = batch(1, 6)
    y = torch.tensor([1, 2, 2, 1, 1, 2])
    logits = m.model(x)
    expected = F.cross_entropy(logits[:, 1:], y - 1)
    assert m.loss(x, y).loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["er", "der", "derpp"])
def test_empty_buffer_means_current_batch_only(name):
    m, _ = build(name)
    x, y = batch(1, 5)
    step = m.loss(x, y)
    assert step.examples == 5
    assert step.loss.item() == pytest.approx(F.cross_entropy(m.model(x), y).item(), rel=1e-6)


def test_er_loss_is_ce_plus_buffer_ce():
    m, gen = build("er")
    bx_all, by_all, _ = fill(m, with_logits=False)
    x, y = batch(1, 6)
    g = clone_gen(gen)
    step = m.loss(x, y)
    i = draw(g, 10, 4)
    expected = F.cross_entropy(m.model(x), y) + F.cross_entropy(m.model(bx_all[i]), by_all[i])
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert step.examples == 6 + 4
    # the loss is differentiable through the model
    step.loss.backward()
    assert m.model.weight.grad is not None


def test_der_loss_is_ce_plus_alpha_logit_mse():
    m, gen = build("der", alpha=0.3)
    bx_all, _, bl_all = fill(m)
    x, y = batch(1, 6)
    g = clone_gen(gen)
    step = m.loss(x, y)
    i = draw(g, 10, 4)
    expected = F.cross_entropy(m.model(x), y) + 0.3 * ((m.model(bx_all[i]) - bl_all[i]) ** 2).mean()
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert step.examples == 10


def test_derpp_loss_is_ce_plus_alpha_mse_plus_beta_ce_on_two_draws():
    m, gen = build("derpp", alpha=0.1, beta=0.5)
    bx_all, by_all, bl_all = fill(m)
    x, y = batch(1, 6)
    g = clone_gen(gen)
    step = m.loss(x, y)
    i1 = draw(g, 10, 4)
    i2 = draw(g, 10, 4)
    assert not torch.equal(i1, i2)  # two independent draws (for this seed)
    ce = F.cross_entropy(m.model(x), y)
    mse = ((m.model(bx_all[i1]) - bl_all[i1]) ** 2).mean()
    ce2 = F.cross_entropy(m.model(bx_all[i2]), by_all[i2])
    expected = ce + 0.1 * mse + 0.5 * ce2
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert step.examples == 6 + 4 + 4
    # the generator advanced by exactly the two draws
    assert torch.equal(gen.get_state(), g.get_state())


def test_draws_capped_by_buffer_size():
    m, _ = build("derpp")
    fill(m, n=3)
    x, y = batch(1, 6)
    assert m.loss(x, y).examples == 6 + 3 + 3


@pytest.mark.parametrize("name,with_logits", [("der", True), ("derpp", True), ("er", False)])
def test_end_step_stores_what_the_method_needs(name, with_logits):
    m, _ = build(name)
    x, y = batch(1, 5)
    logits = torch.arange(15, dtype=torch.float32).view(5, 3)
    m.end_step(x, y, logits)
    assert len(m.buffer) == 5
    assert torch.equal(m.buffer.examples[:5], x)
    assert torch.equal(m.buffer.labels[:5], y)
    if with_logits:
        assert torch.equal(m.buffer.logits[:5], logits)
    else:
        assert m.buffer.logits is None


def test_end_step_stores_detached_logits():
    m, _ = build("derpp")
    x, y = batch(1, 5)
    step = m.loss(x, y)
    m.end_step(x, y, step.logits)
    assert not m.buffer.logits.requires_grad
    assert torch.allclose(m.buffer.logits[:5], m.model(x).detach())


def test_methods_share_the_given_buffer_generator():
    gen = torch.Generator().manual_seed(5)
    m = build_method(linear_model(), MethodConfig(name="er", buffer_size=4), gen)
    assert isinstance(m.buffer, ReservoirBuffer)
    assert m.buffer.generator is gen
