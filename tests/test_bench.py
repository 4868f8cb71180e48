"""`fleet bench` statistics on hand-made results: paired deltas, spread, equal-FLOPs epochs."""

from __future__ import annotations

from dataclasses import replace

import pytest

from clients.errors import InputError
from clients.experiment import StreamResult
from clients.sparcl.tdm import keep_count
from fleet.bench.sparcl import (
    NARROW,
    controls_of,
    dense_flops_per_example,
    equal_flops_epochs,
    format_table,
    nearest_width,
    summarise,
    versus,
)


def result(class_il: float, flops: float = 100.0, cpu: float = 10.0, seed: int = 0) -> StreamResult:
    return StreamResult(label="x", components="x", seed=seed, class_il_matrix=[[class_il]],
                        task_il_matrix=[[class_il]], train_flops=flops, examples=1, removed=0,
                        peak_memory_bytes=1, dense_peak_memory_bytes=1, wall_s=cpu / 2, cpu_s=cpu,
                        final_density=None, epochs=10)


def test_acc_delta_is_the_median_of_paired_differences_with_spread():
    dense = [result(50.0), result(60.0), result(70.0)]
    sparse = [result(52.0), result(55.0), result(71.0)]  # per seed: +2, -5, +1
    s = summarise({"dense": dense, "full": sparse})["full"]
    assert s["acc_delta"] == 1.0            # the difference of medians would say -5
    assert (s["acc_delta_min"], s["acc_delta_max"]) == (-5.0, 2.0)
    assert s["class_il"] == 55.0
    assert versus({"a": sparse, "b": dense}, "a", "b") == {"median": 1.0, "min": -5.0, "max": 2.0}


def test_ratios_are_per_seed_and_use_cpu_time():
    dense = [result(50, flops=1000, cpu=20), result(50, flops=1200, cpu=30)]
    sparse = [result(50, flops=100, cpu=10), result(50, flops=100, cpu=10)]
    s = summarise({"dense": dense, "full": sparse})["full"]
    assert s["flops_ratio"] == pytest.approx((10 + 12) / 2)
    assert s["wall_ratio"] == s["cpu_ratio"] == pytest.approx((2 + 3) / 2)
    assert s["wall_clock_ratio"] == pytest.approx((2 + 3) / 2)  # wall is cpu/2 in both arms here


@pytest.mark.parametrize("epochs,dense,sparse,expected", [
    (50, 1200.0, 100.0, 4), (10, 1000.0, 100.0, 1), (10, 1000.0, 10.0, 1), (20, 100.0, 100.0, 20)])
def test_equal_flops_epochs(epochs, dense, sparse, expected):
    assert equal_flops_epochs(epochs, dense, sparse) == expected


def test_table_shows_the_spread():
    runs = {"dense": [result(50.0), result(60.0)], "full": [result(52.0, flops=10), result(55.0, flops=10)]}
    report = {"config": {"dataset": "d", "sparsity": 0.9, "epochs": 10, "seeds": [0, 1]},
              "label": "SparCL-DER++", "dense_label": "DER++", "variants": summarise(runs),
              "flops_ratio": 10.0, "acc_delta": -1.5, "acc_delta_min": -5.0, "acc_delta_max": 2.0,
              "wall_ratio": 1.0, "vs_equal_flops": {"median": 3.0, "min": 1.0, "max": 4.0}}
    text = format_table(report)
    assert "-1.50 [-5.00, +2.00]" in text and "equal FLOPs: +3.00 points [+1.00, +4.00]" in text


def test_learning_accuracy_is_a_median_column_of_the_table():
    """The diagonal shows whether a variant loses by learning new tasks less well, not by forgetting."""
    def two_tasks(newest: float) -> StreamResult:
        return StreamResult(label="x", components="x", seed=0, class_il_matrix=[[90.0], [40.0, newest]],
                            task_il_matrix=[[90.0], [80.0, 90.0]], train_flops=1.0, examples=1, removed=0,
                            peak_memory_bytes=1, dense_peak_memory_bytes=1, wall_s=1.0, cpu_s=1.0,
                            final_density=None, epochs=10)
    runs = {"dense": [two_tasks(80.0)], "full": [two_tasks(50.0)]}
    variants = summarise(runs)
    assert (variants["dense"]["learning_acc"], variants["full"]["learning_acc"]) == (85.0, 70.0)
    report = {"config": {"dataset": "d", "sparsity": 0.9, "epochs": 10, "seeds": [0]},
              "label": "SparCL-DER++", "dense_label": "DER++", "variants": variants,
              "flops_ratio": 1.0, "acc_delta": -15.0, "acc_delta_min": -15.0, "acc_delta_max": -15.0,
              "wall_ratio": 1.0}
    header, _, _, full = format_table(report).splitlines()[1:5]
    assert header.split()[9] == "learn" and full.split()[9] == "70.00"
    # forgetting of task 0: 90 -> 40 under both definitions here (its best is not the final row)
    assert header.split()[7:9] == ["forget", "f-auth"] and full.split()[7:9] == ["50.00", "50.00"]


def test_forgetting_of_a_stream_under_both_definitions():
    """A task that ends above its best earlier accuracy: ours says negative, the authors' says 0."""
    result = StreamResult(label="x", components="x", seed=0, class_il_matrix=[[60.0], [70.0, 90.0]],
                          task_il_matrix=[[90.0], [95.0, 90.0]], train_flops=1.0, examples=1, removed=0,
                          peak_memory_bytes=1, dense_peak_memory_bytes=1, wall_s=1.0, cpu_s=1.0,
                          final_density=None, epochs=10)
    assert (result.forgetting, result.forgetting_authors) == (-10.0, 0.0)
    assert result.to_dict()["forgetting_authors"] == 0.0


def test_the_ddr_rank_reaches_every_variant_with_ddr():
    from fleet.bench import BenchConfig, sparcl_variants

    variants = sparcl_variants(BenchConfig(ablation="all", ddr_rank="random"))
    assert {n: v.ddr.rank for n, v in variants.items() if v.ddr} == {"tdm+ddr": "random", "full": "random"}
    assert sparcl_variants(BenchConfig())["full"].ddr.rank == "forgetting"
    waiting = sparcl_variants(BenchConfig(ablation="all", ddr_presentations=2))
    assert {n: v.ddr.presentations for n, v in waiting.items() if v.ddr} == {"tdm+ddr": 2, "full": 2}


def test_sparse_kernels_add_the_full_variant_again_on_them_side_by_side():
    from fleet.bench.sparcl import SPARSE_KERNELS, BenchConfig, sparcl_variants

    variants = sparcl_variants(BenchConfig(sparse_kernels=True))
    assert list(variants) == ["full", SPARSE_KERNELS]
    full, sparse = variants["full"], variants[SPARSE_KERNELS]
    assert not full.tdm.sparse_kernels and sparse.tdm.sparse_kernels
    assert (sparse.ddr, sparse.dgm, sparse.tdm.sparsity) == (full.ddr, full.dgm, full.tdm.sparsity)
    assert list(sparcl_variants(BenchConfig())) == ["full"]
    with pytest.raises(InputError, match="--ablation full"):
        BenchConfig(sparse_kernels=True, ablation="tdm")


def test_the_table_says_what_sparse_kernels_saved_paired_per_seed():
    runs = {"dense": [result(50.0)], "full": [result(52.0, flops=10)]}
    report = {"config": {"dataset": "d", "sparsity": 0.9, "epochs": 10, "seeds": [0]},
              "label": "SparCL-DER++", "dense_label": "DER++", "variants": summarise(runs),
              "flops_ratio": 10.0, "acc_delta": 2.0, "acc_delta_min": 2.0, "acc_delta_max": 2.0,
              "wall_ratio": 1.0, "sparse_kernels_speedup": {"median": 1.25, "min": 1.1, "max": 1.4}}
    assert "against full (dense kernels), CPU time paired per seed: 1.25x [1.10, 1.40]" in format_table(report)


def test_the_narrow_dense_arm_trains_the_dense_method_at_the_smaller_width_beside_the_others():
    """The baseline channel masks must beat: a dense network as narrow as the masks make it."""
    from fleet.bench.sparcl import NARROW, BenchConfig, run_bench

    config = BenchConfig(dataset="synthetic", epochs=1, seeds=(0, 1), width=8, narrow_width=4, equal_flops=False,
                         max_per_class=10)
    report = run_bench(config)
    v = report["variants"]
    assert list(v) == ["dense", "full", "static", NARROW]  # the static mask is a standing control (issue 24)
    assert report["narrow"]["width"] == 4 and not report["narrow"]["auto"]  # a given width is kept
    assert 2 < v[NARROW]["flops_ratio"] < 4  # half the width: a quarter of the inner convolutions' FLOPs
    runs = {name: [r for r in report["runs"] if r["variant"] == name] for name in ("full", NARROW)}
    differences = [a["class_il"] - b["class_il"] for a, b in zip(runs["full"], runs[NARROW])]
    assert report["vs_narrow"]["median"] == pytest.approx(sum(differences) / 2)  # two seeds
    assert "SparCL-DER++ minus dense at width 4:" in format_table(report)


@pytest.mark.parametrize("narrow", [0, 8, 9])
def test_a_narrow_width_must_be_below_the_width(narrow):
    from fleet.bench import BenchConfig

    with pytest.raises(InputError, match="--narrow-width must be in"):
        BenchConfig(width=8, narrow_width=narrow)


def test_the_headline_variant_is_never_a_dense_baseline():
    from fleet.bench.sparcl import EQUAL_FLOPS, NARROW, main_variant

    assert main_variant(["dense", NARROW, EQUAL_FLOPS, "tdm"]) == "tdm"
    assert main_variant(["dense", "tdm", "full", NARROW]) == "full"


# -- the standing controls (issue 24) ---------------------------------------------------------------


@pytest.mark.parametrize("target,expected", [(50.0, 7), (56.5, 7), (57.0, 8), (0.5, 1), (1e9, 31), (64.0, 8)])
def test_nearest_width_takes_the_nearest_flops_and_the_narrower_on_a_tie(target, expected):
    calls = []

    def flops(w: int) -> float:
        calls.append(w)
        return float(w * w)

    assert nearest_width(flops, target, 31) == expected
    assert len(calls) <= 8  # a bisection, not a sweep of 31 widths


def test_the_automatic_width_is_the_nearest_of_every_narrower_small_cnn():
    """SparCL-DER++ 0.90 at width 32 on Fashion-MNIST counted 15.60 M FLOPs per example
    (results/fmnist/recal_weight_s090_e20.json): the dense network nearest that is width 9."""
    shape = (1, 28, 28)
    target = 15601146.041477386
    flops = {w: dense_flops_per_example(shape, 10, w) for w in range(1, 32)}
    brute = min(flops, key=lambda w: (abs(flops[w] - target), w))
    assert nearest_width(lambda w: dense_flops_per_example(shape, 10, w), target, 31) == brute == 9
    assert flops[9] / target == pytest.approx(1.018, abs=5e-4)
    assert dense_flops_per_example(shape, 10, 32) == 132167424.0  # as the learner counts a dense step


def test_each_sparcl_arm_meets_each_control_paired_per_seed():
    runs = {"dense": [result(70.0, flops=1000, cpu=20), result(72.0, flops=1000, cpu=30)],
            "full": [result(68.0, flops=100, cpu=16, seed=0), result(73.0, flops=100, cpu=20, seed=1)],
            "static": [result(65.0, flops=90, cpu=12), result(74.0, flops=90, cpu=20)],
            NARROW: [result(66.0, flops=110, cpu=4), result(69.0, flops=100, cpu=5)]}
    controls = controls_of(runs)
    assert list(controls) == ["full"] and list(controls["full"]) == ["dense", "static", NARROW]
    assert controls["full"]["dense"] == {"median": -0.5, "min": -2.0, "max": 1.0, "flops_ratio": 10.0,
                                         "cpu_ratio": pytest.approx((20 / 16 + 30 / 20) / 2),
                                         "wall_clock_ratio": pytest.approx((20 / 16 + 30 / 20) / 2)}
    assert controls["full"]["static"]["median"] == 1.0  # +3 and -1
    assert controls["full"][NARROW]["median"] == 3.0 and controls["full"][NARROW]["flops_ratio"] == 1.05
    assert controls["full"][NARROW]["cpu_ratio"] == pytest.approx((4 / 16 + 5 / 20) / 2)
    # the static mask asked for alone is the arm, and dense its only control
    assert list(controls_of({"dense": runs["dense"], "static": runs["static"]})) == ["static"]
    assert list(controls_of({"dense": runs["dense"], "tdm": runs["full"], "full": runs["full"]})) == ["tdm", "full"]


@pytest.mark.parametrize("ablation,controls,expected", [
    ("full", True, ["dense", "full", "static"]),
    ("full", False, ["dense", "full"]),
    ("static", True, ["dense", "static"]),
    ("tdm,full", True, ["dense", "tdm", "full", "static"]),
    ("all", True, ["dense", "tdm", "tdm+ddr", "tdm+dgm", "full", "static"]),
])
def test_the_static_mask_runs_beside_every_sparcl_arm_unless_asked_not_to(ablation, controls, expected):
    from fleet.bench.sparcl import BenchConfig, arms

    chosen = arms(BenchConfig(ablation=ablation, controls=controls, sparsity=0.95))
    assert list(chosen) == expected
    if "static" in chosen:
        tdm = chosen["static"].tdm
        assert tdm.static and tdm.sparsity == 0.95 and chosen["static"].ddr is None and chosen["static"].dgm is None


@pytest.mark.parametrize("ablation", ["all,tdm", "tdm,dgm", ""])
def test_an_unknown_ablation_in_a_list_is_refused(ablation):
    from fleet.bench import BenchConfig

    with pytest.raises(InputError, match="ablation"):
        BenchConfig(ablation=ablation)


def test_every_run_reports_sparcl_against_the_three_standing_controls():
    """Default settings: dense at the same width, the static mask, and the dense width of equal FLOPs,
    chosen once (after the first seed) and trained on every seed."""
    from fleet.bench import BenchConfig, run_bench

    config = BenchConfig(dataset="synthetic", epochs=1, seeds=(0, 1), width=8, equal_flops=False, max_per_class=10)
    report = run_bench(config)
    assert list(report["variants"]) == ["dense", "full", "static", NARROW]
    runs = {name: [r for r in report["runs"] if r["variant"] == name] for name in report["variants"]}
    full = runs["full"][0]
    shape, classes = (1, 8, 8), 10
    target = full["train_flops"] / full["examples"]
    width = report["narrow"]["width"]
    assert report["narrow"]["auto"] and report["config"]["narrow_width"] == width
    assert width == nearest_width(lambda w: dense_flops_per_example(shape, classes, w), target, 7)
    assert report["narrow"]["flops_ratio"] == pytest.approx(dense_flops_per_example(shape, classes, width) / target)
    # every narrow run is that width: the small CNN's masked layers hold 9 (16 w + 7 w^2) weights
    assert [r["masked_weights"] for r in runs[NARROW]] == [9 * (16 * width + 7 * width ** 2)] * 2
    assert [r["live_weights"] for r in runs["dense"]] == [9 * (16 * 8 + 7 * 64)] * 2
    static_live = sum(keep_count(n, 0.1) for n in (16 * 8 * 9, 8 * 8 * 9, 8 * 16 * 9, 16 * 16 * 9))
    assert [r["live_weights"] for r in runs["static"]] == [static_live] * 2  # the initial mask, unchanged
    for control in ("dense", "static", NARROW):
        c = report["controls"]["full"][control]
        deltas = [a["class_il"] - b["class_il"] for a, b in zip(runs["full"], runs[control])]
        assert c["median"] == pytest.approx(sum(deltas) / 2) and (c["min"], c["max"]) == (min(deltas), max(deltas))
        ratios = [b["train_flops"] / a["train_flops"] for a, b in zip(runs["full"], runs[control])]
        assert c["flops_ratio"] == pytest.approx(sum(ratios) / 2)
    assert set(report["machine"]) >= {"host", "cpu", "torch", "threads", "device"}
    text = format_table(report)
    assert "standing controls: SparCL arm minus control" in text
    assert f"dense width {width} chosen for equal training FLOPs per example" in text
    assert "static mask 0.9" in text and "dense, width 8" in text


def test_no_controls_runs_dense_and_sparcl_alone():
    from fleet.bench import BenchConfig, run_bench, total_epochs

    config = BenchConfig(dataset="synthetic", epochs=1, seeds=(0,), width=4, equal_flops=False, max_per_class=10,
                         controls=False)
    report = run_bench(config)
    assert list(report["variants"]) == ["dense", "full"] and "narrow" not in report
    assert list(report["controls"]["full"]) == ["dense"]
    assert total_epochs(config) == 2 * 5 and total_epochs(replace(config, controls=True)) == 4 * 5


def test_matching_total_flops_counts_ddr_removals_as_saved():
    """Against the dense run's examples the target is lower when DDR removed some: never a wider network."""
    from fleet.bench.sparcl import BenchConfig, choose_narrow
    from clients.data import load_stream

    stream = load_stream("synthetic", max_per_class=10)
    sparse = replace(result(50.0, flops=2.0e6), examples=8)  # 250 k per example of its own
    dense = replace(result(50.0, flops=2.0e7), examples=10)  # a dense run saw 10 examples
    per = choose_narrow(BenchConfig(width=8), stream, "full", sparse, dense)
    total = choose_narrow(BenchConfig(width=8, narrow_match="total"), stream, "full", sparse, dense)
    assert per["target_flops_per_example"] == 250e3 and total["target_flops_per_example"] == 200e3
    assert total["width"] <= per["width"]
    assert choose_narrow(BenchConfig(width=1), stream, "full", sparse, dense) is None  # nothing narrower


# -- the authors' settings (issue 24) ---------------------------------------------------------------


def test_the_authors_settings_are_lr_003_replay_from_the_second_task_and_five_presentations():
    from clients.sparcl.ddr import DDRConfig, removal_schedule
    from fleet.bench.sparcl import (
        AUTHORS_SETTINGS,
        BenchConfig,
        learner_config,
        sparcl_variants,
        with_authors_settings,
    )

    config = with_authors_settings(BenchConfig(epochs=20))
    assert (config.lr, config.replay_from_task, config.ddr_presentations, config.authors_settings) == (0.03, 1, 5, True)
    assert AUTHORS_SETTINGS == {"lr": 0.03, "replay_from_task": 1, "ddr_presentations": 5}
    full = sparcl_variants(config)["full"]
    learner = learner_config(config, full, seed=0)
    assert (learner.train.lr, learner.method.replay_from_task, full.ddr.presentations) == (0.03, 1, 5)
    # where epochs allow: at 20 epochs the fourth removal (epoch 20) no longer fits, at 50 all four do
    assert removal_schedule(20, full.ddr) == {5: 0.075, 10: 0.075, 15: 0.075}
    assert removal_schedule(50, DDRConfig(presentations=5)) == {5: 0.075, 10: 0.075, 15: 0.075, 20: 0.075}
    kept = with_authors_settings(BenchConfig(lr=0.1), keep={"lr"})  # a flag given explicitly stays
    assert (kept.lr, kept.replay_from_task, kept.ddr_presentations) == (0.1, 1, 5)
    assert learner_config(BenchConfig(), full, seed=0).method.replay_from_task == 0  # the default replays at once


@pytest.mark.usefixtures("one_thread")
def test_under_the_authors_settings_the_first_task_adds_no_replay_term():
    """The buffer fills during the first task; its steps push only the batch through the model
    (no buffer draw, so no replay term); the second task's first step draws twice (DER++)."""
    from clients.data import load_stream
    from clients.sparcl.learner import Learner
    from fleet.bench import BenchConfig, learner_config, sparcl_variants, with_authors_settings

    stream = load_stream("synthetic", max_per_class=20)  # 40 examples a task
    t0, t1 = stream.tasks[:2]
    examples = {}
    for authors in (False, True):
        config = BenchConfig(dataset="synthetic", epochs=2, width=4, buffer_size=30, ablation="tdm")
        config = with_authors_settings(config) if authors else config
        learner = Learner(learner_config(config, sparcl_variants(config)["tdm"], seed=0), stream.input_shape,
                          stream.num_classes)
        assert learner.optimizer.param_groups[0]["lr"] == (0.03 if authors else 0.1)
        learner.begin_task(t0.task_id, t0.classes, t0.x_train, t0.y_train)
        while not learner.task_done:
            learner.train_epoch()
        assert len(learner.method.buffer) == 30 and learner.method.buffer.num_seen == 80  # filled either way
        examples[authors] = learner.counters.examples
        # the norms' recalibration at the task's end sees the mix a step of the task saw
        assert learner.recalibration_examples() == (40 if authors else 40 + 2 * 2 * 30)
        learner.begin_task(t1.task_id, t1.classes, t1.x_train, t1.y_train)
        before = learner.counters.examples
        learner.train_epoch()
        assert learner.counters.examples - before == 40 + 2 * 2 * 30  # each step: its batch and two draws of 30
    # batches of 32 and 8, 2 epochs: 80 examples alone; replaying from the second step (the buffer is
    # empty at the first) adds two draws of 30 to each of the other three
    assert examples[True] == 80
    assert examples[False] == 80 + 3 * 2 * 30


def test_the_cli_takes_the_authors_settings_and_keeps_an_explicit_flag(tmp_path):
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "b.json"
    result = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "bench", "sparcl", "--dataset", "synthetic", "--epochs", "1", "--seeds",
         "0", "--width", "4", "--max-per-class", "10", "--quiet", "--no-controls", "--no-equal-flops",
         "--authors-settings", "--lr", "0.05", "--json", str(out)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr
    cfg = json.loads(out.read_text())["config"]
    assert (cfg["lr"], cfg["replay_from_task"], cfg["ddr_presentations"], cfg["authors_settings"]) == (0.05, 1, 5, True)
    assert cfg["controls"] is False and "standing controls" in result.stdout  # dense is still a control


def test_before_replay_starts_der_pp_s_loss_is_the_current_batch_s_cross_entropy_alone():
    import torch
    import torch.nn.functional as F

    from clients.cl.methods import MethodConfig, build_method

    model = torch.nn.Linear(4, 3)
    method = build_method(model, MethodConfig(name="derpp", buffer_size=8, minibatch=4, replay_from_task=1),
                          torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 4, generator=g), torch.randint(0, 3, (6,), generator=g)
    method.buffer.add(x, y, torch.randn(6, 3, generator=g))
    method.begin_task((0, 1, 2), 0)
    step = method.loss(x, y)
    assert step.examples == 6 and method.step_examples(6) == 6
    assert torch.equal(step.loss, F.cross_entropy(model(x), y))
    method.begin_task((0, 1, 2), 1)
    assert method.loss(x, y).examples == 6 + 2 * 4 == method.step_examples(6)
    with pytest.raises(InputError, match="replay_from_task"):
        MethodConfig(replay_from_task=-1)
