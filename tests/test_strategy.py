"""The strategy's receive path on hand-made Flower messages (no Ray): validation,
counting, timing hooks and aggregation."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from clients.records import from_arrays, to_arrays
from clients.wire import encode_model
from server.bookkeeping import DeviceReport, RoundTiming
from server.strategy import ServerConfig, SparseFedAvg, arrivals_kept, choose_devices, over_selected, sample_size

pytestmark = pytest.mark.usefixtures("task_identity")  # Messages need a ServerApp's identity

NAMES = ("conv.weight",)


def global_model() -> tuple[dict, dict]:
    weights = {"conv.weight": np.array([1.0, 2.0, 0.0, 0.0], np.float32), "head.bias": np.zeros(2, np.float32)}
    masks = {"conv.weight": np.array([True, True, False, False])}
    return weights, masks


def strategy(**kw) -> SparseFedAvg:
    cfg = ServerConfig(rounds=1, devices_per_round=4, min_available=1, sparsity=0.5, masked_names=NAMES,
                       resparsify=kw.pop("resparsify", False), **kw)
    s = SparseFedAvg(cfg)
    s.global_weights, s.global_masks = global_model()
    s.devices = {100 + d: d for d in range(4)}
    return s


def reply(node: int, flat: dict[str, np.ndarray], n: int = 10) -> Message:
    sent = Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=node, message_type=MessageType.TRAIN)
    return Message(RecordDict({"arrays": to_arrays(flat),
                               "metrics": MetricRecord({"num-examples": n, "train-flops": 1e6})}), reply_to=sent)


def good_update(values, mask) -> dict[str, np.ndarray]:
    return encode_model({"conv.weight": np.array(values, np.float32), "head.bias": np.ones(2, np.float32)},
                        {"conv.weight": np.array(mask)})


def test_bad_updates_are_rejected_and_counted_and_the_round_goes_on():
    s = strategy()
    nan = good_update([np.nan, 1, 0, 0], [True, True, False, False])
    truncated = good_update([5, 5, 0, 0], [True, True, False, False])
    truncated["conv.weight/bitmask"] = truncated["conv.weight/bitmask"][:0]
    wrong_shape = good_update([1, 1, 0, 0], [True, True, False, False])
    wrong_shape["head.bias/dense"] = np.ones(3, np.float32)
    wrong_shape["head.bias/shape"] = np.array([3], np.int64)
    replies = [reply(100, nan), reply(101, truncated), reply(102, wrong_shape),
               reply(103, good_update([7, 0, 9, 0], [True, False, True, False]))]
    arrays, metrics = s.aggregate_train(1, replies)
    assert s.totals.rejected_updates == 3
    assert metrics["rejected"] == 3 and metrics["accepted"] == 1
    assert any("'conv.weight'" in r for r in s.totals.rejections)
    # the one good update: mask-aware average of one client keeps its kept values,
    # entries nobody kept keep the previous global value; the union mask follows it
    assert np.allclose(s.global_weights["conv.weight"], [7, 0, 9, 0])
    assert s.global_masks["conv.weight"].tolist() == [True, False, True, False]


@pytest.mark.parametrize("plain_weight, counted", [("examples", 10), ("in-mask", 10 * 13 / 45)])
def test_plain_dense_update_from_an_ordinary_flower_client_counts_where_the_global_mask_keeps(plain_weight, counted):
    s = strategy(plain_weight=plain_weight)
    plain = {"conv.weight": np.array([4, 4, 4, 4], np.float32), "head.bias": np.ones(2, np.float32)}
    sparse = good_update([2, 0, 0, 0], [True, False, False, False])
    s.aggregate_train(1, [reply(100, plain, n=10), reply(101, sparse, n=30)])
    assert s.totals.rejected_updates == 0
    # "in-mask": its change from [1, 2, 0, 0] is [3, 2, 4, 4], of which the global mask [T, T, F, F] keeps
    # 9 + 4 of 45 squared: its 10 examples count as 10 * 13 / 45, head.bias included (one weight an update)
    assert [r["counted_examples"] for r in s.last_device_rows] == pytest.approx([counted, 30])
    # projected onto the global mask: element 0: (n*4 + 30*2) / (n + 30); element 1 only the plain
    # client kept: 4; elements 2, 3 stay pruned instead of taking the plain client's dense values
    assert np.allclose(s.global_weights["conv.weight"], [(counted * 4 + 60) / (counted + 30), 4, 0, 0])
    assert s.global_masks["conv.weight"].tolist() == [True, True, False, False]


def test_naive_fedavg_shrinks_where_masks_disagree():
    s = strategy(aggregation="fedavg")
    s.aggregate_train(1, [reply(100, good_update([2, 0, 0, 0], [True, False, False, False])),
                          reply(101, good_update([0, 6, 0, 0], [False, True, False, False]))])
    assert np.allclose(s.global_weights["conv.weight"], [1, 3, 0, 0])


def test_resparsify_holds_the_target_density():
    s = strategy(resparsify=True)
    s.aggregate_train(1, [reply(100, good_update([1, 5, 3, 0], [True, True, True, False]))])
    assert s.global_masks["conv.weight"].sum() == 2  # sparsity 0.5 of 4 entries
    assert s.global_weights["conv.weight"].tolist() == [0, 5, 3, 0]


class HalfOnTime:
    """Even device ids make the deadline, odd ones are late."""

    def settle(self, server_round, reports: list[DeviceReport], keep=None) -> RoundTiming:
        ok = {r.device_id for r in reports if r.device_id % 2 == 0 and r.status == "ok"}
        statuses = {r.device_id: "ok" if r.device_id in ok else ("late" if r.status == "ok" else r.status)
                    for r in reports}
        return RoundTiming(frozenset(ok), statuses, 12.5, 3.0, start_s=2.5)


def test_late_devices_are_dropped_and_their_work_is_wasted_not_counted():
    s = strategy()
    s.world = HalfOnTime()
    on_time = good_update([2, 0, 0, 0], [True, False, False, False])
    s.aggregate_train(1, [reply(100, on_time), reply(101, good_update([8, 0, 0, 0], [True, False, False, False]))])
    assert s.totals.dropped_updates == 1
    assert s.sim_time_s == 12.5 and s.last_row["sim_start_s"] == 2.5
    assert s.global_weights["conv.weight"][0] == 2
    # totals exclude the dropped work: only device 100's FLOPs and bytes are useful
    from clients.wire import model_bytes
    assert s.totals.train_flops == 1e6 and s.totals.wasted_train_flops == 1e6
    assert s.totals.upload_bytes == model_bytes(on_time) == s.totals.wasted_upload_bytes
    assert s.last_row["n_ok"] == 1 and s.last_row["n_late"] == 1


def status_reply(node: int, status: str, reason: str = "", flops: float = 5e5) -> Message:
    sent = Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=node, message_type=MessageType.TRAIN)
    return Message(RecordDict({"metrics": MetricRecord({"train-flops": flops, "kernel-flops": 1.8 * flops}),
                               "info": ConfigRecord({"status": status, "reason": reason, "adaptations": ""})}),
                   reply_to=sent)


def test_declined_and_crashed_devices_are_reported_to_the_world_and_counted():
    seen = []

    class Recorder(HalfOnTime):
        def settle(self, server_round, reports, keep=None):
            seen.extend(reports)
            return super().settle(server_round, reports)

    s = strategy()
    s.world = Recorder()
    s.aggregate_train(1, [status_reply(100, "declined", "its compute budget fits no step", flops=0.0),
                          status_reply(101, "failed"),
                          reply(102, good_update([2, 0, 0, 0], [True, False, False, False]))])
    assert [(r.device_id, r.status) for r in seen] == [(0, "declined"), (1, "failed"), (2, "ok")]
    assert seen[1].kernel_flops == 9e5 and seen[1].up_bytes == 0
    assert s.totals.declined == 1 and s.last_row["n_failed"] == 1 and s.last_row["dropped"] == 1
    assert s.totals.train_flops == 1e6 and s.totals.wasted_train_flops == 5e5
    assert any("declined: its compute budget fits no step" in n for n in s.totals.notes)
    assert s.global_weights["conv.weight"][0] == 2


def test_an_empty_round_keeps_the_global_model():
    s = strategy()
    arrays, _ = s.aggregate_train(1, [])
    weights = from_arrays(arrays)
    assert np.array_equal(weights["conv.weight/values"], [1, 2])


@pytest.mark.parametrize("want,online,expected", [(4, 10, 4), (4, 2, 2), (0.5, 10, 5), (0.01, 10, 1)])
def test_sample_size(want, online, expected):
    cfg = ServerConfig(rounds=1, devices_per_round=want, min_available=1)
    assert sample_size(cfg, online) == expected


class OfflineOddWorld:
    """Odd device ids are offline; even ones online, free and given a budget."""

    def online(self, server_round, devices):
        return [d for d in devices if d % 2 == 0]

    def free(self, devices):
        return devices

    def plan(self, server_round, devices, down_bytes):
        return {d: {"compute-flops": 1e9 * (d + 1), "memory-bytes": 2.0**20} for d in devices}


class NodesOnly:
    """The part of Flower's Grid that configure_train uses once devices are identified."""

    def get_node_ids(self):
        return [100, 101, 102, 103]


def test_offline_devices_get_no_message_and_the_rest_their_own_budget():
    s = strategy()
    s.world = OfflineOddWorld()
    arrays = to_arrays(encode_model(*global_model()))
    messages = list(s.configure_train(1, arrays, ConfigRecord({}), NodesOnly()))
    assert sorted(m.metadata.dst_node_id for m in messages) == [100, 102]  # devices 0 and 2
    budgets = {m.metadata.dst_node_id: m.content["config"]["budget-compute-flops"] for m in messages}
    assert budgets == {100: 1e9, 102: 3e9}
    assert s.last_row["n_offline"] == 2 and s.last_row["sampled"] == 2


def test_a_plain_dense_update_is_projected_onto_the_global_mask():
    """Averaged as it came, one dense client would make the re-sparsified mask its own top magnitudes."""
    from server.strategy import project_onto

    rng = np.random.default_rng(0)
    dense = {"conv.weight": rng.standard_normal((8, 4)).astype(np.float32), "fc.bias": np.ones(3, np.float32)}
    mask = rng.random((8, 4)) < 0.2
    weights, masks = project_onto(dense, {"conv.weight": mask}, ("conv.weight",))
    np.testing.assert_array_equal(masks["conv.weight"], mask)
    np.testing.assert_array_equal(weights["conv.weight"], dense["conv.weight"] * mask)
    assert "fc.bias" not in masks and np.array_equal(weights["fc.bias"], dense["fc.bias"])


def test_a_plain_clients_normalisation_statistics_count_for_nothing_in_a_sparse_run():
    """Measured on its dense network, its BatchNorm running statistics do not describe the sparse one."""
    from server.strategy import project_onto

    dense = {"conv.weight": np.ones((2, 2), np.float32), "bn.running_mean": np.full(3, 5.0, np.float32)}
    weights, masks = project_onto(dense, {"conv.weight": np.eye(2, dtype=bool)}, ("conv.weight",),
                                  statistics=("bn.running_mean",))
    assert not masks["bn.running_mean"].any() and not weights["bn.running_mean"].any()
    np.testing.assert_array_equal(weights["conv.weight"], np.eye(2, dtype=np.float32))


@pytest.mark.parametrize("k,factor,available,expected", [
    (10, 1.3, 100, 13),   # 10 x 1.3 is 13.000000000000002 in floating point: still 13
    (3, 1.3, 100, 4), (3, 1.0, 100, 3), (4, 1.5, 5, 5), (2, 2.0, 3, 3), (1, 1.01, 1, 1)])
def test_over_selection_samples_ceil_k_times_the_factor_capped_at_those_available(k, factor, available, expected):
    assert over_selected(k, factor, available) == expected


def test_an_over_selected_round_samples_more_devices_and_keeps_devices_per_round_arrivals():
    import random

    cfg = ServerConfig(rounds=1, devices_per_round=3, min_available=1, over_select=1.3)
    assert len(choose_devices(random.Random(0), list(range(10)), cfg)) == 4
    assert arrivals_kept(cfg, 10) == 3 and arrivals_kept(cfg, 2) == 2 and arrivals_kept(cfg, 0) is None
    plain = ServerConfig(rounds=1, devices_per_round=3, min_available=1)
    assert len(choose_devices(random.Random(0), list(range(10)), plain)) == 3 and arrivals_kept(plain, 10) is None


class KeepRecordingWorld(OfflineOddWorld):
    """Every device online; records what the strategy asks settle to keep."""

    def online(self, server_round, devices):
        return devices

    def settle(self, server_round, reports, keep=None):
        self.keep = keep
        ok = frozenset(r.device_id for r in reports if r.status == "ok")
        return RoundTiming(ok, {r.device_id: "ok" for r in reports}, 1.0, 0.0)


def test_the_strategy_sends_to_the_over_selected_sample_and_asks_the_world_to_keep_the_first_k():
    s = strategy(over_select=1.5)
    s.config = ServerConfig(**{**s.config.__dict__, "devices_per_round": 2})
    s.world = KeepRecordingWorld()
    arrays = to_arrays(encode_model(*global_model()))
    messages = list(s.configure_train(1, arrays, ConfigRecord({}), NodesOnly()))
    assert len(messages) == 3 and s.last_row["sampled"] == 3
    s.aggregate_train(1, [])
    assert s.world.keep == 2


def test_a_reply_whose_arrays_are_not_an_array_record_is_rejected_not_a_crash():
    """A device (or a tampered reply) that puts a ConfigRecord under "arrays": one rejection, and the round
    goes on with the good update."""
    s = strategy()
    sent = Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=100, message_type=MessageType.TRAIN)
    odd = Message(RecordDict({"arrays": ConfigRecord({"conv.weight": 1.0}),
                              "metrics": MetricRecord({"num-examples": 10, "train-flops": 1e6})}), reply_to=sent)
    arrays, metrics = s.aggregate_train(1, [odd, reply(101, good_update([7, 0, 9, 0], [True, False, True, False]))])
    assert metrics["rejected"] == 1 and metrics["accepted"] == 1
    assert any("ArrayRecord" in r for r in s.totals.rejections)
    assert np.allclose(s.global_weights["conv.weight"], [7, 0, 9, 0])


def test_a_failed_reply_without_a_reason_is_counted_as_failed():
    from flwr.app import Error

    s = strategy()
    sent = Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=100, message_type=MessageType.TRAIN)
    failed = Message(Error(code=0, reason=None), reply_to=sent)
    s.aggregate_train(1, [failed, reply(101, good_update([7, 0, 9, 0], [True, False, True, False]))])
    assert s.totals.failed_replies == 1 and any("failed: ?" in r for r in s.totals.rejections)


@pytest.mark.parametrize("metrics", [
    ConfigRecord({"num-examples": "ten", "train-flops": 1e6}),      # a string where a count belongs
    MetricRecord({"num-examples": -3, "train-flops": 1e6}),         # a negative count
    MetricRecord({"num-examples": 10, "train-flops": [1e6, 2e6]}),  # a list where one figure belongs
    MetricRecord({"num-examples": 10, "train-flops": float("nan")}),
    MetricRecord({"num-examples": 10, "train-flops": 1e6, "compute-s": float("inf")}),
    ConfigRecord({"num-examples": 10, "train-flops": 1e6, "task-id": "two"}),
    MetricRecord({"num-examples": 10, "train-flops": 1e6, "norm-batches": [1, 2]}),
    MetricRecord({"num-examples": 10, "train-flops": 1e6, "local-accuracy": float("nan")}),
], ids=["string", "negative", "list", "nan", "inf-measured", "task", "norm-batches", "accuracy"])
def test_a_reply_with_malformed_figures_is_rejected_not_a_crash(metrics):
    """A device's figures are booked (time, energy, the average's weights): one that is not a finite number
    >= 0 rejects its reply, names the figure, and the round goes on with the good update."""
    s = strategy()
    sent = Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=100, message_type=MessageType.TRAIN)
    odd = Message(RecordDict({"arrays": to_arrays(good_update([5, 5, 0, 0], [True, True, False, False])),
                              "metrics": metrics}), reply_to=sent)
    arrays, out = s.aggregate_train(1, [odd, reply(101, good_update([7, 0, 9, 0], [True, False, True, False]))])
    assert out["rejected"] == 1 and out["accepted"] == 1
    assert any("device 0" in r and "must be a finite number >= 0" in r for r in s.totals.rejections)
    assert np.allclose(s.global_weights["conv.weight"], [7, 0, 9, 0])


def test_a_declined_reply_with_malformed_figures_is_rejected_not_a_crash():
    s = strategy()
    sent = Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=100, message_type=MessageType.TRAIN)
    odd = Message(RecordDict({"info": ConfigRecord({"status": "declined", "reason": "budget"}),
                              "metrics": ConfigRecord({"train-flops": "lots"})}), reply_to=sent)
    arrays, out = s.aggregate_train(1, [odd, reply(101, good_update([7, 0, 9, 0], [True, False, True, False]))])
    assert out["rejected"] == 1 and any("'train-flops'" in r for r in s.totals.rejections)


class Answers:
    """A grid whose nodes answer the device query with the device ids given (node -> id)."""

    def __init__(self, answers: dict):
        self.answers = answers

    def get_node_ids(self):
        return list(self.answers)

    def send_and_receive(self, messages, timeout=None):
        return [Message(RecordDict({"metrics": ConfigRecord({"device-id": self.answers[m.metadata.dst_node_id]})}),
                        reply_to=m) for m in messages]


def test_a_node_claiming_an_impossible_device_id_is_a_plain_client_not_a_crash():
    """A device id that is not an integer in the fleet's range cannot be the device's: the node is treated as
    one that cannot say (the next free id, dense arrays, a note saying why)."""
    s = SparseFedAvg(ServerConfig(rounds=1, devices_per_round=4, min_available=1, devices=4))
    s._identify(Answers({100: 0, 101: "abc", 102: 99, 103: -1}), {100, 101, 102, 103})
    assert s.devices == {100: 0, 101: 3, 102: 2, 103: 1} and s.plain == {1, 2, 3}
    assert any("device 3 is a plain Flower client (its device query got 'abc', not a device id in [0, 4))" in n
               for n in s.totals.notes)
