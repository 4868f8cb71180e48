"""The learner on a CUDA GPU: where it is asked for, what it refuses, and (where torch sees a GPU)
that it learns what the CPU learns.

The CUDA tests run only where torch sees a GPU and are skipped, with that reason, elsewhere; the
placement rules and the refusals are checked everywhere.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from dataclasses import replace

import numpy as np
import pytest
import torch

from clients.cl.methods import MethodConfig
from clients.errors import InputError
from clients.experiment import run_stream
from clients.sparcl.config import LearnerConfig, SparCLConfig, TrainConfig, torch_device
from clients.sparcl.learner import Learner, _plain_state
from clients.sparcl.tdm import TDMConfig
from fleet.run.runner import backend_config
from fleet.config import parse_scenario

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("one_thread")]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU here")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here")


def config(device: str = "cpu", sparcl: SparCLConfig | None = None, epochs: int = 4) -> LearnerConfig:
    return LearnerConfig(
        method=MethodConfig(name="derpp", buffer_size=20, minibatch=8, augment=True),
        sparcl=SparCLConfig() if sparcl is None else sparcl,
        train=TrainConfig(epochs_per_task=epochs, batch_size=8, lr=0.05, seed=3, device=device),
        backbone="small-cnn", width=4,
    )


# -- everywhere: the names, the refusals, the portable state ------------------

@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "CPU", "", "cuda:0:1"])
def test_an_unknown_device_name_is_refused_in_one_line_naming_it(name):
    with pytest.raises(InputError, match="train device must be cpu, cuda, cuda:N or auto") as err:
        TrainConfig(device=name)
    assert "\n" not in str(err.value)


def test_auto_is_the_gpu_where_there_is_one_and_the_cpu_elsewhere():
    assert torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert torch_device("cpu") == torch.device("cpu")


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_asking_for_a_gpu_where_torch_sees_none_is_an_error_not_a_silent_cpu_run(name, stream):
    with pytest.raises(InputError, match=f"train device '{name}': torch .* sees no CUDA GPU here"):
        Learner(config(name), stream.input_shape, stream.num_classes)


def test_a_server_copy_of_a_gpu_learner_runs_where_it_is_put(stream):
    server = config("cuda").with_device("cpu")
    assert server.train.device == "cpu" and server.train.seed == 3
    assert Learner(server, stream.input_shape, stream.num_classes).device == torch.device("cpu")


def test_a_saved_state_holds_only_cpu_tensors_and_keeps_a_model_state_dicts_metadata():
    """What to_bytes writes must load on a machine without the GPU it was saved on."""
    model_state = OrderedDict(weight=torch.ones(2), counter=np.int64(4))
    model_state._metadata = {"": {"version": 2}}
    plain = _plain_state({"model": model_state, "order": np.arange(3)})
    assert isinstance(plain["model"], OrderedDict) and plain["model"]._metadata == {"": {"version": 2}}
    assert plain["model"]["counter"] == 4 and isinstance(plain["order"], torch.Tensor)
    buf = io.BytesIO()
    torch.save(plain, buf)
    loaded = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    assert loaded["model"]._metadata == {"": {"version": 2}}


def scenario(**train) -> dict:
    return {"name": "gpu", "dataset": {"name": "synthetic", "n_tasks": 2}, "fleet": {"devices": 2},
            "stream": {"rounds_per_task": 1}, "train": {"local_epochs": 1, **train}}


def test_a_scenario_places_its_learners_and_reserves_ray_resources_for_them():
    s = parse_scenario(scenario(device="cuda", gpus_per_device=0.5, cpus_per_device=2))
    assert s.learner_config(0).train.device == "cuda"
    assert backend_config(None, "127.0.0.1:1", s.train.cpus_per_device, s.train.gpus_per_device)[
        "client_resources"] == {"num_cpus": 2.0, "num_gpus": 0.5}
    default = parse_scenario(scenario())
    assert default.learner_config(0).train.device == "cpu"
    assert backend_config(None, None, default.train.cpus_per_device, default.train.gpus_per_device)[
        "client_resources"] == {"num_cpus": 1.0}


@pytest.mark.parametrize("train, culprit", [
    ({"device": "gpu"}, "train.device"),
    ({"device": "cuda"}, "train.device cuda needs train.gpus_per_device > 0"),
    ({"gpus_per_device": -1}, "train.gpus_per_device"),
    ({"cpus_per_device": 0}, "train.cpus_per_device"),
])
def test_bad_placement_in_a_scenario_is_one_line_naming_the_key(train, culprit):
    with pytest.raises(InputError, match=culprit.replace(".", r"\.")) as err:
        parse_scenario(scenario(**train))
    assert "\n" not in str(err.value)


def test_sparse_kernels_are_refused_on_a_gpu():
    raw = scenario(device="auto")
    raw["sparcl"] = {"sparse_kernels": True}
    with pytest.raises(InputError, match="sparcl.sparse_kernels are SparseProp's CPU kernels"):
        parse_scenario(raw)


def test_the_bench_refuses_sparse_kernels_on_a_gpu_before_any_training(monkeypatch, capsys):
    """Caught when the settings are read, not when the sparse-kernel arm is built hours later."""
    from fleet.cli import main

    monkeypatch.setattr("clients.sparcl.config.torch_device", lambda name, what="": torch.device("cuda"))
    assert main(["bench", "sparcl", "--quiet", "--sparse-kernels", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fleet: error: --sparse-kernels runs on the CPU only, not with --device 'cuda'"]


# -- where torch sees a GPU: the same learning --------------------------------

@cuda
def test_every_tensor_of_a_gpu_learner_lives_on_the_gpu_through_a_whole_task(stream):
    """Through every schedule event of a task (mask updates, regrowth, DDR removals, DGM refreshes),
    and its saved state holds CPU tensors only (loaded here without a map_location)."""
    learner = Learner(config("cuda", SparCLConfig(tdm=TDMConfig(sparsity=0.75))), stream.input_shape,
                      stream.num_classes)
    for task in stream.tasks[:2]:
        learner.begin_task(task.task_id, task.classes, task.x_train, task.y_train)
        while not learner.task_done:
            learner.train_epoch()
    assert learner.counters.removed > 0
    assert {p.device.type for p in learner.model.parameters()} == {"cuda"}
    assert {m.device.type for m in learner.masks.masks.values()} == {"cuda"}
    assert {p.device.type for p in learner.dgm.patterns.values()} == {"cuda"}
    buffer = learner.method.buffer
    assert learner.x.device.type == buffer.examples.device.type == buffer.labels.device.type == "cuda"
    assert buffer.logits.device.type == "cuda"
    state = torch.load(io.BytesIO(learner.to_bytes()), weights_only=True)
    tensors = []
    stack = [state]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, torch.Tensor):
            tensors.append(item)
    assert tensors and {t.device.type for t in tensors} == {"cpu"}


@cuda
@pytest.mark.parametrize("granularity, recalibrate", [("weight", False), ("channel", True)])
def test_a_gpu_learner_learns_what_the_cpu_learner_learns(stream, granularity, recalibrate):
    """Same seed, same draws (the random streams stay on the CPU): the same masks' sizes, the same
    examples and FLOPs, and accuracies within a few points (float sums differ in order on a GPU).
    Channel masks run the compacted forward; recalibration the norms' extra pass."""
    sparcl = SparCLConfig(tdm=TDMConfig(sparsity=0.75 if granularity == "weight" else 0.5, granularity=granularity))
    def learning(device: str) -> LearnerConfig:  # a setting that learns the synthetic set (crops do not)
        base = config(device, sparcl, epochs=8)
        return replace(base, width=8, method=replace(base.method, augment=False),
                       train=replace(base.train, lr=0.1, recalibrate_norms=recalibrate))

    cpu_config, gpu_config = learning("cpu"), learning("cuda")
    cpu = run_stream(cpu_config, stream)
    gpu = run_stream(gpu_config, stream)
    assert gpu.examples == cpu.examples and gpu.removed == cpu.removed
    assert gpu.train_flops == pytest.approx(cpu.train_flops, rel=0.02)
    assert gpu.final_density == pytest.approx(cpu.final_density, abs=1e-6)
    assert cpu.task_il >= 85.0  # it learns (chance is 50), so agreement below means something
    assert abs(gpu.class_il - cpu.class_il) <= 10.0 and abs(gpu.task_il - cpu.task_il) <= 10.0


@cuda
def test_a_state_saved_on_the_gpu_resumes_on_the_cpu_and_back(stream):
    task = stream.tasks[0]
    gpu = Learner(config("cuda"), stream.input_shape, stream.num_classes)
    gpu.begin_task(task.task_id, task.classes, task.x_train, task.y_train)
    gpu.train_epoch()
    blob = gpu.to_bytes()
    cpu = Learner(config("cpu"), stream.input_shape, stream.num_classes)
    cpu.load_bytes(blob)
    cpu.attach(task.x_train, task.y_train)
    cpu.train_epoch()
    back = Learner(config("cuda"), stream.input_shape, stream.num_classes)
    back.load_bytes(cpu.to_bytes())
    back.attach(task.x_train, task.y_train)
    back.train_epoch()
    assert back.epoch == 3 and {p.device.type for p in back.model.parameters()} == {"cuda"}
    for name, mask in back.masks.masks.items():
        assert mask.device.type == "cuda" and int(mask.sum()) == int(cpu.masks.masks[name].sum())
