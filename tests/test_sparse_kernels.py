"""SparseProp's sparse kernels (an optional extra): the same function and gradients as the masked dense
step, at layer and learner level. Skipped, with the reason, where SparseProp is not installed."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clients.errors import InputError
from clients.sparcl import sparse_kernels
from clients.sparcl.tdm import TDMConfig

needs_sparseprop = pytest.mark.skipif(not sparse_kernels.available(),
                                      reason="SparseProp is not installed (pip install --no-build-isolation "
                                             "'sparcl-fleet[sparseprop]', x86 with AVX2 only)")


@needs_sparseprop
@pytest.mark.parametrize("batch", [16, 5])  # 5: not a multiple of the batch lanes (BATCH_LANES)
@pytest.mark.parametrize("stride, over_on", [(1, False), (1, True), (2, False)])
def test_a_sparse_layer_matches_the_masked_dense_layer_in_outputs_and_gradients(stride, over_on, batch):
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, stride=stride, padding=1, bias=False)
    live = torch.rand(conv.weight.shape, generator=g) < 0.2
    live[3, 2, 1, 1] = True
    with torch.no_grad():
        conv.weight.mul_(live)
        conv.weight[3, 2, 1, 1] = 0.0  # live at 0, as TDM regrows a weight: it must still get a gradient
    x = torch.randn(batch, 8, 12, 12, generator=g)
    upstream = torch.randn(batch, 16, 12 // stride, 12 // stride, generator=g)
    results = []
    for sparse in (False, True):
        w = conv.weight.detach().clone().requires_grad_()
        xi = x.clone().requires_grad_()
        out = (sparse_kernels.sparse_conv2d(xi, w, sparse_kernels.plan(conv, live, over_on)) if sparse
               else F.conv2d(xi, w, None, stride, 1))
        out.backward(upstream)
        results.append((out.detach(), xi.grad, w.grad * live))
    for dense, sparse in zip(*results):  # SparseProp sums in its own order (-ffast-math)
        assert torch.allclose(dense, sparse, atol=1e-5 * float(dense.abs().max()), rtol=1e-4)
    assert results[1][2][3, 2, 1, 1] != 0  # the weight live at 0 is trained


@needs_sparseprop
@pytest.mark.parametrize("over_on", [False, True])
def test_a_sum_s_gradient_which_is_not_a_dense_array_gives_the_dense_gradients(over_on):
    """out.sum().backward() hands the kernel a broadcast gradient (stride 0), which it must not read as dense."""
    g = torch.Generator().manual_seed(1)
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    live = torch.rand(conv.weight.shape, generator=g) < 0.3
    x = torch.randn(8, 4, 10, 10, generator=g)
    grads = []
    for sparse in (False, True):
        w = (conv.weight.detach() * live).requires_grad_()
        out = sparse_kernels.sparse_conv2d(x, w, sparse_kernels.plan(conv, live, over_on)) if sparse \
            else F.conv2d(x, w, None, 1, 1)
        out.sum().backward()
        grads.append(w.grad * live)
    assert torch.isfinite(grads[1]).all() and torch.allclose(grads[0], grads[1], atol=1e-3, rtol=1e-4)


@needs_sparseprop
def test_the_learner_on_sparse_kernels_trains_what_it_trains_on_dense_kernels(monkeypatch):
    """Every layer forced onto the sparse kernels (not only where faster): the same weights after an epoch."""
    from clients.data import load_stream
    from clients.sparcl.config import LearnerConfig, SparCLConfig, TrainConfig
    from clients.sparcl.learner import Learner

    monkeypatch.setattr(sparse_kernels, "fastest", lambda conv, live, shape: True)
    stream = load_stream("digits", seed=0, max_per_class=20)
    task = stream.tasks[0]
    learners = []
    for on in (False, True):
        config = LearnerConfig(sparcl=SparCLConfig(tdm=TDMConfig(sparsity=0.9, sparse_kernels=on)),
                               width=8, train=TrainConfig(epochs_per_task=2, lr=0.05, seed=0))
        learner = Learner(config, stream.input_shape, stream.num_classes)
        learner.begin_task(0, task.classes, task.x_train, task.y_train)
        learner.train_epoch()
        learners.append(learner)
    dense, sparse = learners
    assert len(sparse.model.sparse_plans) == len(sparse.masked_names) > 0
    for (name, a), b in zip(dense.model.state_dict().items(), sparse.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-4, rtol=1e-3), name
    assert all(torch.equal(dense.masks.masks[n], sparse.masks.masks[n]) for n in dense.masked_names)


def test_sparse_kernels_say_what_they_need():
    with pytest.raises(InputError, match="channel masks already run compacted"):
        TDMConfig(granularity="channel", sparse_kernels=True)


def test_without_sparseprop_the_learner_runs_dense_kernels_and_says_so(monkeypatch):
    """A Pi (aarch64) or the server has no SparseProp: the same function on dense kernels, with a warning."""
    import clients.sparcl.learner as learner_module
    from clients.sparcl.config import LearnerConfig, SparCLConfig
    from clients.sparcl.learner import Learner

    monkeypatch.setattr(learner_module, "sparse_kernels_available", lambda: False)
    config = LearnerConfig(sparcl=SparCLConfig(tdm=TDMConfig(sparse_kernels=True)), width=8)
    with pytest.warns(UserWarning, match="SparseProp is not installed here"):
        learner = Learner(config, (1, 8, 8), 10)
    assert learner.sparse_kernels is None and learner.model.sparse_plans == {}


def test_the_bench_needs_sparseprop_for_its_side_by_side_run(monkeypatch, capsys):
    from fleet.cli import main

    monkeypatch.setattr(sparse_kernels, "available", lambda: False)
    assert main(["bench", "sparcl", "--sparse-kernels", "--seeds", "0", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sparse kernels need SparseProp" in err[0]


def test_sparse_kernels_run_the_small_cnn_only():
    from clients.sparcl.config import LearnerConfig, SparCLConfig
    from clients.sparcl.learner import Learner

    config = LearnerConfig(sparcl=SparCLConfig(tdm=TDMConfig(sparse_kernels=True)), width=8,
                           backbone="resnet18-reduced")
    with pytest.raises(InputError, match="small-cnn backbone"):
        Learner(config, (3, 32, 32), 10)


@needs_sparseprop
def test_the_bench_runs_the_learner_on_both_kernels_and_pairs_their_cpu_time():
    from clients.data import load_stream
    from fleet.bench.sparcl import SPARSE_KERNELS, BenchConfig, run_bench

    stream = load_stream("digits", seed=0, max_per_class=10)
    report = run_bench(BenchConfig(seeds=(0,), epochs=1, width=8, sparse_kernels=True, equal_flops=False,
                                   controls=False), stream=stream)  # the kernels alone (no standing controls)
    assert set(report["variants"]) == {"dense", "full", SPARSE_KERNELS}
    k = report["sparse_kernels_speedup"]
    assert k["min"] == k["median"] == k["max"] > 0
    full, sparse = report["variants"]["full"], report["variants"][SPARSE_KERNELS]
    assert sparse["train_flops"] == pytest.approx(full["train_flops"])  # the same work, other kernels


@pytest.mark.parametrize("changes", [{"train.backbone": "resnet18-reduced"},
                                     {"dataset.name": "cifar10"},  # auto: ResNet-18 for 3-channel input
                                     {"sparcl.granularity": "channel"}])
def test_a_scenario_asking_sparse_kernels_of_a_model_they_cannot_run_fails_in_one_line(changes):
    from fleet.config import load_scenario

    with pytest.raises(InputError, match="sparcl.sparse_kernels") as err:
        load_scenario("scenarios/quickstart.yaml").with_overrides({"sparcl.sparse_kernels": True, **changes})
    assert "\n" not in str(err.value)
