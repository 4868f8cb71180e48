"""`fleet bench kernels`: the compacted networks, their FLOPs, the speed-up table, and the command end to end.

Nothing here asserts a measured time: the machine is shared and noisy.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml

from clients.backbones import ResNet18, SmallCNN, masked_parameter_names
from clients.budget import KernelModel, check_speedup_table
from clients.sparcl import sparse_kernels
from fleet.cli import main
from fleet.bench.kernels import compact_small_cnn, compact_widths, masked_widths, model_jobs, speedup_table, summarise
from fleet.config import load_scenario


def smallcnn_forward_flops(widths, hw=8, stem=16, in_channels=1, classes=10):
    """SmallCNN's forward FLOPs per example from its widths alone (clients.accounting's conventions)."""
    w1, w2, w3, w4 = widths
    full, half = hw * hw, (hw // 2) ** 2

    def block(cin, cout, area):  # 3x3 conv + BatchNorm (4 per element) + ReLU (1)
        return 2 * 9 * cin * cout * area + 5 * cout * area

    return (block(in_channels, stem, full) + block(stem, w1, full) + block(w1, w2, full)
            + 4 * w2 * half  # 2x2 max pooling: 4 per output
            + block(w2, w3, half) + block(w3, w4, half)
            + w4 * half      # average pooling: 1 per input
            + 2 * w4 * classes)


@pytest.mark.parametrize("density", [1.0, 0.5, 0.25, 0.1, 0.05])
def test_compacted_small_cnn_keeps_round_d_c_channels_and_trains(density, one_thread):
    model = SmallCNN(1, 10, width=64)
    net = compact_small_cnn(model, density)
    expected = tuple(max(1, round(density * c)) for c in (64, 64, 128, 128))
    assert masked_widths(net) == expected == compact_widths((64, 64, 128, 128), density)
    assert masked_parameter_names(net) == masked_parameter_names(model)  # the same layers, narrower
    out = net(torch.randn(4, 1, 8, 8))
    assert out.shape == (4, 10)
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_flops_ratio_is_what_the_widths_imply(one_thread):
    model = SmallCNN(1, 10, width=8)
    jobs = model_jobs(model, (1, 8, 8), 10, (1.0, 0.5, 0.25), batch=4, lr=0.1,
                      generator=torch.Generator().manual_seed(0))
    rows = summarise(jobs, [[1.0] for _ in jobs])  # times do not enter the FLOPs ratio
    dense = smallcnn_forward_flops((8, 8, 16, 16))
    for row in rows:
        if row["variant"] == "channel-compacted":
            widths = compact_widths((8, 8, 16, 16), row["density"])
            assert row["flops_ratio"] == pytest.approx(dense / smallcnn_forward_flops(widths))
            w1, w2, w3, w4 = widths  # the masked convolutions' FLOPs kept, against the full widths'
            kept = (16 * w1 + w1 * w2) * 64 + (w2 * w3 + w3 * w4) * 16
            assert 1 - row["kernel_sparsity"] == pytest.approx(kept / ((16 * 8 + 8 * 8) * 64 + (8 * 16 + 256) * 16),
                                                               abs=1e-6)
    by = {(r["variant"], r["density"]): r for r in rows}
    assert by["channel-compacted", 1.0]["flops_ratio"] == pytest.approx(1.0)
    assert by["weight-masked", 0.5]["kernel_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert 1.0 < by["weight-masked", 0.5]["flops_ratio"] < 2.0  # the dense stem, head and norms stay
    for job in jobs:
        job.step()  # every variant really trains


def test_resnet_is_compacted_layer_by_layer(one_thread):
    jobs = model_jobs(ResNet18(1, 10, nf=4), (1, 8, 8), 10, (0.5,), batch=2, lr=0.1,
                      generator=torch.Generator().manual_seed(0))
    assert [(j.variant, j.scope) for j in jobs] == [
        ("dense", "model"), ("weight-masked", "model"), ("dense-layers", "masked layers"),
        ("channel-compacted", "masked layers")]
    rows = summarise(jobs, [[2.0], [2.0], [1.0], [0.5]])
    compacted = rows[-1]
    assert compacted["speedup"] == 2.0  # against the same layers at full width, not the whole model
    assert compacted["flops_ratio"] == pytest.approx(4.0) and compacted["kernel_sparsity"] == pytest.approx(0.75)
    for job in jobs:
        job.step()


def row(variant, density, kernel_sparsity, speedup):
    return {"variant": variant, "density": density, "kernel_sparsity": kernel_sparsity, "speedup": speedup}


def test_speedup_table_is_monotone_and_valid():
    rows = [row("dense", 1.0, 0.0, 1.0), row("weight-masked", 0.5, 0.5, 9.0),
            row("channel-compacted", 1.0, 0.0, 1.1), row("channel-compacted", 0.5, 0.7, 2.5),
            row("channel-compacted", 0.25, 0.9, 2.2),   # noise: slower than the denser one
            row("channel-compacted", 0.1, 0.99, 6.0), row("channel-compacted", 0.09, 0.99, 5.0)]
    table = speedup_table(rows)
    assert table == ((0.7, 2.5), (0.9, 2.5), (0.99, 6.0))
    check_speedup_table(table, "t")
    assert KernelModel("sparse", table).layer_speedup(0.01) == 6.0
    assert speedup_table([row("channel-compacted", 1.0, 0.0, 1.0)]) == ()


def kernels_scenario(scenario_file, tmp_path):
    return scenario_file("k", output=str(tmp_path / "run"), dataset={"name": "digits", "n_tasks": 5},
                         train={"width": 8})


def test_cli_writes_the_results_and_refuses_to_overwrite_them(tmp_path, scenario_file, capsys):
    scenario, out = kernels_scenario(scenario_file, tmp_path), tmp_path / "run-kernels"  # the default folder
    assert main(["bench", "kernels", str(scenario), "--repeats", "1", "--seconds", "0.05",
                 "--densities", "1.0,0.5", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "channel-compacted" in printed and "speed-up by kernel sparsity" in printed
    rows = list(csv.DictReader((out / "kernels.csv").open()))
    sparse = [("weight-sparse-kernels", 1.0), ("weight-sparse-kernels", 0.5)] if sparse_kernels.available() else []
    assert [(r["variant"], float(r["density"])) for r in rows] == [
        ("dense", 1.0), ("weight-masked", 1.0), ("weight-masked", 0.5), *sparse,
        ("channel-compacted", 1.0), ("channel-compacted", 0.5)]
    assert all(float(r["min"]) <= float(r["median_s_per_example"]) <= float(r["max"]) for r in rows)
    report = json.loads((out / "kernels.json").read_text())
    assert report["machine"]["threads"] == 1 and report["batch"] == 32 and report["scenario"] == "k"
    assert {"machine", "processor", "torch"} <= set(report["machine"]) and len(report["rows"]) == 5 + len(sparse)
    assert ("SparseProp is not installed" in printed) != sparse_kernels.available()
    text = (out / "speedup.yaml").read_text()
    assert text.startswith("# Measured by `fleet bench kernels`") and "Command: fleet bench kernels" in text
    snippet = yaml.safe_load(text)
    assert len(snippet["timing"]["compaction_speedup"]) == 1
    assert len(snippet["timing"].get("speedup", {})) == (1 if sparse else 0)
    pasted = tmp_path / "pasted.yaml"  # what a user does with it
    pasted.write_text(scenario.read_text() + text)
    assert load_scenario(pasted).kernel_model().compaction == tuple(snippet["timing"]["compaction_speedup"].items())

    assert main(["bench", "kernels", str(scenario), "--repeats", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--force" in err[0] and "kernels.csv" in err[0]


@pytest.mark.parametrize("flags,culprit", [
    (["--densities", "0"], "--densities"),
    (["--densities", "1.5"], "--densities"),
    (["--densities", "0.5,x"], "--densities"),
    (["--densities", "nan"], "--densities"),
    (["--densities", ","], "--densities"),
    (["--repeats", "0"], "--repeats"),
    (["--seconds", "0"], "--seconds"),
    (["--seconds", "-1"], "--seconds"),
    (["--seconds", "inf"], "--seconds must be a finite number"),
    (["--seconds", "5000"], "--seconds must be in (0, 3600], got 5000.0"),
    (["--threads", "0"], "--threads"),
    (["--batch", "0"], "--batch"),
    (["--batch", "x"], "--batch"),
])
def test_bad_flags_fail_in_one_line_before_any_work(tmp_path, scenario_file, capsys, flags, culprit):
    scenario, out = kernels_scenario(scenario_file, tmp_path), tmp_path / "out"
    assert main(["bench", "kernels", str(scenario), "--out", str(out), "--quiet", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fleet: error:") and culprit in err[0], err
    assert not out.exists()


def test_an_unknown_bench_target_fails_in_one_line(capsys):
    assert main(["bench", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sparcl" in err[0] and "kernels" in err[0]
