"""fleet's glue: rounds.csv survives an interruption, plots, compare variants, the simpy World."""

from __future__ import annotations

import csv

import pytest

from clients.errors import InputError
from fleet.run.compare import SEED_METRICS, format_paired, over_seeds, paired_over_seeds, parse_vary, variants
from fleet.world.builtin_profiles import get_profile
from fleet.world.profiles import get_budget
from fleet.outputs import RoundsCsv, plot_accuracy, plot_bytes
from fleet.run.runner import learning_metrics
from fleet.config import load_scenario
from fleet.world import SimWorld
from server.bookkeeping import DeviceReport


def test_rounds_csv_holds_every_finished_round_at_once(tmp_path):
    path = tmp_path / "rounds.csv"
    log = RoundsCsv(path, ["round", "class_il_accuracy"])
    log.append({"round": 1, "class_il_accuracy": 50.0, "extra": "ignored"})
    assert list(csv.DictReader(path.open())) == [{"round": "1", "class_il_accuracy": "50.0"}]
    log.append({"round": 2, "class_il_accuracy": 75.0})
    assert len(list(csv.DictReader(path.open()))) == 2  # readable mid-run, before any close


def test_plots_are_written(tmp_path):
    rows = [{"round": r, "class_il_accuracy": 50.0 + r, "acc_task_0": 90.0, "upload_bytes": 1e6,
             "download_bytes": 2e6} for r in (1, 2, 3)]
    plot_accuracy(rows, 5, tmp_path / "a.png", "t")
    plot_bytes(rows, tmp_path / "b.png", "t")
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "b.png").stat().st_size > 1000


def _row(accs, tils):
    return {"tasks_reached": len(accs), "class_il_accuracy": sum(accs) / len(accs),
            "task_il_accuracy": sum(tils) / len(tils),
            **{f"acc_task_{t}": a for t, a in enumerate(accs)}, **{f"til_task_{t}": a for t, a in enumerate(tils)}}


def test_learning_metrics_of_a_fleet_under_both_forgetting_definitions():
    rows = [_row([90.0], [95.0]),
            _row([80.0, 70.0], [96.0, 90.0]),
            _row([60.0, 75.0, 99.0], [97.0, 80.0, 99.0])]
    m = learning_metrics(rows, last_k=2)
    # ours: best before the final round minus final; task 1 ends above its best: -5
    assert m["forgetting"] == pytest.approx(((90 - 60) + (70 - 75)) / 2)
    # the authors' (mammoth): best over every round, final included, so never below 0
    assert m["forgetting_authors"] == pytest.approx(((90 - 60) + 0) / 2)
    assert m["forgetting_task_il"] == pytest.approx(((96 - 97) + (90 - 80)) / 2)
    assert m["forgetting_authors_task_il"] == pytest.approx((0 + 10) / 2)
    # each task in the last round while it was the newest
    assert m["learning_accuracy"] == pytest.approx((90 + 70 + 99) / 3)
    assert m["learning_accuracy_task_il"] == pytest.approx((95 + 90 + 99) / 3)
    assert m["final_accuracy"] == pytest.approx(78.0) and m["final_accuracy_task_il"] == pytest.approx(92.0)
    assert m["last_k_accuracy"] == pytest.approx((75.0 + 78.0) / 2) and m["last_k"] == 2


def test_compare_variants_are_validated_before_anything_runs():
    scenario = load_scenario("scenarios/quickstart.yaml")
    assert parse_vary("sparcl.enabled=true,false") == ("sparcl.enabled", [True, False])
    chosen = variants(scenario, None, "federation.aggregation=mask-aware,fedavg")
    assert [v.federation.aggregation for v in chosen.values()] == ["mask-aware", "fedavg"]
    assert list(variants(scenario, ["tight"], None)) == ["tight"]
    with pytest.raises(InputError, match="timing.budget"):
        variants(scenario, ["nope"], None)
    with pytest.raises(InputError, match="--vary"):
        parse_vary("no-equals-sign")


def test_compare_over_seeds_pairs_each_variant_with_the_first_seed_by_seed():
    scenario = load_scenario("scenarios/quickstart.yaml")
    labels = variants(scenario, None, "fleet.stock_clients=0,1")
    chosen = over_seeds(labels, [3, 7])
    assert list(chosen) == ["stock_clients=0 seed=3", "stock_clients=1 seed=3",
                            "stock_clients=0 seed=7", "stock_clients=1 seed=7"]
    assert [c.seed for c in chosen.values()] == [3, 3, 7, 7]
    assert [c.fleet.stock_clients for c in chosen.values()] == [0, 1, 0, 1]
    accuracy = {"stock_clients=0 seed=3": 90.0, "stock_clients=1 seed=3": 85.0,
                "stock_clients=0 seed=7": 70.0, "stock_clients=1 seed=7": 72.0}
    rows = [{"profile": k, **dict.fromkeys(SEED_METRICS, 1.0), "final_accuracy": a,
             "curve": [[0.0, 50.0, 90.0], [10.0, a, 95.0]]} for k, a in accuracy.items()]
    summary = paired_over_seeds(rows, list(labels), [3, 7])
    base, stock = ({r["variant"]: r for r in summary if r["metric"] == "final_accuracy"}[v] for v in labels)
    assert base["delta_median"] == 0.0 and base["median"] == 80.0
    # paired: -5 under seed 3, +2 under seed 7 (unpaired medians would say -1.5 as well, but not the spread)
    assert (stock["delta_median"], stock["delta_min"], stock["delta_max"]) == (-1.5, -5.0, 2.0)
    assert (stock["min"], stock["max"]) == (72.0, 85.0)
    # two seeds: resampled medians are -5, -1.5 or +2, so the 95% interval spans both; the sign flips
    assert (stock["delta_ci_low"], stock["delta_ci_high"], stock["delta_same_sign"]) == (-5.0, 2.0, False)
    same = {r["variant"]: r for r in summary if r["metric"] == "energy_j"}["stock_clients=1"]
    assert same["delta_median"] == 0.0 and not same["delta_same_sign"]  # no difference is no effect
    assert "Task-IL, final %" in format_paired(summary)


def test_the_world_drops_late_and_out_of_memory_devices():
    profile = get_profile("rpi4")
    world = SimWorld([profile, profile, profile], get_budget("generous"), deadline_s=10.0, keep_first=None,
                     offline_rate_per_s=0.0, seed=0)
    fast = profile.train_flops_per_s * 1.0      # one second of compute
    slow = profile.train_flops_per_s * 60.0     # a minute: misses the 10 s deadline
    huge = int(profile.memory_mb * 2**20 * 2)   # twice the device's memory
    world.plan(1, [0, 1, 2], 1000)
    timing = world.settle(1, [DeviceReport(0, fast, 1000, 1000, 1000),
                              DeviceReport(1, slow, 1000, 1000, 1000),
                              DeviceReport(2, fast, 1000, 1000, huge)])
    assert timing.accepted == frozenset({0})
    assert timing.statuses == {0: "ok", 1: "late", 2: "oom"}
    assert timing.sim_time_s == pytest.approx(10.0) and world.clock_s == pytest.approx(10.0)
    assert timing.energy_j > 0


def test_a_device_busy_past_the_deadline_is_not_sampled_until_it_is_free():
    profile = get_profile("rpi4")
    world = SimWorld([profile, profile], get_budget("generous"), deadline_s=10.0, keep_first=None,
                     offline_rate_per_s=0.0, seed=0)
    minute, nine = profile.train_flops_per_s * 60.0, profile.train_flops_per_s * 9.0
    world.plan(1, [0, 1], 1000)
    world.settle(1, [DeviceReport(0, nine, 1000, 1000, 1000), DeviceReport(1, minute, 1000, 1000, 1000)])
    assert world.busy_until[1] == pytest.approx(60.0 + 2 * (0.005 + 8000 / 940e6), rel=1e-6)
    rounds_without_1 = 0
    for server_round in range(2, 12):  # device 0 alone, about 9 s a round
        free = world.free(world.online(server_round, [0, 1]))
        if 1 in free:
            break
        assert world.clock_s < world.busy_until[1]
        rounds_without_1 += 1
        world.plan(server_round, [0], 1000)
        world.settle(server_round, [DeviceReport(0, nine, 1000, 1000, 1000)])
    assert rounds_without_1 == 6 and world.clock_s >= world.busy_until[1]  # 10 s + 6 x 9 s >= 60 s


def test_each_device_is_told_its_budget_after_the_budget_profile():
    rpi4 = get_profile("rpi4")
    tight = get_budget("tight")
    world = SimWorld([rpi4], tight, deadline_s=None, keep_first=None, offline_rate_per_s=0.0, seed=0)
    told = world.plan(1, [0], 10**6)[0]
    assert told["memory-bytes"] == pytest.approx(rpi4.memory_mb * tight.memory_scale * 2**20)
    assert told["gflops"] == pytest.approx(rpi4.train_flops_per_s * tight.compute_scale / 1e9)
    assert told["deadline-s"] == tight.deadline_s
    transfer = 0.005 + 8e6 / (rpi4.downlink_mbps * tight.bandwidth_scale * 1e6)
    assert told["download-s"] == pytest.approx(transfer)
    # the compute that fits before the deadline after the download and the expected upload
    assert told["compute-flops"] == pytest.approx((tight.deadline_s - 2 * transfer) * rpi4.train_flops_per_s
                                                  * tight.compute_scale)


def test_availability_and_failures_do_not_depend_on_who_else_is_asked():
    phone = get_profile("phone")  # online half the time
    world = SimWorld([phone] * 40, get_budget("generous"), deadline_s=None, keep_first=None,
                     offline_rate_per_s=0.01, seed=3)
    everyone = world.online(5, list(range(40)))
    assert 5 < len(everyone) < 35
    assert world.online(5, list(range(0, 40, 2))) == [d for d in everyone if d % 2 == 0]
    assert world.online(5, list(reversed(range(40)))) == list(reversed(everyone))
    a = world.plan(5, list(range(40)), 10**6)
    b = world.plan(5, list(reversed(range(40))), 10**6)
    assert a == b and any("fail-after-flops" in v for v in a.values())


def test_shuffling_the_reply_order_leaves_the_timeline_unchanged():
    profile = get_profile("rpi4")
    reports = [DeviceReport(d, profile.train_flops_per_s * (d + 1), 10**6, 10**6, 1000, status=status)
               for d, status in enumerate(["ok", "ok", "declined", "ok", "failed", "ok", "ok", "ok"])]

    def timeline(order):
        world = SimWorld([profile] * 8, get_budget("generous"), deadline_s=6.0, keep_first=4,
                         offline_rate_per_s=0.05, seed=11)
        world.plan(1, list(range(8)), 10**6)
        timing = world.settle(1, [reports[i] for i in order])
        return timing, world.busy_until

    first = timeline(range(8))
    for order in ([7, 6, 5, 4, 3, 2, 1, 0], [3, 0, 6, 1, 7, 2, 5, 4]):
        assert timeline(order) == first


def test_compare_with_seeds_writes_the_paired_table(tmp_path, monkeypatch, capsys):
    """The CLI glue around over_seeds: one run per variant and seed, then paired.csv (runs faked here:
    the runs themselves are the e2e tests' business)."""
    import fleet.cli
    import fleet.cli.commands
    from fleet.run.compare import COLUMNS

    ran = []

    def fake_run(scenario, out_dir, *, desc, **_):
        ran.append((desc, scenario.seed))
        out_dir.mkdir(parents=True)
        accuracy = 90.0 - 4.0 * scenario.fleet.stock_clients + scenario.seed
        return {**{k: 0 for k in COLUMNS[1:]}, "final_accuracy": accuracy, "forgetting": 1.0,
                "curve": [[0.0, accuracy, 90.0]]}

    monkeypatch.setattr(fleet.cli.commands, "run_with_progress", fake_run)
    code = fleet.cli.main(["compare", "scenarios/mixed_fleet.yaml", "--vary", "fleet.stock_clients=0,1",
                           "--seeds", "1,2", "--out", str(tmp_path / "cmp"), "--quiet"])
    assert code == 0 and [seed for _, seed in ran] == [1, 1, 2, 2]
    rows = [r for r in csv.DictReader((tmp_path / "cmp" / "paired.csv").open()) if r["metric"] == "final_accuracy"]
    assert [(r["variant"], float(r["delta_median"])) for r in rows] == [("stock_clients=0", 0.0),
                                                                        ("stock_clients=1", -4.0)]
    assert "-4.00 [-4.00, -4.00]*" in capsys.readouterr().out  # the same sign on both seeds
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 0
    assert fleet.cli.main(["compare", "scenarios/mixed_fleet.yaml", "--seeds", "1,x"]) == 2


def test_compare_resume_keeps_complete_runs_of_the_same_scenario(tmp_path, monkeypatch):
    """--resume reads a variant's complete run instead of running it again; a stopped run, or one of
    another scenario, runs again."""
    import json

    import yaml

    import fleet.cli
    import fleet.cli.commands
    from fleet.run.compare import COLUMNS

    ran = []

    def fake_run(scenario, out_dir, *, desc, **_):
        ran.append(desc)
        out_dir.mkdir(parents=True, exist_ok=True)
        summary = {**{k: 0 for k in COLUMNS[1:]}, "final_accuracy": 50.0, "status": "complete",
                   "curve": [[0.0, 50.0, 90.0]]}
        (out_dir / "summary.json").write_text(json.dumps(summary))
        (out_dir / "scenario.yaml").write_text(yaml.safe_dump(scenario.to_dict(), sort_keys=False))
        return summary

    monkeypatch.setattr(fleet.cli.commands, "run_with_progress", fake_run)
    args = ["compare", "scenarios/mixed_fleet.yaml", "--vary", "fleet.stock_clients=0,1", "--seeds", "1,2",
            "--out", str(tmp_path / "cmp"), "--quiet"]
    assert fleet.cli.main(args) == 0 and len(ran) == 4
    stopped = tmp_path / "cmp" / "stock_clients_1_seed_2" / "summary.json"
    stopped.write_text(json.dumps({**json.loads(stopped.read_text()), "status": "interrupted"}))
    ran.clear()
    assert fleet.cli.main([*args, "--resume"]) == 0
    assert ran == ["stock_clients=1 seed=2"]
    ran.clear()
    assert fleet.cli.main([*args, "--resume", "--set", "seed=0"]) == 0  # --seeds sets it anyway: same runs
    assert ran == []
    assert fleet.cli.main([*args, "--resume", "--set", "train.lr=0.2"]) == 0  # another scenario: all again
    assert len(ran) == 4


def test_a_paired_difference_within_float_rounding_is_no_difference():
    from fleet.stats import paired_difference

    same = paired_difference([390.79 + 1e-12, 390.79 + 2e-12], [390.79, 390.79])
    assert same["median"] == 0.0 and not same["same_sign"]
    real = paired_difference([1.0, 2.0, 3.0], [0.5, 1.5, 2.0])
    assert real["same_sign"] and real["median"] == 0.5 and (real["min"], real["max"]) == (0.5, 1.0)


def test_compare_takes_accuracy_at_the_time_every_run_of_a_seed_reached_and_time_to_the_first_ones_final():
    """Seed 3: sync ends at 100 s with 60%, async runs to 150 s; at 100 s async had 65% (its evaluation at
    90 s) and it first reached sync's 60% at 60 s. Seed 7: async ends first (80 s), so sync is read at 80 s;
    async never reaches sync's final 70%."""
    from fleet.run.compare import common_time_figures, first_time, value_at

    scenario = load_scenario("scenarios/quickstart.yaml")
    chosen = over_seeds(variants(scenario, None, "federation.aggregation=mask-aware,fedavg"), [3, 7])
    curves = [[[0, 10, 50], [50, 40, 80], [100, 60, 90]], [[0, 10, 50], [60, 62, 85], [90, 65, 88], [150, 70, 90]],
              [[0, 10, 50], [40, 50, 70], [120, 70, 95]], [[0, 10, 50], [80, 55, 75]]]
    rows = [{"profile": label, "sim_time_s": c[-1][0], "final_accuracy": c[-1][1], "curve": c}
            for label, c in zip(chosen, curves)]
    common_time_figures(rows, chosen)
    got = [(r["common_s"], r["class_il_at_common_s"], r["task_il_at_common_s"], r["time_to_reference_s"])
           for r in rows]
    assert got == [(100, 60.0, 90.0, 100.0), (100, 65.0, 88.0, 60.0), (80, 50.0, 70.0, 120.0), (80, 55.0, 75.0, None)]
    assert value_at([[5, 20, 30]], 4, 1) is None and first_time([[5, None, 30]], 0) is None


def test_compare_variants_can_be_named_one_name_each():
    from clients.errors import InputError
    from fleet.run import named

    scenario = load_scenario("scenarios/quickstart.yaml")
    chosen = variants(scenario, None, "federation.aggregation=mask-aware,fedavg")
    renamed = named(chosen, "aware, naive")
    assert list(renamed) == ["aware", "naive"] and list(renamed.values()) == list(chosen.values())
    for bad in ("one", "a,a", "a,", "a,b seed=1"):
        with pytest.raises(InputError, match="--labels"):
            named(chosen, bad)


def test_the_time_to_an_accuracy_is_read_over_the_whole_stream(tmp_path):
    """An early round scores high over the one task seen by then: it does not count as reaching the target."""
    from fleet.run.compare import common_time_figures, full_stream_curve

    (tmp_path / "rounds.csv").write_text("round,sim_time_s,class_il_accuracy,tasks_reached\n"
                                         "1,10,95.0,1\n2,20,50.0,2\n3,30,40.0,2\n4,40,48.0,2\n")
    assert full_stream_curve(tmp_path) == [[20.0, 50.0], [30.0, 40.0], [40.0, 48.0]]
    assert full_stream_curve(tmp_path / "absent") == []
    scenario = load_scenario("scenarios/quickstart.yaml")
    chosen = variants(scenario, None, "federation.aggregation=mask-aware,fedavg")
    rows = [{"profile": label, "sim_time_s": 40, "final_accuracy": acc, "curve": [[10, 95.0, 99], [40, acc, 90]],
             "full_curve": full} for label, acc, full in zip(chosen, (48.0, 45.0), (
                 full_stream_curve(tmp_path), [[20.0, 30.0], [35.0, 49.0]]))]
    common_time_figures(rows, chosen)
    assert [r["time_to_reference_s"] for r in rows] == [20.0, 35.0]  # 50 >= 48 at 20 s; the 95 at 10 s is not
