"""What every device did, visible: devices.csv's offline and busy counts, the multi-round timeline and the
accuracy-energy-time trade-off plot of a comparison (issue 22, item 7)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
from flwr.app import ConfigRecord

from clients.records import to_arrays
from clients.wire import encode_model
from fleet.run.compare import over_seeds, run_comparison, tradeoff_points, variants
from fleet.world.ledger import OUTCOME_COLUMNS, Ledger, RoundTrace, tracked_devices
from fleet.world.builtin_profiles import get_profile
from fleet.world.profiles import get_budget
from fleet.outputs.plots import plot_timeline_rounds, timeline_bars, tradeoff_stats
from fleet.config import load_scenario
from fleet.world.rounds import DeviceOutcome
from fleet.world.sync_world import SimWorld, is_online
from server.bookkeeping import DeviceReport
from server.strategy import ServerConfig, SparseFedAvg

SEED = 4


def fleet() -> SimWorld:
    """Four Pi 4s, no jitter, no failures, a 10 s deadline: 0 always on and quick (9 s of compute), 1 always
    on and slow (25 s: late, then busy), 2 never on, 3 on at each round with probability 0.5."""
    pi = replace(get_profile("rpi4"), availability_model="always", speed_jitter=0.0, failure_prob=0.0)
    profiles = [pi, pi, replace(pi, availability_model="bernoulli", availability=1e-12),
                replace(pi, availability_model="bernoulli", availability=0.5)]
    return SimWorld(profiles, get_budget("generous"), deadline_s=10.0, keep_first=None, offline_rate_per_s=0.0,
                    seed=SEED)


def play(world: SimWorld, ledger: Ledger, rounds: range, *also: Ledger) -> list[tuple[set, set]]:
    """Rounds as the server runs them (online, then free, sample all of those), booked in the ledger
    (and in `also`); returns each round's (offline, busy) sets."""
    seen = []
    everyone = [0, 1, 2, 3]
    for r in rounds:
        online = world.online(r, everyone)
        free = world.free(online)
        world.plan(r, free, 1000)
        rate = world.profiles[0].train_flops_per_s
        reports = [DeviceReport(d, rate * (25.0 if d == 1 else 9.0), 1000, 1000, 1000) for d in free]
        timing = world.settle(r, reports)
        offline, busy = set(everyone) - set(online), set(online) - set(free)
        for book in (ledger, *also):
            book.add_round(r, timing, reports, set(), offline, busy)
        seen.append((offline, busy))
    return seen


def test_the_ledger_counts_rounds_offline_and_busy_exactly():
    world, ledger = fleet(), Ledger(["rpi4"] * 4)
    seen = play(world, ledger, range(1, 7))
    # device 1 is late in round 1 (until ~25 s) and busy in rounds 2-3 (10-19 s, 19-28 s); sampled again in
    # round 4 (28-38 s), late until ~53 s, busy in rounds 5-6 (38-47 s, 47-56 s)
    assert [sorted(b) for _, b in seen] == [[], [1], [1], [], [1], [1]]
    away = [r for r in range(1, 7) if not is_online(world.profiles[3], SEED, r, 3)]
    assert 0 < len(away) < 6  # the draw keeps device 3 away in some rounds, not all
    assert [sorted(o) for o, _ in seen] == [[2, 3] if r in away else [2] for r in range(1, 7)]
    rows = {r["device"]: r for r in ledger.rows()}
    assert [(rows[d]["offline"], rows[d]["busy"], rows[d]["late"], rows[d]["sampled"]) for d in range(4)] == [
        (0, 0, 0, 6), (0, 4, 2, 2), (6, 0, 0, 0), (len(away), 0, 0, 6 - len(away))]


class NodesOnly:
    """The part of Flower's Grid that configure_train uses once devices are identified."""

    def get_node_ids(self):
        return [100, 101, 102, 103]


def test_the_strategy_hands_the_ledger_who_was_offline_and_who_busy(monkeypatch):
    """What configure_train saw of a real world: device 2 never online, device 1 still finishing a round."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):  # what a ServerApp process has
        monkeypatch.setattr(TaskIdentity, attr, value)
    world = fleet()
    world.busy_until[1] = 30.0
    weights = {"conv.weight": np.array([1.0, 2.0, 0.0, 0.0], np.float32)}
    masks = {"conv.weight": np.array([True, True, False, False])}
    s = SparseFedAvg(ServerConfig(rounds=1, devices_per_round=4, min_available=1, sparsity=0.5,
                                  masked_names=("conv.weight",)), world)
    s.global_weights, s.global_masks, s.devices = weights, masks, {100 + d: d for d in range(4)}
    messages = list(s.configure_train(1, to_arrays(encode_model(weights, masks)), ConfigRecord({}), NodesOnly()))
    away = {3} if not is_online(world.profiles[3], SEED, 1, 3) else set()
    assert s.last_offline == {2} | away and s.last_busy == {1}
    assert len(messages) == 2 - len(away) and s.last_row["busy"] == 1


def outcome(device, status, start, down, compute, up, wait=0.0):
    return DeviceOutcome(device, status, start, start + down + compute + up, compute, down, up, 1.0,
                         link_wait_s=wait)


ROUNDS = [
    RoundTrace(1, 0.0, 10.0, (outcome(0, "ok", 0.0, 1.0, 5.0, 2.0, wait=0.5),
                              outcome(1, "late", 0.0, 1.0, 8.0, 3.0),
                              outcome(3, "failed", 0.0, 0.5, 1.5, 0.0)), offline=(2,)),
    RoundTrace(2, 10.0, 18.0, (outcome(0, "ok", 10.0, 1.0, 4.0, 1.0), outcome(3, "oom", 10.0, 0.0, 0.0, 0.0)),
               offline=(2,), busy=(1,)),
]


def test_the_timeline_draws_each_stretch_where_it_was():
    bars, marks = timeline_bars(ROUNDS)
    assert bars == {
        "offline": [(2, 0.0, 10.0), (2, 10.0, 8.0)],
        "busy": [(1, 10.0, 8.0)],
        "download": [(0, 0.0, 1.0), (1, 0.0, 1.0), (3, 0.0, 0.5), (0, 10.0, 1.0)],
        "compute": [(0, 1.0, 5.0), (1, 1.0, 8.0), (3, 0.5, 1.5), (0, 11.0, 4.0)],
        "upload": [(0, 6.0, 1.5), (1, 9.0, 1.0), (0, 15.0, 1.0)],   # device 1's upload: in time to 10 s, then late
        "link wait": [(0, 7.5, 0.5)],                               # apart from device 0's own-uplink transfer
        "idle": [(0, 8.0, 2.0), (0, 16.0, 2.0), (3, 10.0, 8.0)],    # oom: the whole round
        "late": [(1, 10.0, 2.0)],                                   # past the close: 10 s to 12 s
    }
    assert marks == {"failed": [(3, 2.0)], "declined": [], "oom": [(3, 10.0)]}


def test_the_multi_round_timeline_is_written(tmp_path):
    path = tmp_path / "timeline_rounds.png"
    plot_timeline_rounds(ROUNDS, [0, 1, 2, 3], path, "four devices", {0: "rpi4"}, fleet=4, deadline_s=10.0)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_big_fleet_tracks_each_profile_in_proportion():
    profiles = ["rpi4"] * 90 + ["phone"] * 10
    assert tracked_devices(profiles, 10) == [0, 11, 22, 33, 44, 56, 67, 78, 89, 90]
    assert tracked_devices(profiles[:8], 10) == list(range(8))
    world = fleet()
    ledger = Ledger(["rpi4"] * 4, track=2)
    assert ledger.tracked == [0, 3]
    play(world, ledger, range(1, 5))
    away = [not is_online(world.profiles[3], SEED, r, 3) for r in range(1, 5)]
    # only the tracked devices' outcomes are kept; device 2, offline all along, and busy device 1 are not
    assert [([d.device_id for d in r.devices], r.offline, r.busy) for r in ledger.rounds] == [
        ([0], (3,), ()) if a else ([0, 3], (), ()) for a in away]
    assert [r["offline"] for r in ledger.rows()] == [0, 0, 4, sum(away)]  # the counts cover every device


def test_a_snapshot_keeps_the_counts_and_every_round_of_the_timeline():
    world, straight = fleet(), Ledger(["rpi4"] * 4)
    play(world, straight, range(1, 4))
    resumed = Ledger(["rpi4"] * 4)
    resumed.restore(json.loads(json.dumps(straight.snapshot())))
    assert resumed.rows() == straight.rows() and resumed.rounds == straight.rounds
    assert [r.round for r in resumed.rounds] == [1, 2, 3] and resumed.rows()[1]["busy"] == 2
    play(world, straight, range(4, 7), resumed)  # both book the rounds after it
    assert resumed.snapshot() == json.loads(json.dumps(straight.snapshot()))
    assert [r.round for r in resumed.rounds] == [1, 2, 3, 4, 5, 6] and resumed.rows()[1]["busy"] == 4


def test_an_older_snapshot_without_the_new_fields_restores():
    world, ledger = fleet(), Ledger(["rpi4"] * 4)
    play(world, ledger, range(1, 3))
    old = json.loads(json.dumps(ledger.snapshot()))
    del old["rounds"], old["outcome_columns"]
    for row in old["devices"]:
        del row["offline"], row["busy"]
    restored = Ledger(["rpi4"] * 4)
    restored.restore(old)
    assert [(r["offline"], r["busy"]) for r in restored.rows()] == [(0, 0)] * 4 and restored.rounds == []
    assert restored.rows()[1]["late"] == 1 and restored.timeline is not None
    # a trace written before link_wait_s existed: its outcomes take the default
    then = outcome(0, "ok", 0.0, 1.0, 5.0, 2.0, wait=0.5)
    columns = [c for c in OUTCOME_COLUMNS if c != "link_wait_s"]
    data = {"round": 1, "start_s": 0.0, "close_s": 10.0, "offline": [2], "busy": [],
            "devices": [[getattr(then, c) for c in columns]]}
    assert RoundTrace.from_json(data, columns) == RoundTrace(1, 0.0, 10.0, (replace(then, link_wait_s=0.0),),
                                                             offline=(2,))


def run_summary(accuracy: float, energy: float, time_s: float) -> dict:
    from fleet.run.compare import COLUMNS

    return {**{k: 0 for k in COLUMNS[1:]}, "final_accuracy": accuracy, "energy_j": energy, "sim_time_s": time_s,
            "curve": [[time_s, accuracy, 90.0]]}


def test_a_comparison_writes_its_trade_off_plot_from_the_variants_summaries(tmp_path):
    scenario = load_scenario("scenarios/quickstart.yaml")
    chosen = over_seeds(variants(scenario, ["generous", "tight"], None), [1, 2, 3])
    figures = {("generous", 1): (80.0, 300.0, 50.0), ("generous", 2): (84.0, 320.0, 40.0),
               ("generous", 3): (82.0, 310.0, 60.0), ("tight", 1): (70.0, 100.0, 30.0),
               ("tight", 2): (60.0, 90.0, 35.0), ("tight", 3): (65.0, 95.0, 25.0)}
    rows = run_comparison(scenario, tmp_path / "cmp", chosen,
                   lambda sc, out, label: run_summary(*figures[(sc.timing.budget, sc.seed)]))
    assert (tmp_path / "cmp" / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    points = tradeoff_points(rows, chosen)
    assert {k: [r["profile"] for r in v] for k, v in points.items()} == {
        "generous": ["generous seed=1", "generous seed=2", "generous seed=3"],
        "tight": ["tight seed=1", "tight seed=2", "tight seed=3"]}
    assert tradeoff_stats(points) == {
        "generous": {"final_accuracy": (82.0, 80.0, 84.0), "energy_j": (310.0, 300.0, 320.0),
                     "sim_time_s": (50.0, 40.0, 60.0)},
        "tight": {"final_accuracy": (65.0, 60.0, 70.0), "energy_j": (95.0, 90.0, 100.0),
                  "sim_time_s": (30.0, 25.0, 35.0)}}


def test_without_seeds_each_variant_is_one_point_and_an_untrained_run_none():
    scenario = load_scenario("scenarios/quickstart.yaml")
    chosen = variants(scenario, None, "federation.aggregation=mask-aware,fedavg")
    rows = [{"profile": "aggregation=mask-aware", **run_summary(80.0, 10.0, 5.0)},
            {"profile": "aggregation=fedavg", **run_summary(70.0, 10.0, 5.0), "final_accuracy": None}]
    points = tradeoff_points(rows, chosen)
    assert list(points) == ["aggregation=mask-aware", "aggregation=fedavg"]
    assert tradeoff_stats(points) == {"aggregation=mask-aware": {
        "final_accuracy": (80.0, 80.0, 80.0), "energy_j": (10.0, 10.0, 10.0), "sim_time_s": (5.0, 5.0, 5.0)}}
