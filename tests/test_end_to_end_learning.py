"""SparCL-DER++ learns the real digits stream, end to end, well above chance."""

from __future__ import annotations

import torch

from clients.cl.methods import MethodConfig
from clients.data import load_stream
from clients.experiment import run_stream
from clients.sparcl.config import LearnerConfig, SparCLConfig, TrainConfig
from clients.sparcl.tdm import TDMConfig


def test_sparcl_derpp_learns_digits_well_above_chance():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = LearnerConfig(method=MethodConfig("derpp", buffer_size=200, mask_other_classes=True),
                               sparcl=SparCLConfig(tdm=TDMConfig(sparsity=0.9)), width=32,
                               train=TrainConfig(epochs_per_task=6, lr=0.1, seed=0))
        result = run_stream(config, load_stream("digits", seed=0))
    finally:
        torch.set_num_threads(old)
    assert result.label == "SparCL-DER++"
    assert result.class_il > 60.0          # chance over 10 classes is 10%
    assert result.task_il > 90.0           # chance within a task is 50%
    assert abs(result.final_density - 0.10) < 0.002
    assert result.removed > 0
