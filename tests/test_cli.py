"""The `fleet` command: one-line errors with exit status 2, and a small real bench."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from fleet.cli import main


def fleet(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fleet.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.parametrize("args,culprit", [
    (["--dataset", "imagenet"], "imagenet"),
    (["--method", "icarl"], "icarl"),
    (["--sparsity", "1.0"], "sparsity"),
    (["--sparsity", "-0.5"], "sparsity"),
    (["--dataset", "cifar10", "--data-dir", "/no/such/folder"], "/no/such/folder"),
    (["--dataset", "mnist"], "mnist"),
    (["--ablation", "dgm-only"], "dgm-only"),
    (["--ddr-rank", "easy"], "--ddr-rank"),
    (["--ddr-presentations", "0"], "--ddr-presentations"),
    (["--ddr-presentations", "two"], "--ddr-presentations"),
    (["--device", "gpu"], "--device must be cpu, cuda, cuda:N or auto"),
    (["--width", "8", "--narrow-width", "8"], "--narrow-width"),
    *([(["--device", "cuda"], "--device 'cuda': torch")] if not torch.cuda.is_available() else []),
    (["--seeds", "a,b"], "--seeds"),
    (["--epochs", "200000"], "--epochs must be in [1, 100000], got 200000"),  # BenchConfig's own rules
    (["--width", "0"], "--width must be in [1, 65536], got 0"),
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--replay-from-task", "-1"], "--replay-from-task must be >= 0, got -1"),
    (["--dataset", "fashion-mnist", "--data-dir", "/no/such/fmnist"], "apt-get install dataset-fashion-mnist"),
    (["--json", "/no/such/folder/report.json"], "/no/such/folder"),
])
def test_bench_bad_input_is_one_line_and_exit_2(args, culprit, capsys):
    assert main(["bench", "sparcl", "--quiet", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet: error:") and culprit in lines[0]


def test_the_real_process_exits_2_without_a_traceback():
    result = fleet("bench", "sparcl", "--method", "icarl")
    assert result.returncode == 2
    assert result.stderr.strip() == "fleet: error: method 'icarl' is unknown (choose from: finetune, er, der, derpp)"


def test_validate_good_and_bad(tmp_path, capsys):
    assert main(["validate", "scenarios/quickstart.yaml"]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfederation:\n  rounds: ten\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "federation.rounds" in err[0]
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2


def test_bench_json_holds_the_promised_keys(tmp_path):
    out = tmp_path / "bench.json"
    result = fleet("bench", "sparcl", "--dataset", "synthetic", "--epochs", "1", "--seeds", "0",
                   "--width", "4", "--quiet", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert "flops_ratio" in result.stdout
    report = json.loads(out.read_text())
    assert report["flops_ratio"] > 1 and report["wall_ratio"] > 0
    assert isinstance(report["acc_delta"], float)
    # the standing controls (issue 24): the static mask and the dense network of equal FLOPs
    assert {r["variant"] for r in report["runs"]} == {"dense", "full", "dense-equal-flops", "static", "dense-narrow"}
    assert report["acc_delta_min"] <= report["acc_delta"] <= report["acc_delta_max"]
    assert "vs_equal_flops" in report


def test_a_run_that_aggregated_nothing_is_a_failure(capsys):
    from fleet.cli.commands import run_failed

    statuses = dict.fromkeys(("ok", "late", "failed", "oom", "declined", "offline", "adapted"), 0)
    summary = {"rounds_completed": 4, "rounds_without_update": 3, "rejected_updates": 0, "failed_replies": 0,
               "timed_out_replies": 2, "statuses": {**statuses, "declined": 5}}
    assert run_failed(summary)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 of 4 rounds aggregated no update" in err[0] and "2 timed out" in err[0]
    assert not run_failed({**summary, "rounds_without_update": 2})
    assert run_failed({**summary, "rounds_completed": 0, "rounds_without_update": 0})


@pytest.mark.parametrize("address,culprit", [
    ("garbage", "must be HOST:PORT"),
    ("127.0.0.1:70000", "must be HOST:PORT"),
    ("127.0.0.1:1", "no Ray head answers there"),
])
def test_a_bad_ray_address_is_one_line_before_any_work(tmp_path, capsys, address, culprit):
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: t\ndataset: {name: synthetic}\nfleet: {devices: 2}\n")
    assert main(["run", str(scenario), "--out", str(tmp_path / "out"), "--ray-address", address]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and culprit in err[0], err
    assert not (tmp_path / "out").exists()


def validate_fails_in_one_line(tmp_path, capsys, scenario_text: str, culprit: str) -> None:
    """`fleet validate` on this scenario exits 2 with one line of error that names `culprit`."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(scenario_text)
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and culprit in err[0], err


@pytest.mark.parametrize("timing, culprit", [
    ("plan_quantile: 0", "timing.plan_quantile"), ("plan_quantile: 1.0", "timing.plan_quantile"),
    ("plan_quantile: -0.2", "timing.plan_quantile"), ("server_egress_mbps: -5", "timing.server_egress_mbps"),
    ("server_egress_mbps: 0", "timing.server_egress_mbps"),
])
def test_bad_planning_margins_and_server_links_get_one_line_naming_the_field(tmp_path, capsys, timing, culprit):
    validate_fails_in_one_line(tmp_path, capsys, f"name: x\ntiming:\n  {timing}\n", culprit)


@pytest.mark.parametrize("federation, culprit", [
    ("{devices_per_round: 2, over_select: 0.5}", "federation.over_select"),
    ("{devices_per_round: 2, over_select: 0}", "federation.over_select"),
    ("{devices_per_round: 2, over_select: yes}", "federation.over_select"),
    ("{devices_per_round: 4, over_select: 1.3}", "federation.over_select 1.3 samples no one more"),
    ("{over_select: 1.3}", "federation.over_select 1.3 samples no one more"),
])
def test_bad_over_selection_gets_one_line_naming_the_field(tmp_path, capsys, federation, culprit):
    validate_fails_in_one_line(tmp_path, capsys, f"name: x\nfleet: {{devices: 4}}\nfederation: {federation}\n",
                               culprit)


@pytest.mark.parametrize("federation, stream, culprit", [
    ("{mode: async, buffer_size: 0}", "{task_every_s: 60}", "federation.buffer_size"),
    ("{mode: async, max_staleness: -1}", "{task_every_s: 60}", "federation.max_staleness"),
    ("{mode: async, concurrency: 0}", "{task_every_s: 60}", "federation.concurrency"),
    ("{mode: fedbuff}", "{task_every_s: 60}", "federation.mode"),
    ("{mode: async}", "{rounds_per_task: 2}", "set stream.task_every_s"),
    ("{mode: async, devices_per_round: 2, over_select: 1.5}", "{task_every_s: 60}", "federation.over_select"),
    ("{concurrency: 2}", "{task_every_s: 60}", "federation.concurrency limits asynchronous training"),
    ("{buffer_size: 3}", "{rounds_per_task: 2}", "federation.buffer_size 3 sets asynchronous aggregation"),
    ("{max_staleness: 0}", "{rounds_per_task: 2}", "federation.max_staleness 0 sets asynchronous aggregation"),
])
def test_bad_asynchronous_settings_get_one_line_naming_the_field(tmp_path, capsys, federation, stream, culprit):
    validate_fails_in_one_line(
        tmp_path, capsys, f"name: x\nfleet: {{devices: 4}}\nstream: {stream}\nfederation: {federation}\n", culprit)


def test_synchronous_runs_accept_the_asynchronous_defaults_their_run_folders_spell_out(tmp_path):
    ok = tmp_path / "ok.yaml"
    ok.write_text("name: x\nfleet: {devices: 4}\nfederation: {mode: sync, buffer_size: 2, max_staleness: 4}\n")
    assert main(["validate", str(ok)]) == 0


def test_keep_first_closes_synchronous_rounds_only(tmp_path, capsys):
    validate_fails_in_one_line(tmp_path, capsys, "name: x\nfleet: {devices: 4}\nstream: {task_every_s: 60}\n"
                               "federation: {mode: async}\ntiming: {keep_first: 2}\n",
                               "timing.keep_first closes synchronous rounds")


def test_one_device_a_round_may_be_over_selected(tmp_path):
    ok = tmp_path / "ok.yaml"
    ok.write_text("name: x\nfleet: {devices: 4}\nfederation: {devices_per_round: 1, over_select: 1.5}\n")
    assert main(["validate", str(ok)]) == 0
