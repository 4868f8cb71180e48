"""Plain Flower on both sides, in one process with the real ClientApps (no Ray): a stock
ClientApp (clients.stock, as Flower's quickstart writes one) among SparCL devices is
identified by its missing query handler, gets dense arrays a strict `load_state_dict`
takes, and its full `state_dict()` comes back projected onto the global mask."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import yaml
from flwr.app import ConfigRecord, Context, Error, Message, RecordDict

from clients import stock
from clients.app import make_client_app
from clients.device import DeviceSpec
from clients.records import from_arrays, to_arrays
from clients.sparcl.learner import Learner
from clients.wire import decode_model, encode_model
from fleet.run.runner import device_spec, server_config
from fleet.config import parse_scenario
from server.strategy import SparseFedAvg

pytestmark = pytest.mark.usefixtures("task_identity")  # Messages need a ServerApp's identity

SCENARIO = """
name: plain
dataset: {name: digits, n_tasks: 5, max_per_class: 20}
fleet: {devices: 4, stock_clients: 1}
train: {local_epochs: 1, batch_size: 16, width: 8}
stream: {rounds_per_task: 1}
federation: {rounds: 1, devices_per_round: 4, min_available: 4}
"""


class InProcessGrid:
    """Nodes 100..103 are devices 0..3, each running the mixed ClientApp as a SuperNode would:
    an exception in the app becomes an error reply."""

    def __init__(self, app, devices: int) -> None:
        self.app = app
        self.contexts = {100 + d: Context(run_id=1, node_id=100 + d, state=RecordDict(), run_config={},
                                          node_config={"partition-id": d, "num-partitions": devices})
                         for d in range(devices)}

    def get_node_ids(self):
        return list(self.contexts)

    def deliver(self, msg: Message) -> Message:
        try:
            return self.app(msg, self.contexts[msg.metadata.dst_node_id])
        except Exception as err:  # what the SuperNode sends back
            return Message(Error(code=0, reason=f"{type(err).__name__}: {err}"), reply_to=msg)

    def send_and_receive(self, messages, timeout=None):
        return [self.deliver(m) for m in messages]


@pytest.fixture
def fleet(tmp_path):
    scenario = parse_scenario(yaml.safe_load(SCENARIO))
    spec = device_spec(scenario)
    learner = Learner(spec.learner, (1, 8, 8), 10)
    config = server_config(scenario, spec, learner)
    strategy = SparseFedAvg(config)
    grid = InProcessGrid(make_client_app(str(tmp_path), scenario.fleet.stock_devices()), scenario.fleet.devices)
    initial = to_arrays(encode_model(learner.weights_numpy(), learner.masks_numpy()))
    return strategy, grid, initial, learner


def test_the_stock_client_is_identified_and_sent_arrays_its_strict_load_state_dict_takes(fleet):
    strategy, grid, initial, learner = fleet
    messages = {m.metadata.dst_node_id: m for m in strategy.configure_train(1, initial, ConfigRecord({}), grid)}
    assert strategy.devices == {100: 0, 101: 1, 102: 2, 103: 3} and strategy.plain == {3}
    assert any("device 3 is a plain Flower client" in n for n in strategy.totals.notes)
    plain = messages[103].content
    assert set(plain["arrays"]) == set(learner.model.state_dict())  # BatchNorm counters included
    assert "budget-compute-flops" not in plain["config"] and plain["config"]["lr"] == pytest.approx(0.03)
    assert all("/" in k for k in messages[100].content["arrays"])  # SparCL devices keep the wire format
    # the stock app loads it strictly (it raises on any missing or unexpected key) and trains
    reply = grid.deliver(messages[103])
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    assert "num_batches_tracked" in "".join(reply.content["arrays"])


@pytest.mark.parametrize("resparsify", [True, False])
def test_a_full_state_dict_comes_back_projected_onto_the_global_mask(fleet, resparsify):
    strategy, grid, initial, _ = fleet
    strategy.config = replace(strategy.config, resparsify=resparsify)
    messages = list(strategy.configure_train(1, initial, ConfigRecord({}), grid))
    replies = [grid.deliver(m) for m in messages]
    assert not any(r.has_error() for r in replies)
    kept = {n: strategy.global_masks[n].copy() for n in strategy.config.masked_names}
    for r in replies:  # what the SparCL devices kept (TDM regrows within the round)
        if r.metadata.src_node_id != 103:
            _, masks = decode_model(from_arrays(r.content["arrays"]))
            kept = {n: kept[n] | masks[n] for n in kept}
    strategy.aggregate_train(1, replies)
    assert strategy.totals.rejected_updates == 0 and strategy.last_row["accepted"] == 4
    for name in strategy.config.masked_names:
        mask = strategy.global_masks[name]
        if resparsify:
            assert mask.mean() == pytest.approx(0.1, abs=0.01)  # the target density
        assert not np.any(mask & ~kept[name])  # no weight that only the dense stock client trained


def test_the_stock_client_trains_pruned_weights_which_the_projection_drops(fleet):
    """Unprojected, its dense magnitudes would pick the re-sparsified mask (issue 9: 96.8% to 6.5%)."""
    import server.strategy as strategy_module

    strategy, grid, initial, _ = fleet
    messages = list(strategy.configure_train(1, initial, ConfigRecord({}), grid))
    replies = [grid.deliver(m) for m in messages]
    stock_reply = next(r for r in replies if r.metadata.src_node_id == 103)
    dense = {k: a.numpy() for k, a in stock_reply.content["arrays"].items()}
    projected, _ = strategy_module.project_onto(dense, strategy.global_masks, strategy.config.masked_names)
    for name in strategy.config.masked_names:
        mask = strategy.global_masks[name]
        assert np.count_nonzero(dense[name][~mask]) > 0          # it trains pruned weights...
        assert np.count_nonzero(projected[name][~mask]) == 0     # ...which the projection drops


@pytest.mark.parametrize("plain_weight", ["in-mask", "examples"])
def test_the_stock_update_counts_for_the_share_of_its_change_the_sparse_model_keeps(fleet, plain_weight):
    strategy, grid, initial, _ = fleet
    strategy.config = replace(strategy.config, plain_weight=plain_weight)
    replies = [grid.deliver(m) for m in strategy.configure_train(1, initial, ConfigRecord({}), grid)]
    accepted, _ = strategy._collect(1, replies)
    stock, sparcl = accepted[-1], accepted[:-1]
    share, examples = stock.metrics["in-mask-share"], stock.metrics["num-examples"]
    assert stock.device_id == 3 and 0.0 < share < 1.0  # it trained pruned weights too
    expected = examples * share if plain_weight == "in-mask" else examples
    assert stock.n_examples == pytest.approx(expected) and expected <= examples
    assert all(a.n_examples == a.metrics["num-examples"] for a in sparcl)  # SparCL updates count as sent


def test_our_client_app_under_stock_fedavg_says_what_it_needs():
    """The other direction: a stock strategy's message gets one clear message, not a KeyError."""
    app = make_client_app()
    msg = Message(RecordDict({"arrays": to_arrays({}), "config": ConfigRecord({"lr": 0.1})}), dst_node_id=1,
                  message_type="train")
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
    with pytest.raises(ValueError, match="needs the sparcl-fleet server"):
        app(msg, context)


def test_the_stock_client_reads_the_spec_the_server_sends():
    spec = DeviceSpec.from_json(device_spec(parse_scenario(yaml.safe_load(SCENARIO))).to_json())
    loader = stock.load_data(spec, 3, 1, batch_size=16)
    assert len(loader.dataset) > 0 and set(loader.dataset.tensors[1].tolist()) <= {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}


def test_each_device_round_puts_what_the_device_measured_next_to_the_model(fleet):
    strategy, grid, initial, _ = fleet
    grid.contexts[101].node_config["real"] = "true"  # device 1 runs on its own hardware
    messages = list(strategy.configure_train(1, initial, ConfigRecord({}), grid))
    strategy.aggregate_train(1, [grid.deliver(m) for m in messages])
    rows = {r["device"]: r for r in strategy.last_device_rows}
    assert strategy.real == {1} and [rows[d]["real"] for d in range(4)] == [0, 1, 0, 0]
    assert [rows[d]["client"] for d in range(4)] == ["sparcl"] * 3 + ["stock"]
    for d in range(3):
        assert rows[d]["measured_compute_s"] > 0 and rows[d]["measured_peak_rss_bytes"] > 2**20
        assert rows[d]["estimated_peak_memory_bytes"] > 0 and rows[d]["up_bytes"] > 0
    assert rows[3]["measured_compute_s"] is None  # a stock client measures nothing
    assert rows[3]["down_bytes"] > rows[0]["down_bytes"]  # it got the dense model


class SilentQueryGrid(InProcessGrid):
    """A grid on which a query gets no reply at all (what the simulation engine may do with the error of
    an app without a query handler), while training messages are delivered."""

    def send_and_receive(self, messages, timeout=None):
        return [self.deliver(m) for m in messages if m.metadata.message_type != "query"]


@pytest.mark.parametrize("grid_type", [InProcessGrid, SilentQueryGrid])
def test_a_whole_fleet_of_plain_client_apps_is_identified_and_its_updates_accepted(tmp_path, grid_type):
    """Flower's own kind of ClientApp (train handler only) as the ClientApp of every node: an error reply
    to the device query, or no reply at all, both mean 'cannot say', so every node gets dense arrays."""
    scenario = parse_scenario(yaml.safe_load(SCENARIO.replace("stock_clients: 1", "stock_clients: 0")))
    spec = device_spec(scenario)
    learner = Learner(spec.learner, (1, 8, 8), 10)
    strategy = SparseFedAvg(server_config(scenario, spec, learner))
    grid = grid_type(stock.app, 4)
    initial = to_arrays(encode_model(learner.weights_numpy(), learner.masks_numpy()))
    messages = list(strategy.configure_train(1, initial, ConfigRecord({}), grid))
    assert strategy.plain == {0, 1, 2, 3} and sorted(strategy.devices.values()) == [0, 1, 2, 3]
    why = "got no reply" if grid_type is SilentQueryGrid else "got an error"
    assert sum(f"is a plain Flower client (its device query {why})" in n for n in strategy.totals.notes) == 4
    assert all("/" not in k for m in messages for k in m.content["arrays"])  # dense names, no wire format
    replies = [grid.deliver(m) for m in messages]
    assert not any(r.has_error() for r in replies)
    strategy.aggregate_train(1, replies)
    t = strategy.totals
    assert (strategy.last_row["accepted"], t.accepted_updates, t.failed_replies, t.rejected_updates) == (4, 4, 0, 0)
    assert not t.every_reply_failed


def test_a_run_whose_every_reply_failed_says_so(fleet):
    strategy, grid, initial, _ = fleet
    messages = list(strategy.configure_train(1, initial, ConfigRecord({}), grid))
    failed = [Message(Error(code=0, reason="ValueError: Unexpected key(s) in state_dict"), reply_to=m)
              for m in messages]
    strategy.aggregate_train(1, failed)
    t = strategy.totals
    assert (t.failed_replies, t.accepted_updates, t.every_reply_failed) == (4, 0, True)
    strategy.aggregate_train(2, [grid.deliver(m) for m in strategy.configure_train(2, initial, ConfigRecord({}),
                                                                                   grid)])
    assert t.accepted_updates == 4 and not t.every_reply_failed  # one round that learned is a result
