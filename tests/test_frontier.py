"""The accuracy-against-speed frontier from hand-made `fleet bench sparcl` reports."""

from __future__ import annotations

import csv
import json

import pytest

from clients.errors import InputError
from fleet.bench.frontier import comparable, frontier_points
from fleet.cli import main


def report(granularity: str, sparsity: float, delta: float, cpu: float, width: int = 32) -> dict:
    def variant(d, lo, hi, c, epochs=10):
        return {"acc_delta": d, "acc_delta_min": lo, "acc_delta_max": hi, "cpu_ratio": c, "flops_ratio": 10.0,
                "epochs": epochs}
    return {"config": {"dataset": "fashion-mnist", "width": width, "max_per_class": 300, "epochs": 10,
                       "method": "derpp", "lr": 0.1, "buffer_size": 200, "granularity": granularity,
                       "sparsity": sparsity, "seeds": [0, 1, 2]},
            "variants": {"dense": variant(0, 0, 0, 1), "full": variant(delta, delta - 5, delta + 1, cpu),
                         "dense-equal-flops": variant(-30, -33, -24, 9.0, epochs=1)}}


def test_each_sparse_variant_and_the_equal_flops_baseline_is_a_point():
    rows = frontier_points(report("channel", 0.9, -20.0, 3.9), "c.json")
    assert [(r["label"], r["cpu_speedup"], r["delta"], r["delta_min"]) for r in rows] == [
        ("channel 0.9", 3.9, -20.0, -25.0), ("dense, 1 epoch/task", 9.0, -30, -33)]


def test_the_narrow_dense_baseline_is_a_dense_point_named_by_its_width():
    r = report("channel", 0.5, -13.0, 3.0)
    r["config"]["narrow_width"] = 16
    r["variants"]["dense-narrow"] = dict(r["variants"]["dense"], acc_delta=-4.0, cpu_ratio=3.2)
    narrow = frontier_points(r, "c.json")[-1]
    assert (narrow["label"], narrow["granularity"], narrow["sparsity"], narrow["delta"]) == (
        "dense, width 16", "dense", 0.0, -4.0)


def test_reports_of_other_configurations_are_not_one_frontier():
    with pytest.raises(InputError, match="width is 64"):
        comparable([("a.json", report("weight", 0.9, -17, 1.2)), ("b.json", report("weight", 0.9, -7, 1.3, 64))])


def test_recalibrated_and_plain_runs_are_not_one_frontier():
    """Each report's deltas are against its own dense arm; recalibration changes that arm too."""
    plain, recal = report("weight", 0.9, -17, 1.2), report("weight", 0.9, -8, 1.2)
    recal["config"]["recalibrate_norms"] = True
    with pytest.raises(InputError, match="recalibrate_norms is True but a.json has False"):
        comparable([("a.json", plain), ("b.json", recal)])  # a report from before the setting reads as False
    plain["config"]["recalibrate_norms"] = False
    comparable([("a.json", plain), ("c.json", report("channel", 0.9, -20, 3.9))])


def test_runs_with_and_without_the_class_mask_are_not_one_frontier():
    """The current-task loss with or without other tasks' logits is another learner, dense arm included."""
    masked, unmasked = report("weight", 0.9, -8, 1.2), report("weight", 0.9, -4, 1.2)
    unmasked["config"]["mask_other_classes"] = False
    with pytest.raises(InputError, match="mask_other_classes is False but a.json has True"):
        comparable([("a.json", masked), ("b.json", unmasked)])  # a report from before the key: the bench's True


def test_main_writes_the_table_and_the_plot_with_the_baseline_once(tmp_path, capsys):
    paths = []
    for name, r in (("w.json", report("weight", 0.9, -17.0, 1.2)), ("c.json", report("channel", 0.9, -20.0, 3.9))):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(r))
    bench = ["bench", "frontier"]
    assert main([*bench, *map(str, paths), "--out", str(tmp_path / "frontier")]) == 0
    rows = list(csv.DictReader((tmp_path / "frontier.csv").open()))
    assert [r["label"] for r in rows] == ["weight 0.9", "dense, 1 epoch/task", "channel 0.9"]
    assert (tmp_path / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    assert main([*bench, str(tmp_path / "missing.json"), "--out", str(tmp_path / "x")]) == 2
    assert "missing.json" in capsys.readouterr().err
    (tmp_path / "list.json").write_text("[1, 2]")
    for bad in ([str(tmp_path / "list.json")], [str(paths[0]), "--target", "2.3"]):
        assert main([*bench, *bad, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("fleet: error:")


def test_labels_of_points_close_together_go_to_separate_lines():
    from fleet.bench.frontier import label_lines

    def point(speed, delta):
        return {"cpu_speedup": speed, "delta": delta}
    rows = [point(1.0, -1.2), point(1.0, -1.3), point(1.02, -1.1), point(2.4, -1.1), point(1.0, -30.0)]
    assert label_lines(rows) == [0, 1, 2, 0, 0]
