"""`fleet bench` statistics on hand-made results: paired deltas, spread, equal-FLOPs epochs."""

from __future__ import annotations

import pytest

from clients.errors import InputError
from clients.experiment import StreamResult
from fleet.bench import equal_flops_epochs, format_table, summarise, versus


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
    from fleet.bench import SPARSE_KERNELS, BenchConfig, sparcl_variants

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
    from fleet.bench import NARROW, BenchConfig, run_bench

    config = BenchConfig(dataset="synthetic", epochs=1, seeds=(0, 1), width=8, narrow_width=4, equal_flops=False,
                         max_per_class=10)
    report = run_bench(config)
    v = report["variants"]
    assert list(v) == ["dense", "full", NARROW]
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
    from fleet.bench import EQUAL_FLOPS, NARROW, main_variant

    assert main_variant(["dense", NARROW, EQUAL_FLOPS, "tdm"]) == "tdm"
    assert main_variant(["dense", "tdm", "full", NARROW]) == "full"
