"""The Flower ServerApp: run the SparseFedAvg strategy for the configured rounds.

Built by a factory so that the launcher (fleet's runner) can hand in typed
settings, the simpy world and the centralised evaluation; `run_simulation`
runs `main` in a thread of the launcher process, so `sink` carries the
strategy back to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp

from clients.records import to_arrays
from clients.wire import encode_model
from server.buffered import AsyncWorld, BufferConfig, BufferedFedAvg
from server.strategy import ServerConfig, SparseFedAvg, World

if TYPE_CHECKING:  # Flower's own Grid names these; at run time the wrapped grid brings them
    from flwr.proto.node_pb2 import NodeInfo
    from flwr.supercore.run import Run

EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]


@dataclass(frozen=True)
class Resume:
    """A checkpoint to continue from: rounds (versions) done, the strategy's snapshot, and the arrays of an
    asynchronous run's work in flight; its global model is the app's initial one."""

    done: int
    snapshot: dict
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def make_strategy(config: ServerConfig, world: World | AsyncWorld | None, buffer: BufferConfig | None = None,
                  current_task: Callable[[int, float], int] | None = None) -> SparseFedAvg:
    """The synchronous strategy, or with a buffer the asynchronous one (server.buffered)."""
    if buffer is None:
        if world is not None and not isinstance(world, World):
            raise TypeError(f"synchronous rounds need a World, not a {type(world).__name__}")
        return SparseFedAvg(config, world)
    if not isinstance(world, AsyncWorld):
        raise TypeError(f"asynchronous versions need an AsyncWorld, not a {type(world).__name__}")
    return BufferedFedAvg(config, world, buffer, current_task)


def restore_strategy(strategy: SparseFedAvg, resume: Resume, weights: dict[str, np.ndarray],
                     masks: dict[str, np.ndarray]) -> None:
    if isinstance(strategy, BufferedFedAvg):
        strategy.restore(resume.snapshot, resume.done, weights, masks, resume.arrays)
    else:
        strategy.restore(resume.snapshot, resume.done, weights, masks)


def make_server_app(config: ServerConfig, initial_weights: dict[str, np.ndarray],
                    initial_masks: dict[str, np.ndarray], world: World | AsyncWorld | None = None,
                    evaluate_fn: EvaluateFn | None = None, sink: dict | None = None,
                    resume: Resume | None = None, buffer: BufferConfig | None = None,
                    current_task: Callable[[int, float], int] | None = None) -> ServerApp:
    """Synchronous rounds on Flower's loop, or with a `buffer` asynchronous versions on the buffered
    server's event loop; `config.rounds` counts either."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = make_strategy(config, world, buffer, current_task)
        done = 0
        if resume is not None:
            done = resume.done
            restore_strategy(strategy, resume, initial_weights, initial_masks)
        if sink is not None:
            sink["strategy"] = strategy
        initial = to_arrays(encode_model(initial_weights, initial_masks, value_dtype=config.value_dtype))
        result: object
        if isinstance(strategy, BufferedFedAvg):
            result = strategy.run(PacedGrid(grid, strategy), initial, config.rounds - done, evaluate_fn)
        else:
            result = strategy.start(grid=PacedGrid(grid, strategy), initial_arrays=initial,
                                    num_rounds=config.rounds - done,
                                    timeout=config.round_timeout_s, evaluate_fn=shifted(evaluate_fn, done))
        if sink is not None:
            sink["result"] = result

    return app


class PacedGrid(Grid):
    """The Grid as Flower's `start` uses it, except that a round's training messages wait for their
    replies `strategy.round_timeout_s` (planned per round: the slowest sampled device's modelled round
    with slack, never less than the scenario's round_timeout_s), not the one timeout `start` was given.
    Everything else is the wrapped Grid's."""

    def __init__(self, grid: Grid, strategy: SparseFedAvg) -> None:
        self._grid, self._strategy = grid, strategy

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        if timeout is not None and messages and messages[0].metadata.message_type == MessageType.TRAIN:
            timeout = max(timeout, self._strategy.round_timeout_s)
        return self._grid.send_and_receive(messages, timeout=timeout)

    def set_run(self, run: Run) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Run:
        return self._grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self._grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)


def shifted(evaluate_fn: EvaluateFn | None, done: int) -> EvaluateFn | None:
    """Flower counts a resumed run's rounds from 1 again; the evaluation sees the run's round numbers.
    Its round 0 (the initial model) is evaluated in a fresh run only."""
    if evaluate_fn is None or done == 0:
        return evaluate_fn
    return lambda server_round, arrays: None if server_round == 0 else evaluate_fn(server_round + done, arrays)
