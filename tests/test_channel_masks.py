"""Channel-granular TDM: whole-channel masks, exact zeros through the norms, the compacted SmallCNN step,
its FLOPs, the server's channel re-sparsify, and the weight path left bit for bit as it was."""

from __future__ import annotations

import copy
import hashlib
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from clients.accounting import compacted_densities, training_flops_per_example
from clients.backbones import (
    ResNet18, SmallCNN, compacted_inputs, masked_parameter_names, norm_after,
)
from clients.budget import KernelModel, kernel_flops_per_example
from clients.cl.methods import MethodConfig
from clients.data import load_stream
from clients.errors import InputError
from clients.sparcl.dgm import DGMConfig
from clients.sparcl.config import LearnerConfig, SparCLConfig, TrainConfig
from clients.sparcl.learner import Learner
from clients.sparcl.tdm import TDMConfig, WeightMasks, channel_scores, channels_of, expand_channels, keep_count
from fleet.config import parse_scenario
from server.aggregate import mask_aware_average, resparsify

pytestmark = pytest.mark.usefixtures("one_thread")

# sparsity 0.5; an update drops 2 of 8 / 4 of 16 channels and regrows them; a task start opens 2 / 4 more
STEP_CFG = TDMConfig(sparsity=0.5, drop_extra=0.25, task_extra=0.25, granularity="channel")


def small_cnn(seed: int = 0, width: int = 8) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(1, 10, width=width)


def channel_masks(model: nn.Module, cfg: TDMConfig = STEP_CFG, seed: int = 0) -> WeightMasks:
    return WeightMasks(model, masked_parameter_names(model), cfg, torch.Generator().manual_seed(seed))


def live_count(mask: torch.Tensor) -> int:
    return int(channels_of(mask).sum())


def assert_channel_structured(mask: torch.Tensor) -> None:
    assert torch.equal(mask, expand_channels(channels_of(mask), mask.shape))


def random_grads(masks: WeightMasks, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(p.shape, generator=g) for n, p in masks.params.items()}


def dead_norm_params(masks: WeightMasks):
    for name, norm in masks.norms.items():
        dead = ~channels_of(masks.masks[name])
        yield norm.weight[dead], norm.bias[dead]


# --------------------------------------------------------------------------- structure


def test_norm_after_pairs_every_masked_conv_with_its_batchnorm():
    cnn = small_cnn()
    assert norm_after(cnn) == {f"features.{i}.0.weight": f"features.{i}.1" for i in (0, 1, 3, 4)}
    resnet = ResNet18(3, 10, nf=4)
    pairs = norm_after(resnet)
    assert set(pairs) == set(masked_parameter_names(resnet))
    assert pairs["features.0.conv1.weight"] == "features.0.bn1"
    assert pairs["features.7.conv2.weight"] == "features.7.bn2"


def test_only_the_small_cnn_compacts():
    assert compacted_inputs(small_cnn()) == {
        "features.0.0.weight": None, "features.1.0.weight": "features.0.0.weight",
        "features.3.0.weight": "features.1.0.weight", "features.4.0.weight": "features.3.0.weight",
        "head.weight": "features.4.0.weight"}
    assert compacted_inputs(ResNet18(3, 10, nf=4)) == {}


def test_granularity_is_checked_and_defaults_to_weight():
    assert TDMConfig().granularity == "weight"
    with pytest.raises(InputError, match="granularity"):
        TDMConfig(granularity="filter")
    assert parse_scenario({"name": "x"}).learner_config(0).sparcl.tdm.granularity == "weight"
    tdm = parse_scenario({"name": "x", "sparcl": {"granularity": "channel"}}).learner_config(0).sparcl.tdm
    assert tdm.granularity == "channel"
    with pytest.raises(InputError, match="sparcl.granularity"):
        parse_scenario({"name": "x", "sparcl": {"granularity": "filter"}})


# --------------------------------------------------------------------------- counts


@pytest.mark.parametrize("width", [8, 16])
def test_channel_counts_after_init_update_and_task_start(width):
    model = small_cnn(width=width)
    masks = channel_masks(model)
    grads = random_grads(masks)
    for name, p in masks.params.items():
        c = p.shape[0]
        assert live_count(masks.masks[name]) == keep_count(c, 0.5)
        assert_channel_structured(masks.masks[name])
    before = {n: channels_of(m) for n, m in masks.masks.items()}
    scores = {n: channel_scores(p.detach(), grads[n], 0.5) for n, p in masks.params.items()}
    masks.update(grads, (0, 1))
    for name, p in masks.params.items():
        c = p.shape[0]
        now = channels_of(masks.masks[name])
        assert int(now.sum()) == keep_count(c, 0.5)
        assert_channel_structured(masks.masks[name])
        assert torch.all(p[~masks.masks[name]] == 0)
        # the drop kept the keep_count(c, 0.25) live channels of highest summed score, weights untouched;
        # the regrown ones (dead or just dropped) start at 0
        ranked = sorted(before[name].nonzero().flatten().tolist(), key=lambda ch: -float(scores[name][ch]))
        kept = set(ranked[:keep_count(c, 0.25)])
        assert {ch for ch in range(c) if p[ch].abs().sum() > 0} == kept
        assert kept <= set(now.nonzero().flatten().tolist())
    masks.begin_task(grads, (1, 0))
    for name, p in masks.params.items():
        assert live_count(masks.masks[name]) == keep_count(p.shape[0], 0.75)
        assert_channel_structured(masks.masks[name])


def test_narrow_layers_round_steps_to_whole_channels():
    """8 channels at density 0.1: keep round(0.8) = 1; the 1% steps round to 0 channels."""
    model = small_cnn(width=8)
    masks = channel_masks(model, TDMConfig(sparsity=0.9, granularity="channel"))
    grads = random_grads(masks)
    for step in (lambda: None, lambda: masks.update(grads, (0, 1)), lambda: masks.begin_task(grads, (1, 0))):
        step()
        assert [live_count(masks.masks[n]) for n in masks.masks] == [1, 1, 2, 2]


def test_shared_regrow_seed_regrows_the_same_channels():
    a, b = small_cnn(seed=0), small_cnn(seed=0)
    cfg = TDMConfig(sparsity=0.5, drop_extra=0.25, granularity="channel", regrow_seed=7)
    ma, mb = channel_masks(a, cfg, seed=1), channel_masks(b, cfg, seed=2)  # different own generators
    grads = random_grads(ma)
    ma.update(grads, (0, 1))
    mb.update(grads, (0, 1))
    for name in ma.masks:
        assert torch.equal(ma.masks[name], mb.masks[name])


# --------------------------------------------------------------------------- exact zeros


def test_dead_channels_norms_are_zero_and_stay_zero_after_a_step():
    model = small_cnn(width=8)
    masks = channel_masks(model)
    for weight, bias in dead_norm_params(masks):
        assert torch.all(weight == 0) and torch.all(bias == 0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        masks.mask_grads()
        for name, norm in masks.norms.items():
            dead = ~channels_of(masks.masks[name])
            assert torch.all(norm.weight.grad[dead] == 0) and torch.all(norm.bias.grad[dead] == 0)
        optimizer.step()  # no apply(): the masked gradients alone keep them at 0
        for weight, bias in dead_norm_params(masks):
            assert torch.all(weight == 0) and torch.all(bias == 0)
        masks.apply()


def test_a_dead_channel_outputs_exactly_zero():
    model = small_cnn(width=8)
    masks = channel_masks(model)
    outputs = {}
    hooks = [model.features[i][2].register_forward_hook(lambda m, i, o, k=i: outputs.__setitem__(k, o))
             for i in (0, 1, 3, 4)]
    for train in (True, False):
        model.train(train)
        model(torch.randn(8, 1, 8, 8))
        for i in (0, 1, 3, 4):
            dead = ~channels_of(masks.masks[f"features.{i}.0.weight"])
            assert torch.all(outputs[i][:, dead] == 0)
    for h in hooks:
        h.remove()


def test_regrown_channels_start_at_zero_output_with_fresh_norms():
    model = small_cnn(width=8)
    masks = channel_masks(model)
    x = torch.randn(8, 1, 8, 8)
    model.eval()
    before_out = model(x)
    before = {n: channels_of(m) for n, m in masks.masks.items()}
    masks.begin_task(None, (1, 0))  # prune to the target (nothing), then open a quarter of the channels more
    after_out = model(x)
    torch.testing.assert_close(after_out, before_out, atol=1e-6, rtol=0)  # the function is unchanged
    for name, norm in masks.norms.items():
        new = channels_of(masks.masks[name]) & ~before[name]
        assert int(new.sum()) == masks.params[name].shape[0] // 4
        assert torch.all(norm.weight[new] == 1) and torch.all(norm.bias[new] == 0)
        assert torch.all(norm.running_mean[new] == 0) and torch.all(norm.running_var[new] == 1)


# --------------------------------------------------------------------------- the compacted step


def trained_channel_model(width: int = 8) -> tuple[SmallCNN, WeightMasks]:
    """A channel-masked SmallCNN with non-trivial weights and norm statistics."""
    model = small_cnn(width=width)
    masks = channel_masks(model, TDMConfig(sparsity=0.6, granularity="channel"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(torch.randn(16, 1, 8, 8, generator=g)), torch.randint(0, 10, (16,), generator=g)
                        ).backward()
        masks.mask_grads()
        optimizer.step()
        masks.apply()
    return model, masks


def test_compacted_step_equals_the_masked_dense_step():
    model, masks = trained_channel_model()
    dense, compact = copy.deepcopy(model), copy.deepcopy(model)
    compact.set_live_channels(masks.live_channels())
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    losses = []
    for net in (dense, compact):
        net.train()
        net.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], atol=1e-6, rtol=0)
    dense_params, compact_params = dict(dense.named_parameters()), dict(compact.named_parameters())
    for name, p in dense_params.items():
        torch.testing.assert_close(compact_params[name].grad, p.grad, atol=1e-5, rtol=0, msg=name)
    compact_buffers = dict(compact.named_buffers())
    for name, b in dense.named_buffers():
        torch.testing.assert_close(compact_buffers[name], b, atol=1e-6, rtol=0, msg=name)
    dense.eval()
    compact.eval()
    torch.testing.assert_close(compact(x), dense(x), atol=1e-5, rtol=0)


def test_compacted_forward_skips_dead_channels():
    model, masks = trained_channel_model()
    model.set_live_channels(masks.live_channels())
    shapes = []
    original = F.conv2d

    def spy(x, w, *args, **kwargs):
        shapes.append(tuple(w.shape[:2]))
        return original(x, w, *args, **kwargs)

    F.conv2d, conv2d = spy, F.conv2d
    try:
        model(torch.randn(2, 1, 8, 8))
    finally:
        F.conv2d = conv2d
    live = [live_count(m) for m in masks.masks.values()]  # 3 of 8, 3 of 8, 6 of 16, 6 of 16
    assert shapes == [(16, 1),  # the stem, dense
                      (live[0], 16), (live[1], live[0]), (live[2], live[1]), (live[3], live[2])]


# --------------------------------------------------------------------------- accounting


def channel_learner(stream, sparsity: float = 0.5, width: int = 8, dgm: DGMConfig | None = None,
                    seed: int = 0, ddr: bool = False) -> Learner:
    cfg = LearnerConfig(
        method=MethodConfig(name="derpp", buffer_size=20, minibatch=8),
        sparcl=SparCLConfig(tdm=TDMConfig(sparsity=sparsity, granularity="channel"), ddr=None, dgm=dgm)
        if not ddr else SparCLConfig(tdm=TDMConfig(sparsity=sparsity, granularity="channel"), dgm=dgm),
        train=TrainConfig(epochs_per_task=5, batch_size=8, lr=0.05, seed=seed),
        backbone="small-cnn", width=width,
    )
    return Learner(cfg, stream.input_shape, stream.num_classes)


def test_flops_of_a_compacted_small_cnn_are_the_analytic_sum(stream):
    learner = channel_learner(stream, sparsity=0.5, width=8)
    # SmallCNN(1, 10, width=8) on 1x8x8; 2 x MACs per example; live channels 4/8, 4/8, 8/16, 8/16
    stem = 2 * 1 * 9 * 16 * 64
    convs = {
        "features.0.0.weight": (2 * 16 * 9 * 8 * 64, 4 / 8 * 1.0),
        "features.1.0.weight": (2 * 8 * 9 * 8 * 64, 4 / 8 * 4 / 8),
        "features.3.0.weight": (2 * 8 * 9 * 16 * 16, 8 / 16 * 4 / 8),
        "features.4.0.weight": (2 * 16 * 9 * 16 * 16, 8 / 16 * 8 / 16),
        "head.weight": (2 * 16 * 10, 1.0 * 8 / 16),
    }
    elementwise = learner.cost.elementwise_flops
    expected = 3 * elementwise + 3 * stem + sum(3 * f * share for f, share in convs.values())
    per_example, kernel_per_example, _ = learner.step_costs()
    assert per_example == pytest.approx(expected, rel=1e-12)
    assert kernel_per_example == pytest.approx(expected, rel=1e-12)  # dense kernels, compact tensors
    assert {layer.name: layer.forward_flops for layer in learner.cost.layers} == {
        "stem.0.weight": stem, **{n: f for n, (f, _) in convs.items()}}


def test_compacted_flops_take_the_gradient_mask_only_below_the_compacted_share():
    cost = channel_learner(load_stream("synthetic", max_per_class=2), width=8).cost
    weight = {"features.1.0.weight": 0.5}
    compacted = compacted_densities({"features.0.0.weight": 0.5, "features.1.0.weight": 0.5},
                                    {"features.1.0.weight": "features.0.0.weight"})
    assert compacted == {"features.1.0.weight": 0.25}
    f = {layer.name: layer.forward_flops for layer in cost.layers}["features.1.0.weight"]
    base = training_flops_per_example(cost, {}, {})
    with_g = training_flops_per_example(cost, weight, {"features.1.0.weight": 0.1}, compacted)
    assert with_g == pytest.approx(base - 3 * f + (0.5 + 0.1) * f)
    capped = training_flops_per_example(cost, weight, {"features.1.0.weight": 0.5}, compacted)
    assert capped == pytest.approx(base - 3 * f + 0.75 * f)
    sparse = KernelModel("sparse", ((0.9, 2.3),))
    assert kernel_flops_per_example(cost, weight, sparse, compacted) == pytest.approx(
        kernel_flops_per_example(cost, {}, sparse) - 3 * f + 0.75 * f)


def test_weight_path_accounting_is_unchanged_by_an_empty_compaction(stream):
    cost = channel_learner(stream).cost
    d = {"features.1.0.weight": 0.1, "features.3.0.weight": 0.2}
    g = {"features.1.0.weight": 0.05}
    assert training_flops_per_example(cost, d, g, {}) == training_flops_per_example(cost, d, g)
    k = KernelModel("sparse", ((0.9, 2.3),))
    assert kernel_flops_per_example(cost, d, k, None) == kernel_flops_per_example(cost, d, k)


def test_resnet_under_channel_masks_runs_the_masked_dense_step():
    cfg = LearnerConfig(sparcl=SparCLConfig(tdm=TDMConfig(sparsity=0.5, granularity="channel"), ddr=None, dgm=None),
                        backbone="resnet18", width=4)
    learner = Learner(cfg, (3, 8, 8), 10)
    assert learner.compacted_inputs == {}
    assert getattr(learner.model, "live_channels", None) is None
    assert set(learner.masks.norms) == set(learner.masked_names)
    for mask in learner.masks.masks.values():
        assert_channel_structured(mask)


# --------------------------------------------------------------------------- the server


def test_channel_resparsify_keeps_exactly_k_whole_channels():
    rng = np.random.default_rng(0)
    weights = {"a": rng.normal(size=(10, 3, 3, 3)).astype(np.float32),
               "b": rng.normal(size=(7, 2, 3, 3)).astype(np.float32),
               "bn": rng.normal(size=(10,)).astype(np.float32)}
    out, masks = resparsify(weights, ["a", "b"], 0.75, granularity="channel")
    for name, c in (("a", 10), ("b", 7)):
        k = max(1, round(c * 0.25))
        kept = masks[name].reshape(c, -1).any(1)
        assert int(kept.sum()) == k
        assert np.array_equal(masks[name], np.broadcast_to(kept[:, None, None, None], masks[name].shape))
        l1 = np.abs(weights[name]).reshape(c, -1).sum(1)
        assert set(np.flatnonzero(kept)) == set(np.argsort(-l1)[:k])
        assert np.array_equal(out[name][masks[name]], weights[name][masks[name]])
        assert np.all(out[name][~masks[name]] == 0)
    assert np.array_equal(out["bn"], weights["bn"])
    weight_out, weight_masks = resparsify(weights, ["a", "b"], 0.75)
    again_out, again_masks = resparsify(weights, ["a", "b"], 0.75, granularity="weight")
    for name in ("a", "b"):
        assert np.array_equal(weight_masks[name], again_masks[name])
        assert np.array_equal(weight_out[name], again_out[name])
    with pytest.raises(InputError, match="granularity"):
        resparsify(weights, ["a"], 0.5, granularity="filter")


def test_a_federated_round_keeps_whole_channels_at_the_target(stream):
    """Two channel learners, mask-aware averaging, channel re-sparsify, the global model back on a device."""
    task = stream.tasks[0]
    learners = [channel_learner(stream, sparsity=0.5, seed=s) for s in (0, 1)]
    for lrn in learners:
        lrn.begin_task(task.task_id, task.classes, task.x_train, task.y_train)
        lrn.train_epoch()
    previous = learners[0].weights_numpy()
    averaged = mask_aware_average([(lrn.weights_numpy(), lrn.masks_numpy(), 40) for lrn in learners], previous)
    weights, masks = resparsify(averaged, learners[0].masked_names, 0.5, granularity="channel")
    device = learners[1]
    device.load_weights(weights, masks)
    for name, mask in device.masks.masks.items():
        assert torch.equal(mask, torch.from_numpy(masks[name]))
        assert live_count(mask) == keep_count(mask.shape[0], 0.5)
    for weight, bias in dead_norm_params(device.masks):
        assert torch.all(weight == 0) and torch.all(bias == 0)
    assert all(torch.equal(device.model.live_channels[n], idx) for n, idx in device.masks.live_channels().items())
    device.train_epoch()


# --------------------------------------------------------------------------- the weight path is as it was


# sha256 of the weight-granular masks of this schedule, recorded with the code before channel masks existed
# (commit 033e90a)
WEIGHT_PATH_DIGESTS = {
    None: "304b189a69f19cfc750c3c5cfc76f112fe1ffde9b756a4b5e1ff42b66267817e",
    11: "ba9ed794064e5f1f83912e27af9bf6910e473295e86fe05887e6b78258c08be4",
}


@pytest.mark.parametrize("regrow_seed", [None, 11])
def test_weight_granularity_masks_are_bit_identical_to_before(regrow_seed):
    torch.manual_seed(3)
    model = SmallCNN(1, 10, width=8)
    names = masked_parameter_names(model)
    cfg = TDMConfig(sparsity=0.8, regrow_seed=regrow_seed, drop_extra=0.05, task_extra=0.03)
    masks = WeightMasks(model, names, cfg, torch.Generator().manual_seed(5))
    assert masks.norms == {}
    digest = hashlib.sha256()
    g = torch.Generator().manual_seed(7)
    grads = {n: torch.randn(p.shape, generator=g) for n, p in masks.params.items()}
    for step in range(3):
        for n in names:
            digest.update(masks.masks[n].numpy().tobytes())
        masks.update(grads, (0, step + 1))
        for n in names:
            digest.update(masks.masks[n].numpy().tobytes())
        masks.begin_task(grads if step else None, (step + 1, 0))
    for n in names:
        digest.update(masks.masks[n].numpy().tobytes())
    assert digest.hexdigest() == WEIGHT_PATH_DIGESTS[regrow_seed]


# --------------------------------------------------------------------------- the learner


def test_a_channel_learner_trains_two_tasks_with_channel_structured_masks(stream):
    learner = channel_learner(stream, sparsity=0.75, width=8, dgm=DGMConfig(), ddr=True)
    dense_cfg = LearnerConfig(method=learner.config.method, sparcl=SparCLConfig.dense(),
                              train=learner.config.train, backbone="small-cnn", width=8)
    dense = Learner(dense_cfg, stream.input_shape, stream.num_classes)
    for task in stream.tasks[:2]:
        for lrn in (learner, dense):
            lrn.begin_task(task.task_id, task.classes, task.x_train, task.y_train)
            while not lrn.task_done:
                lrn.train_epoch()
        for name, mask in learner.masks.masks.items():
            assert_channel_structured(mask)
            assert live_count(mask) == keep_count(mask.shape[0], 0.25)
        for weight, bias in dead_norm_params(learner.masks):
            assert torch.all(weight == 0) and torch.all(bias == 0)
        live = learner.masks.live_channels()
        assert set(learner.model.live_channels) == set(live)
        assert all(torch.equal(learner.model.live_channels[n], live[n]) for n in live)
    assert learner.counters.kernel_flops < 0.25 * dense.counters.kernel_flops
    assert learner.counters.train_flops < 0.25 * dense.counters.train_flops
    learner.model.eval()
    with torch.no_grad():
        assert torch.isfinite(learner.model(stream.tasks[0].x_test)).all()


def test_a_restored_channel_learner_runs_compacted_again(stream):
    learner = channel_learner(stream, sparsity=0.5)
    task = stream.tasks[0]
    learner.begin_task(task.task_id, task.classes, task.x_train, task.y_train)
    learner.train_epoch()
    blob = learner.to_bytes()
    other = channel_learner(stream, sparsity=0.5, seed=1)
    other.load_bytes(blob)
    other.attach(task.x_train, task.y_train)
    for name, idx in learner.model.live_channels.items():
        assert torch.equal(other.model.live_channels[name], idx)


def test_weight_masks_widen_to_whole_channels_on_load():
    model = small_cnn(width=8)
    masks = channel_masks(model)
    name = next(iter(masks.masks))
    partial = torch.zeros_like(masks.masks[name])
    partial[2, 0, 0, 0] = True  # one entry of channel 2
    masks.load_state_dict({**masks.masks, name: partial})
    assert channels_of(masks.masks[name]).nonzero().flatten().tolist() == [2]
    assert_channel_structured(masks.masks[name])


# --------------------------------------------------------------------------- a measurement, not a check


@pytest.mark.slow
def test_print_cpu_time_of_dense_vs_channel_steps():
    """Process CPU time of 20 DER++ steps at width 64, batch 32, 8x8 digits (one thread): printed only."""
    digits = load_stream("digits")
    task = digits.tasks[0]
    arms = {"dense": SparCLConfig.dense(),
            "tdm-weight-0.9": SparCLConfig(tdm=TDMConfig(sparsity=0.9), ddr=None, dgm=None),
            "tdm-channel-0.9": SparCLConfig(tdm=TDMConfig(sparsity=0.9, granularity="channel"), ddr=None, dgm=None)}
    for label, sparcl in arms.items():
        cfg = LearnerConfig(sparcl=sparcl, train=TrainConfig(epochs_per_task=50, batch_size=32, seed=0),
                            backbone="small-cnn", width=64)
        learner = Learner(cfg, digits.input_shape, digits.num_classes)
        learner.begin_task(task.task_id, task.classes, task.x_train, task.y_train)

        def steps(n: int) -> None:
            for _ in range(n):
                if learner.order is None:
                    learner._start_epoch()
                learner._train_batch(32)
                if learner.cursor >= len(learner.order):
                    learner._finish_epoch()

        steps(3)  # warm-up; the buffer fills
        start = time.process_time()
        steps(20)
        cpu = time.process_time() - start
        print(f"\n{label}: {cpu:.3f} s CPU for 20 steps; kernel GFLOPs/example "
              f"{learner.step_costs()[1] / 1e9:.4f}")


def test_a_channel_one_device_left_dead_does_not_pull_the_fleets_norms_to_zero(stream):
    """Updates carry the norms' live channels; the average takes a norm channel only from devices training it."""
    from clients.wire import decode_model, encode_model

    a, b = channel_learner(stream), channel_learner(stream)
    name = a.masked_names[0]
    masks_a = a.masks_numpy()
    norm = next(k for k in masks_a if k.endswith(".weight") and k not in a.masked_names
                and masks_a[k].shape == (a.model.get_parameter(name).shape[0],))
    alive = channels_of(torch.from_numpy(masks_a[name])).numpy()
    np.testing.assert_array_equal(masks_a[norm], alive)
    with torch.no_grad():  # device b trains every channel of that norm, at scale 2
        b.model.get_parameter(norm).fill_(2.0)
    updates = []
    for learner, masks in ((a, masks_a), (b, {**b.masks_numpy(), norm: np.ones_like(masks_a[norm])})):
        weights, decoded = decode_model(encode_model(learner.weights_numpy(), masks))
        updates.append((weights, decoded, 10))
    average = mask_aware_average(updates, a.weights_numpy())
    dead = ~alive
    assert dead.any()
    np.testing.assert_allclose(average[norm][dead], 2.0)  # b's value alone, not (0 + 2) / 2
