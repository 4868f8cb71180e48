"""The Flower ClientApp: thin glue between Flower records and `clients.device.run_round`.

A ClientApp keeps no Python state between rounds. A device's continual-learning
state travels in `context.state` and, when the app has a state folder, also in
a file per round on the device's disk (clients.state_store): a real device that
restarts (and comes back with an empty context) resumes where it was, and a
simulated fleet can be resumed from its last checkpoint.

Node config keys: `partition-id` (the device id), `num-partitions`, and
optionally `state-dir` (the state folder; `make_client_app(state_dir)` sets
one for every node, which is how `fleet run` gives its simulated devices one),
`data-dir` (where this device finds its data set, overriding the scenario's),
`threads` (its torch thread count, from `fleet device --threads`) and `real`
(true on a device's own hardware: its measured time, memory and
energy are reported as its own, next to the model's).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients import torch_compat

torch_compat.install()  # a Pi on Debian's torch 1.13: learner states load weights-only (clients.torch_compat)

from clients import state_store, stock  # noqa: E402
from clients.device import DeviceSpec, budget_from_config, run_round  # noqa: E402
from clients.records import config_flag, from_arrays, scalar, to_arrays  # noqa: E402

STATE_KEY = "sparcl-state"


def device_id(context: Context) -> int:
    return int(context.node_config["partition-id"])


def state_dir(context: Context, default: str | None, run_key: str = "") -> Path | None:
    """The device's state folder: the node's own `state-dir`, one subfolder per run (`run_key`: the
    server names the run, so a resumed run finds its states and a new one starts afresh), else
    the app's default (a simulated fleet's, inside its run folder already)."""
    if "state-dir" in context.node_config:
        folder = Path(str(context.node_config["state-dir"]))
        return folder / run_key if run_key else folder
    return Path(default) if default else None


def safe_key(key: str) -> str:
    """A run key as one plain folder name (it comes over the network)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)[:80].lstrip(".")


def load_state(context: Context, folder: Path | None, server_round: int) -> bytes | None:
    """This device's state before `server_round`: from the context, else from its newest file."""
    if STATE_KEY in context.state:
        blob = context.state.config_records[STATE_KEY]["blob"]
        assert isinstance(blob, bytes)  # save_state stores the learner's bytes
        return blob
    return state_store.load_state(folder, device_id(context), server_round) if folder else None


def save_state(context: Context, folder: Path | None, server_round: int, blob: bytes) -> None:
    context.state[STATE_KEY] = ConfigRecord({"blob": blob})
    if folder:
        state_store.save_state(folder, device_id(context), server_round, blob)
        state_store.prune(folder, device_id(context), server_round - 1)


def is_real(context: Context) -> bool:
    """A device on its own hardware (node config `real`), whose measured figures are its own."""
    return config_flag(context.node_config.get("real", False))


def query(msg: Message, context: Context) -> Message:
    """Tell the server which device this node is (node ids are not device ids), and whether it is real."""
    metrics = MetricRecord({"device-id": device_id(context), "real": int(is_real(context))})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def set_threads(context: Context) -> None:
    """The device's torch thread count (`fleet device --threads`, node config `threads`), set once per
    ClientApp process; its rounds train on it too (over the scenario's train.threads)."""
    global _threads_set
    if _threads_set or "threads" not in context.node_config:
        return
    import torch

    threads = int(context.node_config["threads"])
    if threads < 1:
        raise ValueError(f"node config threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    _threads_set = True


_threads_set = False


def device_spec_for(config: ConfigRecord, context: Context) -> DeviceSpec:
    """The spec the server sent, with what the device says of itself: its own copy of the data set
    (`data-dir`) and its thread count (`threads`, from `fleet device --threads`, over the scenario's)."""
    spec = DeviceSpec.from_json(str(config["device-spec"]))
    if "data-dir" in context.node_config:
        spec = replace(spec, data_dir=str(context.node_config["data-dir"]))
    if "threads" in context.node_config:
        spec = replace(spec, threads=int(context.node_config["threads"]))
    return spec


def train(msg: Message, context: Context, default_state_dir: str | None = None) -> Message:
    """One round: the config carries the round, the fleet's simulated time and this device's budget."""
    set_threads(context)
    config = msg.content.config_records.get("config", ConfigRecord())
    if "device-spec" not in config or "server-round" not in config:
        raise ValueError("this is a sparcl-fleet ClientApp: it needs the sparcl-fleet server (server.app, "
                         "SparseFedAvg), which sends each device its spec, round and budget; a stock Flower "
                         "strategy sends none of them")
    spec = device_spec_for(config, context)
    budget, fail_after = budget_from_config(dict(config))
    server_round = int(scalar(config["server-round"]))
    folder = state_dir(context, default_state_dir, safe_key(str(config.get("run-key", ""))))
    result = run_round(spec, device_id(context), server_round, from_arrays(msg.content.array_records["arrays"]),
                       load_state(context, folder, server_round), budget, fail_after,
                       sim_time_s=float(scalar(config.get("sim-time-s", 0.0))))
    if result.status == "ok":
        assert result.state is not None  # an ok round returns the learner's new state
        save_state(context, folder, server_round, result.state)
    info = ConfigRecord({"status": result.status, "reason": result.reason, "adaptations": result.adaptations})
    # dict is invariant in its value type: a copy is inferred as the dict MetricRecord declares
    metrics = MetricRecord(dict(result.metrics))
    content: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {"metrics": metrics, "info": info}
    if result.status == "ok":
        content["arrays"] = to_arrays(result.update)
    return Message(RecordDict(content), reply_to=msg)


def make_client_app(default_state_dir: str | None = None, stock_devices: frozenset[int] = frozenset()
                    ) -> ClientApp:
    """The ClientApp; `default_state_dir` serves nodes whose config names no `state-dir`.

    `stock_devices`: device ids that run Flower's stock ClientApp (clients.stock) instead, as it
    is, query included (it has no handler, so the server hears an error and treats the node as
    a plain Flower client): a simulated fleet that mixes both.
    """
    client = ClientApp()

    @client.query()
    def query_node(msg: Message, context: Context) -> Message:
        if device_id(context) in stock_devices:
            return stock.app(msg, context)
        return query(msg, context)

    @client.train()
    def train_round(msg: Message, context: Context) -> Message:
        if device_id(context) in stock_devices:
            return stock.app(msg, context)
        return train(msg, context, default_state_dir)

    return client


app = make_client_app()
