"""An ordinary Flower ClientApp, written as Flower's quickstart-pytorch writes one.

Dense training with plain SGD, `load_state_dict` of the arrays it receives, a
full `state_dict()` back with `num-examples`; no query handler, no SparCL, no
budget. It is here to show that the fleet's server takes such a client as it
is: the server sees that it cannot answer the device query, sends it dense
arrays it can load, and projects its dense update onto the global mask
(server.strategy). `fleet.stock_clients` in a scenario puts it on the last
devices of a simulated fleet.

Its data is the device's own: its share of the task the world's stream has
reached at this round, found from the `device-spec` the server sends every
device (a stock client reads only what it knows and ignores the rest).
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from clients.backbones import build_backbone
from clients.device import DeviceSpec, device_data, spec_task, stream_of
from clients.records import scalar


def load_model(spec: DeviceSpec) -> nn.Module:
    stream = stream_of(spec)
    return build_backbone(spec.learner.backbone, stream.input_shape, stream.num_classes, spec.learner.width,
                          spec.learner.norm)


def load_data(spec: DeviceSpec, partition_id: int, server_round: int, batch_size: int,
              sim_time_s: float = 0.0) -> DataLoader:
    x, y = device_data(spec, partition_id, spec_task(spec, partition_id, server_round, sim_time_s))
    generator = torch.Generator().manual_seed(spec.seed * 1000 + partition_id * 100_000 + server_round)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=generator)


def train_model(model: nn.Module, loader: DataLoader, epochs: int, lr: float) -> float:
    """Plain SGD on cross-entropy; the mean loss of the last epoch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    criterion = nn.CrossEntropyLoss()
    model.train()
    total, batches = 0.0, 0
    for _ in range(epochs):
        total, batches = 0.0, 0
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
    return total / max(1, batches)


app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    config = msg.content.config_records["config"]
    spec = DeviceSpec.from_json(str(config["device-spec"]))
    partition_id = int(context.node_config["partition-id"])
    server_round = int(scalar(config["server-round"]))
    torch.manual_seed(spec.seed * 1000 + partition_id * 100_000 + server_round)
    model = load_model(spec)
    model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
    sim_time_s = float(scalar(config.get("sim-time-s", 0.0)))
    loader = load_data(spec, partition_id, server_round, int(scalar(config["batch-size"])), sim_time_s)
    loss = train_model(model, loader, int(scalar(config["local-epochs"])), float(scalar(config["lr"])))
    assert isinstance(loader.dataset, TensorDataset)  # load_data builds one (a Dataset need not have a length)
    metrics = MetricRecord({"train_loss": loss, "num-examples": len(loader.dataset)})
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg)
