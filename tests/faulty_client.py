"""A ClientApp for the end-to-end test: the real one, with some devices misbehaving.

device 0 sends a NaN, device 1 a truncated bitmask, device 2 a plain dense
update as an ordinary Flower client would (no mask), device 3 crashes; the
rest are the real SparCL client.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients import app as real
from clients.records import from_arrays, to_arrays
from clients.wire import decode_model

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    return real.query(msg, context)


@app.train()
def train(msg: Message, context: Context) -> Message:
    device = real.device_id(context)
    if device == 3:
        raise RuntimeError("device 3 lost power")
    reply = real.train(msg, context)
    flat = from_arrays(reply.content["arrays"])
    if device == 0:
        name = next(k for k in flat if k.endswith("/values"))
        flat[name] = flat[name].copy()
        flat[name][0] = np.nan
    elif device == 1:
        name = next(k for k in flat if k.endswith("/bitmask"))
        flat[name] = flat[name][:-1]
    elif device == 2:
        weights, _ = decode_model(flat)
        flat = weights  # plain tensors under their own names: an ordinary Flower update
    metrics = MetricRecord(dict(reply.content["metrics"]))
    return Message(RecordDict({"arrays": to_arrays(flat), "metrics": metrics, "info": reply.content["info"]}),
                   reply_to=msg)
