"""Asynchronous buffered aggregation (FedBuff, Nguyen et al., AISTATS 2022) on the simulated clock.

Devices train whenever they are free and online, each from the newest global
model; the server applies the buffer every K arrivals. What this module
defines is the server's side and what it asks of the world:

* `Arrival`: one launched device's work reaching the server (its update,
  or the news that it failed, ran out of memory or declined);
* `AsyncWorld`: the simulated world in asynchronous mode (fleet.async_world,
  with simpy): who may start now, each start's budget, and the next arrival.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from server.strategy import DeviceReport


@dataclass(frozen=True)
class Arrival:
    """A launched device's work reaching the server at `time_s` (simulated seconds).

    `dispatch` is the launch it came from (the training's `server-round`);
    `status` is ok (its update arrived), failed (it dropped on the way),
    oom or declined (it did no work); `outcome` is its
    fleet.timing.DeviceOutcome (phases, energy), which the server only reports.
    """

    device_id: int
    dispatch: int
    status: str
    time_s: float
    outcome: Any


class AsyncWorld(Protocol):
    """The world the buffered server asks (fleet.async_world.AsyncWorld)."""

    clock_s: float

    def ready(self, version: int, limit: int) -> list[int]: ...

    def plan(self, dispatch: int, devices: list[int], down_bytes: int | dict[int, int]) -> dict[int, dict]: ...

    def launch(self, dispatch: int, reports: list[DeviceReport]) -> None: ...

    def next_event(self) -> Arrival | None: ...

    def stalled(self) -> bool: ...

    def snapshot(self) -> dict: ...

    def restore(self, snapshot: dict) -> None: ...
