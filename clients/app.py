"""The Flower ClientApp: thin glue between Flower records and `clients.device.run_round`.

A ClientApp keeps no Python state between rounds. A device's continual-learning
state travels in `context.state` (simulation), and, when the node config names
a `state-dir`, also in a file on the device's own disk, so that a real device
that restarts (and comes back with an empty context) resumes where it was.

Node config keys: `partition-id` (the device id), `num-partitions`, and
optionally `state-dir`.
"""

from __future__ import annotations

import os
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.device import DeviceSpec, budget_from_config, run_round
from clients.records import from_arrays, to_arrays

STATE_KEY = "sparcl-state"

app = ClientApp()


def device_id(context: Context) -> int:
    return int(context.node_config["partition-id"])


def state_file(context: Context) -> Path | None:
    folder = context.node_config.get("state-dir")
    return Path(str(folder)) / f"device-{device_id(context)}.pt" if folder else None


def load_state(context: Context) -> bytes | None:
    if STATE_KEY in context.state:
        return context.state[STATE_KEY]["blob"]
    path = state_file(context)
    return path.read_bytes() if path and path.exists() else None


def save_state(context: Context, blob: bytes) -> None:
    context.state[STATE_KEY] = ConfigRecord({"blob": blob})
    path = state_file(context)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, path)  # atomic: a crash never leaves half a state file


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server which device this node is (node ids are not device ids)."""
    return Message(RecordDict({"metrics": MetricRecord({"device-id": device_id(context)})}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round: the config carries the round, the fleet's simulated time and this device's budget."""
    config = msg.content["config"]
    spec = DeviceSpec.from_json(str(config["device-spec"]))
    budget, fail_after = budget_from_config(dict(config))
    result = run_round(spec, device_id(context), int(config["server-round"]),
                       from_arrays(msg.content["arrays"]), load_state(context), budget, fail_after)
    if result.status == "ok":
        save_state(context, result.state)
    info = ConfigRecord({"status": result.status, "reason": result.reason, "adaptations": result.adaptations})
    content = {"metrics": MetricRecord(result.metrics), "info": info}
    if result.status == "ok":
        content["arrays"] = to_arrays(result.update)
    return Message(RecordDict(content), reply_to=msg)
