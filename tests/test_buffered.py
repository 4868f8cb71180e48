"""The buffered (FedBuff) server's event loop on a hand-made world: order, staleness, drops, reply order."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import pytest
from flwr.app import Message, MetricRecord, RecordDict

from clients.records import from_arrays, to_arrays
from clients.wire import decode_model, encode_model
from server.aggregate import change_of, stale_applied, staleness_weight
from server.buffered import Arrival, BufferConfig, BufferedFedAvg
from server.strategy import ServerConfig

pytestmark = pytest.mark.usefixtures("task_identity")  # Messages need a ServerApp's identity

NAMES = ("conv.weight",)


@dataclass(frozen=True)
class Outcome:
    """The fields of fleet.world.timing.DeviceOutcome the server reads."""

    device_id: int
    status: str
    start_s: float
    end_s: float
    compute_s: float = 1.0
    download_s: float = 0.0
    upload_s: float = 0.0
    energy_j: float = 2.0
    speed_factor: float = 1.0


class FixedTimes:
    """Every device always online; device d's every launch takes seconds[d]; simultaneous arrivals in id order."""

    def __init__(self, seconds: dict[int, float], statuses: dict[int, list[str]] | None = None) -> None:
        self.seconds, self.clock_s = seconds, 0.0
        self.statuses = {d: list(v) for d, v in (statuses or {}).items()}  # per launch, else the report's
        self.flying: dict[int, tuple[float, float, int, str]] = {}  # device -> (arrival, start, dispatch, status)
        self.launched: list[tuple[int, list[int]]] = []
        self.idle = np.zeros(max(seconds) + 1)  # 1 W for every second a device waits, not in flight

    def ready(self, version, limit, exclude=frozenset()):
        return sorted(d for d in self.seconds if d not in self.flying and d not in exclude)[:max(0, limit)]

    def plan(self, dispatch, devices, down_bytes):
        return {d: {} for d in devices}

    def launch(self, dispatch, reports):
        self.launched.append((dispatch, [r.device_id for r in reports]))
        for r in reports:
            queue = self.statuses.get(r.device_id)
            status = queue.pop(0) if queue else r.status
            self.flying[r.device_id] = (self.clock_s + self.seconds[r.device_id], self.clock_s, dispatch, status)

    def next_event(self):
        if not self.flying:
            return None  # nothing in flight: nothing comes (every device is always online)
        device = min(self.flying, key=lambda d: (self.flying[d][0], d))
        time_s = self.flying[device][0]
        self.idle[[d for d in self.seconds if d not in self.flying]] += time_s - self.clock_s
        time_s, start, dispatch, status = self.flying.pop(device)
        self.clock_s = time_s
        return Arrival(device, dispatch, status, time_s, Outcome(device, status, start, time_s))

    def stalled(self):
        return False  # always-online devices: someone could always start

    def idle_energy_j(self):
        return self.idle.copy()


class Devices:
    """The Flower grid, with devices that add (d + 1) to every weight their mask keeps (and to the head)."""

    def __init__(self, nodes: int, shuffle: int | None = None) -> None:
        self.nodes = [100 + d for d in range(nodes)]
        self.shuffle = shuffle
        self.received: list[tuple[int, int, np.ndarray]] = []   # (device, server-round, conv weights)

    def get_node_ids(self):
        return list(self.nodes)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for m in messages:
            device = m.metadata.dst_node_id - 100
            weights, masks = decode_model(from_arrays(m.content["arrays"]))
            self.received.append((device, int(m.content["config"]["server-round"]), weights["conv.weight"].copy()))
            mask = masks["conv.weight"]
            update = {"conv.weight": np.where(mask, weights["conv.weight"] + device + 1, 0).astype(np.float32),
                      "head.bias": (weights["head.bias"] + device + 1).astype(np.float32)}
            replies.append(Message(RecordDict({
                "arrays": to_arrays(encode_model(update, {"conv.weight": mask})),
                "metrics": MetricRecord({"num-examples": 10, "train-flops": 1e6, "task-id": device})}), reply_to=m))
        if self.shuffle is not None:
            random.Random(self.shuffle).shuffle(replies)
        return replies


def initial() -> tuple[dict, dict]:
    return ({"conv.weight": np.array([1.0, 2.0, 0.0, 0.0], np.float32), "head.bias": np.zeros(2, np.float32)},
            {"conv.weight": np.array([True, True, False, False])})


def server(world, *, k: int, bound: int, concurrency: int, devices: int) -> BufferedFedAvg:
    cfg = ServerConfig(rounds=1, devices_per_round=devices, min_available=1, sparsity=0.5, masked_names=NAMES,
                       resparsify=False)
    s = BufferedFedAvg(cfg, world, BufferConfig(k, bound, concurrency), current_task=lambda d, t: int(t // 10))
    s.devices = {100 + d: d for d in range(devices)}
    return s


def run(s: BufferedFedAvg, grid: Devices, versions: int) -> list[dict]:
    seen = []
    s.run(grid, to_arrays(encode_model(*initial())), versions,
          evaluate_fn=lambda v, arrays: seen.append((v, from_arrays(arrays))) or None)
    return seen


def test_with_k_1_and_no_staleness_each_arrival_is_applied_in_order():
    """One device at a time (concurrency 1): every update is fresh, so every version is that update."""
    world = FixedTimes({0: 1.0, 1: 2.0})
    s = server(world, k=1, bound=0, concurrency=1, devices=2)
    grid = Devices(2)
    seen = run(s, grid, 3)
    assert [v for v, _ in seen] == [0, 1, 2, 3]
    conv = [decode_model(flat)[0]["conv.weight"].tolist() for _, flat in seen[1:]]
    assert conv == [[2, 3, 0, 0], [3, 4, 0, 0], [4, 5, 0, 0]]  # device 0 each time: the lowest free id
    assert [(r["version"], r["staleness"], r["weight"], r["status"]) for r in s.arrival_rows] == \
        [(0, 0, 1.0, "ok"), (1, 0, 1.0, "ok"), (2, 0, 1.0, "ok")]
    assert world.clock_s == 3.0 and s.sim_time_s == 3.0
    assert s.last_row["round"] == 3 and s.last_row["sim_start_s"] == 2.0 and s.last_row["sim_time_s"] == 3.0


def test_a_stale_update_is_replayed_onto_the_newest_model_at_its_staleness_weight():
    """Devices 0 (1 s) and 1 (2.5 s) start together from version 0; device 0 makes versions 1 and 2; device 1's
    change (+2 on the kept weights) arrives 2 versions old and moves version 2 by 2 / sqrt(3)."""
    s = server(FixedTimes({0: 1.0, 1: 2.5}), k=1, bound=2, concurrency=2, devices=2)
    seen = run(s, Devices(2), 3)
    v3 = decode_model(seen[-1][1])[0]
    w = 2 / math.sqrt(3)
    np.testing.assert_allclose(v3["conv.weight"], [3 + w, 4 + w, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(v3["head.bias"], [2 + w, 2 + w], rtol=1e-6)
    rows = [(r["device"], r["start_version"], r["staleness"], r["status"]) for r in s.arrival_rows]
    assert rows == [(0, 0, 0, "ok"), (0, 1, 0, "ok"), (1, 0, 2, "ok")]
    assert s.arrival_rows[2]["weight"] == pytest.approx(1 / math.sqrt(3))
    assert s.arrival_rows[2]["staleness_s"] == 2.5


def test_an_update_older_than_the_bound_is_dropped_and_counted_as_wasted():
    s = server(FixedTimes({0: 1.0, 1: 2.5}), k=1, bound=1, concurrency=2, devices=2)
    seen = run(s, Devices(2), 3)
    dropped = [r for r in s.arrival_rows if r["status"] == "late"]
    assert [(r["device"], r["staleness"], r["weight"]) for r in dropped] == [(1, 2, 0.0)]
    assert s.totals.dropped_updates == 1 and s.totals.wasted_train_flops == 1e6
    assert s.totals.accepted_updates == 3
    # versions 1-3 are device 0's three fresh updates: device 1's stale change left no trace
    assert decode_model(seen[-1][1])[0]["conv.weight"].tolist() == [4, 5, 0, 0]


def test_k_updates_fill_the_buffer_before_a_version():
    """K = 2: both devices' first updates (fresh, from version 0) are averaged into version 1."""
    s = server(FixedTimes({0: 1.0, 1: 1.5}), k=2, bound=5, concurrency=2, devices=2)
    seen = run(s, Devices(2), 1)
    v1 = decode_model(seen[-1][1])[0]
    assert v1["conv.weight"].tolist() == [2.5, 3.5, 0, 0]  # v0 + mean(1, 2), equal examples
    # dispatched in the interval: both at t=0, device 0 again at t=1 (from version 0 still)
    assert s.last_row["accepted"] == 2 and s.last_row["sim_time_s"] == 1.5 and s.last_row["sampled"] == 3


def test_the_order_replies_come_back_in_changes_nothing():
    """The engine may return replies in any order: arrivals, versions and weights are the same."""
    def outcome(shuffle):
        s = server(FixedTimes({0: 1.0, 1: 1.0, 2: 3.0}), k=2, bound=3, concurrency=3, devices=3)
        seen = run(s, Devices(3, shuffle=shuffle), 4)
        return s.arrival_rows, [decode_model(flat)[0]["conv.weight"].tolist() for _, flat in seen]

    assert outcome(None) == outcome(1) == outcome(7)


def test_devices_start_from_the_newest_version_with_the_dispatch_as_their_round():
    grid = Devices(2)
    run(server(FixedTimes({0: 1.0, 1: 2.5}), k=1, bound=5, concurrency=2, devices=2), grid, 3)
    assert [(d, r, w.tolist()) for d, r, w in grid.received] == [
        (0, 1, [1, 2, 0, 0]), (1, 1, [1, 2, 0, 0]),   # dispatch 1: both from version 0
        (0, 2, [2, 3, 0, 0]),                          # dispatch 2 at t=1: version 1
        (0, 3, [3, 4, 0, 0])]                          # dispatch 3 at t=2: version 2


@pytest.mark.parametrize("s", [-1, 1.5, True])
def test_staleness_must_be_a_whole_number_of_versions(s):
    from clients.errors import InputError

    with pytest.raises(InputError, match="staleness must be an int >= 0"):
        staleness_weight(s)


def test_staleness_weight_is_one_over_the_root_of_one_plus_s():
    assert [staleness_weight(s) for s in (0, 3, 8)] == [1.0, 0.5, 1 / 3]


def test_a_fresh_update_replayed_is_the_update_itself_to_the_bit():
    rng = np.random.default_rng(0)
    base = {"w": rng.normal(size=50).astype(np.float32)}
    update = {"w": rng.normal(size=50).astype(np.float32)}
    assert np.array_equal(stale_applied(base, change_of(update, base), 1.0)["w"], update["w"])


def test_a_task_the_stream_has_left_is_reported_and_still_counts():
    """Tasks change every 10 s here (current_task); a 12 s update trained on task 0 arrives during task 1."""
    s = server(FixedTimes({0: 12.0}), k=1, bound=0, concurrency=1, devices=1)
    s.devices = {100: 0}
    run(s, Devices(1), 1)
    row = s.arrival_rows[0]
    assert (row["task"], row["task_now"], row["task_current"], row["status"]) == (0, 1, 0, "ok")


def test_each_start_is_one_dispatch_launched_on_the_world():
    world = FixedTimes({0: 1.0})
    s = server(world, k=1, bound=0, concurrency=1, devices=1)
    s.devices = {100: 0}
    run(s, Devices(1), 2)
    assert world.launched == [(1, [0]), (2, [0])]


def test_each_version_books_the_idle_energy_the_world_accrued_over_it():
    """One at a time (concurrency 1): device 0 (1 s) works every version while device 1 waits at 1 W."""
    s = server(FixedTimes({0: 1.0, 1: 2.5}), k=1, bound=0, concurrency=1, devices=2)
    versions = []
    s.run(Devices(2), to_arrays(encode_model(*initial())), 3,
          evaluate_fn=lambda v, arrays: versions.append((s.last_row["idle_energy_j"], s.last_timing.idle_by_device))
          if v else None)
    assert versions == [(1.0, {1: 1.0})] * 3
    assert s.totals.idle_energy_j == 3.0 and s.totals.energy_j == 3 * 2.0  # the worker's bill apart

    import json

    older = {k: v for k, v in s.snapshot().items() if k != "idle_seen"}  # a checkpoint from before idle energy
    for snap in (s.snapshot(), older):  # restored at version 3 with the world's books: the past is not booked twice
        world = FixedTimes({0: 1.0, 1: 2.5})
        world.clock_s, world.idle = s.async_world.clock_s, s.async_world.idle.copy()
        again = server(world, k=1, bound=0, concurrency=1, devices=2)
        again.restore(json.loads(json.dumps(snap)), 3, s.global_weights, s.global_masks)
        again.run(Devices(2), None, 1)
        assert again.totals.idle_energy_j == 3.0 + 1.0


def test_a_run_stopped_at_a_version_and_restored_reaches_the_same_versions():
    """Snapshot after version 2 (device 1 still in flight with its update), restore into a fresh server and
    world state, and run on: the same arrivals and weights as the uninterrupted run."""
    def fresh():
        return server(FixedTimes({0: 1.0, 1: 2.5}), k=1, bound=5, concurrency=2, devices=2)

    whole = fresh()
    seen = run(whole, Devices(2), 4)

    first = fresh()
    run(first, Devices(2), 2)
    snap, arrays = first.snapshot(), first.flight_arrays()
    assert [f["device"] for f in snap["in_flight"]] == [1] and any(k.startswith("1/change/") for k in arrays)
    world = FixedTimes({0: 1.0, 1: 2.5})  # the world's own snapshot is fleet.world.async_world's: copy its state here
    world.clock_s, world.flying = first.async_world.clock_s, dict(first.async_world.flying)
    second = server(world, k=1, bound=5, concurrency=2, devices=2)
    import json

    second.restore(json.loads(json.dumps(snap)), 2, first.global_weights, first.global_masks, arrays)
    rest = []
    second.run(Devices(2), None, 2, evaluate_fn=lambda v, a: rest.append((v, from_arrays(a))) or None)
    assert second.arrival_rows == whole.arrival_rows
    assert [v for v, _ in rest] == [3, 4]
    for (v, flat), (w, expected) in zip(rest, seen[3:]):
        assert v == w and all(np.array_equal(flat[k], expected[k]) for k in expected)


def test_a_device_out_of_memory_waits_for_the_next_version_instead_of_retrying_at_the_same_instant():
    """Device 0 runs out of memory at once, every time: retried at once it would hold the clock at 0 for ever.
    Held back until the next version, it is tried once a version while device 1 makes the versions."""
    world = FixedTimes({0: 0.0, 1: 1.0}, {0: ["oom"] * 10})
    s = server(world, k=1, bound=5, concurrency=2, devices=2)
    run(s, Devices(2), 3)
    assert [(r["device"], r["status"], r["time_s"]) for r in s.arrival_rows if r["device"] == 0] == \
        [(0, "oom", 0.0), (0, "oom", 1.0), (0, "oom", 2.0)]
    assert s.version == 3 and world.clock_s == 3.0


def test_a_fleet_that_declines_every_budget_stops_with_a_note_instead_of_running_for_ever():
    world = FixedTimes({0: 0.5, 1: 0.5}, {0: ["declined"] * 5, 1: ["declined"] * 5})
    s = server(world, k=1, bound=5, concurrency=2, devices=2)
    run(s, Devices(2), 3)
    assert s.version == 0 and len(s.arrival_rows) == 2
    assert any("every device declined its budget or ran out of memory" in n for n in s.totals.notes)
    assert s.totals.declined == 2 and s.totals.energy_j == 4.0  # booked though no version came


def test_work_after_the_last_version_reaches_the_devices_ledger_as_it_reaches_the_totals():
    """A run that stops between versions has no row for its last arrivals: the strategy hands them on, and
    the ledger (devices.csv) books them per device, without a round, adding up to the totals."""
    from fleet.world.ledger import Ledger

    world = FixedTimes({0: 0.5, 1: 0.5}, {0: ["declined"] * 5, 1: ["declined"] * 5})
    s = server(world, k=1, bound=5, concurrency=2, devices=2)
    run(s, Devices(2), 3)
    assert s.unversioned is not None
    ledger = Ledger(["rpi4", "rpi4"])
    ledger.add_work(*s.unversioned)
    assert [(d.sampled, d.declined) for d in ledger.devices] == [(1, 1), (1, 1)] and ledger.rounds == []
    assert math.fsum(d.energy_j for d in ledger.devices) == s.totals.energy_j == 4.0


def test_a_device_arriving_twice_in_a_version_gets_a_row_each_with_its_own_status():
    world = FixedTimes({0: 1.0, 1: 5.0}, {0: ["failed", "ok", "ok"]})
    s = server(world, k=2, bound=5, concurrency=2, devices=2)
    run(s, Devices(2), 1)
    assert [(r["device"], r["status"]) for r in s.last_device_rows] == [(0, "failed"), (0, "ok"), (0, "ok")]
    assert s.last_row["n_failed"] == 1 and s.last_row["accepted"] == 2


def test_each_strategy_asks_for_its_own_world():
    """The buffered server is driven by an AsyncWorld's events, the synchronous one by a World's rounds: handed
    the other kind, the run stops before it starts, naming what it got."""
    from server.app import make_strategy
    from server.strategy import InstantWorld

    config = ServerConfig(rounds=1, devices_per_round=1, min_available=1)
    with pytest.raises(TypeError, match="asynchronous versions need an AsyncWorld, not a InstantWorld"):
        make_strategy(config, InstantWorld(), BufferConfig(1, 1, 1))
    with pytest.raises(TypeError, match="synchronous rounds need a World, not a FixedTimes"):
        make_strategy(config, FixedTimes({0: 1.0}))
    assert make_strategy(config, FixedTimes({0: 1.0}), BufferConfig(1, 1, 1)).async_world is not None
