"""A fleet answer that can be trusted: a global model whose norm statistics match its weights, Task-IL and
GroupNorm, one-line errors for the new settings, and reruns that are bit-identical on real-format data."""

from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from clients.cl.methods import MethodConfig
from clients.data import load_stream
from clients.metrics import task_accuracy
from clients.sparcl.config import LearnerConfig, SparCLConfig, TrainConfig
from clients.sparcl.learner import Learner
from fleet.cli import main
from server.aggregate import pool_statistics

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stream():
    return load_stream("synthetic", max_per_class=24)


def learner(stream, norm: str = "batch", epochs: int = 2) -> Learner:
    cfg = LearnerConfig(method=MethodConfig(name="derpp", buffer_size=10, minibatch=6),
                        sparcl=SparCLConfig.dense(), train=TrainConfig(epochs_per_task=epochs, batch_size=8, lr=0.1),
                        backbone="small-cnn", width=4, norm=norm)
    return Learner(cfg, stream.input_shape, stream.num_classes)


def statistics(model: nn.Module) -> dict[str, np.ndarray]:
    return {n: b.detach().numpy().copy() for n, b in model.named_buffers() if b.is_floating_point()}


def test_pooled_recalibrated_statistics_predict_as_one_pass_over_every_devices_batches(stream):
    """Two devices with the same weights and different data recalibrate; the server pools their statistics
    per batch. The assembled global model is the model recalibrated over every device's batches at once."""
    task = stream.tasks[0]
    devices = [learner(stream), learner(stream)]
    shares = [slice(0, 40), slice(40, 48)]  # 5 batches against 1: pooling per batch is not per device
    for device, share in zip(devices, shares):
        device.begin_task(0, task.classes, task.x_train[share], task.y_train[share])
        device.train_epoch()  # each trains, so its buffer and statistics differ from the other's
    weights = devices[0].weights_numpy()
    devices[1].load_weights(weights, None)
    batches = [d.recalibrate_norms() for d in devices]
    assert batches == [15, 3]  # each data batch and DER++'s two buffer draws: 5 x 3 and 1 x 3
    names = tuple(statistics(devices[0].model))
    sent = [d.weights_numpy() for d in devices]
    assert not np.allclose(sent[0][names[0]], sent[1][names[0]])  # the devices' statistics differ
    pooled = pool_statistics(list(zip(sent, batches)), names, weights)

    reference = copy.deepcopy(devices[0].model)  # one pass over both devices' batches, in turn
    norms = [m for m in reference.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    reference.train()
    with torch.no_grad():
        for device in devices:
            for x in device._recalibration_batches():
                reference(x)
    expected = statistics(reference)
    for name in names:
        if name.endswith("num_batches_tracked"):
            continue
        np.testing.assert_allclose(pooled[name], expected[name], rtol=1e-5, atol=1e-6)

    assembled = learner(stream)
    assembled.load_weights(pooled, None)
    reference.eval()
    assembled.model.eval()
    with torch.no_grad():
        got, want = assembled.model(stream.tasks[1].x_test), reference(stream.tasks[1].x_test)
    assert torch.equal(got.argmax(1), want.argmax(1))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_a_device_that_did_not_recalibrate_counts_for_nothing_and_none_leaves_the_average():
    a = {"bn.running_mean": np.array([1.0], np.float32), "w": np.array([5.0], np.float32)}
    b = {"bn.running_mean": np.array([4.0], np.float32), "w": np.array([7.0], np.float32)}
    averaged = {"bn.running_mean": np.array([2.5], np.float32), "w": np.array([6.0], np.float32)}
    pooled = pool_statistics([(a, 3), (b, 1)], ("bn.running_mean",), averaged)
    assert pooled["bn.running_mean"][0] == pytest.approx((3 * 1 + 4) / 4) and pooled["w"][0] == 6.0
    assert pool_statistics([(a, 0), (b, 2)], ("bn.running_mean",), averaged)["bn.running_mean"][0] == 4.0
    assert pool_statistics([(a, 0), (b, 0)], ("bn.running_mean",), averaged)["bn.running_mean"][0] == 2.5


def test_group_norm_backbone_has_no_statistics_and_learns(stream):
    device = learner(stream, norm="group", epochs=8)
    assert not statistics(device.model)
    assert any(isinstance(m, nn.GroupNorm) for m in device.model.modules())
    task = stream.tasks[0]
    device.begin_task(0, task.classes, task.x_train, task.y_train)
    while not device.task_done:
        device.train_epoch()
    assert device.recalibrate_norms() == 0  # nothing to recalibrate
    # two classes of separable synthetic data (chance among all ten: 10%); it learns them
    assert task_accuracy(device.model, task.x_test, task.y_test, task.classes)[0] >= 90.0


@pytest.mark.parametrize("line, culprit", [
    ("stream: {task_every_s: 0}", "stream.task_every_s"),
    ("stream: {task_every_s: -3}", "stream.task_every_s"),
    ("train: {norm: layer}", "train.norm"),
    ("report: {last_k: 99}", "report.last_k 99 is larger than the run's 15 rounds"),
    ("report: {last_k: 0}", "report.last_k"),
    ("federation: {norm_statistics: median}", "federation.norm_statistics"),
])
def test_bad_values_name_the_field_in_one_line_and_exit_2(tmp_path, capsys, line, culprit):
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\n{line}\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and culprit in err


def test_group_norm_refuses_channel_masks(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ntrain: {norm: group}\nsparcl: {granularity: channel}\n")
    assert main(["validate", str(path)]) == 2
    assert "sparcl.granularity channel needs train.norm batch" in capsys.readouterr().err


def write_tiny_fashion_mnist(folder, per_class: int = 12) -> None:
    """Real IDX files (the layout Debian's package ships, gzipped) with class-dependent 28x28 images."""
    from test_data import write_idx

    rng = np.random.default_rng(7)

    def images(n):
        labels = np.tile(np.arange(10), n).astype(np.uint8)
        x = rng.integers(0, 96, size=(labels.size, 28, 28))
        for i, y in enumerate(labels):  # a bright bar whose place is the class
            x[i, 2 * y + 4:2 * y + 7, 4:24] = 230
        return x.astype(np.uint8), labels

    for prefix, n in (("train", per_class), ("t10k", 4)):
        x, y = images(n)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", 0x803, x, compress=True)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", 0x801, y, compress=True)


MEASURED = ("wall_s", "measured_compute_s", "measured_peak_rss_bytes", "measured_energy_j")


def comparable(folder) -> dict:
    """A run's outputs without what the clock and the process measure."""
    out = {}
    for name in ("rounds.csv", "device_rounds.csv", "devices.csv"):
        rows = list(csv.DictReader((folder / name).open()))
        out[name] = [{k: v for k, v in r.items() if k not in MEASURED and not k.startswith("measured")} for r in rows]
    summary = json.loads((folder / "summary.json").read_text())
    out["summary"] = {k: v for k, v in summary.items() if k not in ("wall_s", "wall_breakdown_s")}
    with np.load(folder / "model.npz") as model:  # the final global model, to the bit
        out["model"] = {name: model[name].tobytes() for name in model.files}
    return out


@pytest.mark.e2e
def test_a_fashion_mnist_fleet_reruns_bit_identically_whatever_threads_ray_gives_its_workers(tmp_path, monkeypatch):
    """Two Ray workers train the devices. Ray sets each worker's OMP_NUM_THREADS from the driver's
    environment or the CPUs it reserves; before devices trained on a fixed thread count, a different
    count changed an update's bits (31 of 58 tensors at 1 against 2 threads) and the run's accuracy.
    On these files the same run at train.threads 1 and 2 ends with different model bits, so this
    comparison sees a thread count that leaks through."""
    from fleet.run import run_scenario
    from fleet.config import parse_scenario

    data = tmp_path / "fmnist"
    data.mkdir()
    write_tiny_fashion_mnist(data, per_class=32)
    scenario = parse_scenario({
        "name": "repro", "dataset": {"name": "fashion-mnist", "data_dir": str(data), "n_tasks": 5},
        "fleet": {"devices": 2, "profiles": {"rpi4": 2}}, "stream": {"rounds_per_task": 1},
        "method": {"name": "derpp", "buffer_size": 10}, "train": {"local_epochs": 2, "width": 16, "lr": 0.1},
        "federation": {"rounds": 2, "norm_statistics": "recalibrated"}}, source="repro")
    run_scenario(scenario, tmp_path / "a")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # what the workers of the second run start with
    run_scenario(scenario, tmp_path / "b")
    first, second = comparable(tmp_path / "a"), comparable(tmp_path / "b")
    assert first["summary"]["status"] == "complete" and len(first["rounds.csv"]) == 2
    assert first == second
    # what every device did is in device_rounds.csv; executed FLOPs (dense kernels) beside counted ones
    rows = first["device_rounds.csv"]
    # 32 examples a device and task: one batch of 32 an epoch, two epochs a round, a task a round
    assert [(r["round"], r["device"], r["task"], r["epoch"], r["steps"], r["batch"]) for r in rows] == [
        ("1", "0", "0", "2", "2", "32"), ("1", "1", "0", "2", "2", "32"),
        ("2", "0", "1", "2", "2", "32"), ("2", "1", "1", "2", "2", "32")]
    assert all(float(r["executed_flops"]) > 2 * float(r["train_flops"]) > 0 for r in rows)
    summary = first["summary"]
    assert summary["executed_flops"] == pytest.approx(sum(float(r["executed_flops"]) for r in rows))
    assert summary["notes_left_out"] == 0


def test_tasks_arrive_on_the_simulated_clock():
    from clients.device import DeviceSpec, spec_task

    spec = DeviceSpec(n_tasks=5, devices=2, rounds_per_task=3, task_every_s=100.0)
    assert [spec_task(spec, 1, 7, t) for t in (0.0, 99.9, 100.0, 250.0, 499.0, 1e6)] == [0, 0, 1, 2, 4, 4]
    by_round = DeviceSpec(n_tasks=5, devices=2, rounds_per_task=3)
    assert [spec_task(by_round, 0, r, 1e6) for r in (1, 3, 4, 7)] == [0, 0, 1, 2]  # the clock plays no part


def test_a_dry_run_moves_through_the_tasks_with_the_clock(tmp_path):
    """Each round's tasks_reached follows the simulated time at which it starts, not its number."""
    from fleet.run import dry_run
    from fleet.config import load_scenario

    scenario = load_scenario("scenarios/quickstart.yaml").with_overrides(
        {"stream.task_every_s": 20.0, "federation.rounds": 12, "timing.budget": "generous"})
    dry_run(scenario, tmp_path / "dry")
    rows = list(csv.DictReader((tmp_path / "dry" / "rounds.csv").open()))
    expected = [min(5, 1 + int(float(r["sim_start_s"]) // 20.0)) for r in rows]
    assert [int(r["tasks_reached"]) for r in rows] == expected
    assert expected[0] == 1 and expected[-1] > 1  # it does move on


def test_task_every_s_with_staggered_devices_is_refused(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nstream: {task_every_s: 60, stagger_rounds: 2}\n")
    assert main(["validate", str(path)]) == 2
    assert "stream.task_every_s" in capsys.readouterr().err


def test_under_dense_kernels_sparcl_executes_what_dense_derpp_does_for_equal_steps(stream):
    """Dense kernels multiply a masked layer's zeros: equal steps cost the same executed FLOPs (what the
    device's time is made of), though SparCL's counted FLOPs are a fraction of them."""
    from clients.sparcl.dgm import DGMConfig
    from clients.sparcl.tdm import TDMConfig

    task = stream.tasks[0]
    works = {}
    for name, sparcl in (("dense", SparCLConfig.dense()),
                         ("sparcl", SparCLConfig(tdm=TDMConfig(sparsity=0.9), ddr=None, dgm=DGMConfig()))):
        cfg = LearnerConfig(method=MethodConfig(name="derpp", buffer_size=10, minibatch=6), sparcl=sparcl,
                            train=TrainConfig(epochs_per_task=2, batch_size=8), backbone="small-cnn", width=8)
        device = Learner(cfg, stream.input_shape, stream.num_classes)
        device.begin_task(0, task.classes, task.x_train, task.y_train)
        works[name] = device.train_round(2)
    dense, sparse = works["dense"], works["sparcl"]
    assert dense.steps == sparse.steps == 12 and dense.examples == sparse.examples
    assert sparse.kernel_flops == pytest.approx(dense.kernel_flops, rel=1e-12)
    assert sparse.train_flops < 0.5 * dense.train_flops  # counted the RigL way: masked layers at 10%


@pytest.mark.parametrize("norm, batches", [("batch", 3), ("group", 0)])
def test_devices_recalibrate_by_default_and_pay_for_it_where_there_are_statistics(norm, batches):
    """The default: each device recomputes BatchNorm's statistics on what it sends, one counted forward
    pass more than the averaged policy's round; GroupNorm has nothing to recompute and pays nothing."""
    from dataclasses import replace

    from clients import wire
    from clients.device import build_learner, run_round
    from fleet.run import device_spec
    from fleet.config import parse_scenario

    scenario = parse_scenario({"name": "n", "dataset": {"name": "synthetic", "max_per_class": 24},
                               "fleet": {"devices": 2}, "method": {"buffer_size": 10},
                               "train": {"norm": norm, "width": 4, "local_epochs": 1}}, source="n")
    spec = device_spec(scenario)
    assert spec.norm_statistics == "recalibrated"
    learner = build_learner(spec, 0)
    model = wire.encode_model(learner.weights_numpy(), learner.masks_numpy())
    recalibrated = run_round(spec, 0, 1, model, None)
    averaged = run_round(replace(spec, norm_statistics="averaged"), 0, 1, model, None)
    # its 24 examples of the task: one batch of them and DER++'s two buffer draws
    assert recalibrated.metrics["norm-batches"] == batches and averaged.metrics["norm-batches"] == 0
    assert recalibrated.metrics["steps"] == averaged.metrics["steps"]
    extra = recalibrated.metrics["train-flops"] - averaged.metrics["train-flops"]
    assert (extra > 0) == (norm == "batch")


def test_a_budget_too_tight_for_the_recalibration_pass_trains_instead():
    """The pass may take at most half of a round's planned compute: under a tighter budget the device
    trains with all of it and sends the statistics its training left (norm-batches 0, so they count for
    nothing in the pooling); under a roomier one it reserves the pass and recalibrates."""
    from clients import wire
    from clients.budget import RoundBudget
    from clients.device import RECALIBRATION_SHARE, build_learner, device_data, run_round
    from fleet.run import device_spec
    from fleet.config import parse_scenario

    scenario = parse_scenario({"name": "n", "dataset": {"name": "synthetic", "max_per_class": 24},
                               "fleet": {"devices": 2}, "method": {"buffer_size": 10},
                               "train": {"width": 4, "local_epochs": 4}}, source="n")
    spec = device_spec(scenario)
    learner = build_learner(spec, 0)
    x, y = device_data(spec, 0, 0)
    learner.begin_task(0, (0, 1), x, y)
    reserve = learner.recalibration_kernel_flops(stored=learner.method.buffer.capacity)
    model = wire.encode_model(learner.weights_numpy(), learner.masks_numpy())
    # the pass would take 53% of the first budget, 33% of the second (one step fits beside it)
    tight = run_round(spec, 0, 1, model, None, RoundBudget(compute_flops=1.9 * reserve))
    roomy = run_round(spec, 0, 1, model, None, RoundBudget(compute_flops=3.0 * reserve))
    assert tight.status == roomy.status == "ok"
    assert tight.metrics["norm-batches"] == 0 and roomy.metrics["norm-batches"] > 0
    assert tight.metrics["kernel-flops"] <= 1.9 * reserve
    assert roomy.metrics["kernel-flops"] <= 3.0 * reserve  # the pass fits in the budget
    assert RECALIBRATION_SHARE == 0.5


@pytest.mark.e2e
def test_a_run_whose_every_reply_failed_is_failed_in_summary_json(tmp_path):
    """Every device's app crashed in every round: not a result, whatever the untrained model scores."""
    from flwr.app import Context, Message
    from flwr.clientapp import ClientApp

    from fleet.run import run_scenario
    from fleet.config import parse_scenario

    broken = ClientApp()

    @broken.train()
    def train(msg: Message, context: Context) -> Message:
        raise RuntimeError("this device's app is broken")

    scenario = parse_scenario({"name": "broken", "dataset": {"name": "synthetic"}, "fleet": {"devices": 2},
                               "train": {"width": 4}, "federation": {"rounds": 2}}, source="broken")
    summary = run_scenario(scenario, tmp_path / "out", client_app=broken)
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == saved["status"] == "failed"
    assert saved["failed_replies"] == 4 and saved["rounds_without_update"] == 2
