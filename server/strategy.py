"""The Flower strategy: sample devices, send the sparse global model with each
device's budget, validate, settle the round's timing, and aggregate the sparse
masked updates that came back in time.

A subclass of Flower's FedAvg that overrides its two training hooks; evaluation
is centralised (the `evaluate_fn` given to `start`). Who is free, what each
device may spend and who made the deadline are asked of a `World` (the fleet's
simpy model): it plans the round before anyone trains and settles it after.
The server itself stays free of timing and of torch.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from clients.records import from_arrays, to_arrays
from clients.wire import SEP, decode_model, encode_model, model_bytes
from server.aggregate import (
    in_mask_share, mask_aware_average, pool_statistics, resparsify, union_mask, zero_filled_fedavg,
)
from server.bookkeeping import (
    DEVICE_WORK, Accepted, DeviceReport, RoundTiming, Totals, book_round, device_rows, round_row,
)
from server.validate import UpdateRejected, reported_figures, validate_update

log = logging.getLogger(__name__)

AGGREGATIONS = ("mask-aware", "fedavg")
PLAIN_WEIGHTS = ("in-mask", "examples")
NORM_STATISTICS = ("averaged", "recalibrated")


# What the server reads from a device's metrics (timing, energy, the average's weights, the rows): where
# present, each must be a finite number >= 0, or the reply is rejected.
FIGURES = ("num-examples", "train-flops", "kernel-flops", "round-peak-memory-bytes", "peak-memory-bytes",
           "compute-s", "process-peak-rss-bytes", "energy-j", "norm-batches", "local-accuracy", "adapted",
           *DEVICE_WORK)

# A round waits for its training replies at least federation.round_timeout_s, and at least this many
# times the slowest sampled device's modelled round (download, its last round's work at its profile's
# sustained rate, upload of as much): a real board may run well below its profile (the efficiency is
# an assumption, and an uncooled board throttles), and a round cut short wastes all of its work.
ROUND_TIMEOUT_SLACK = 4.0


class NodesUnavailable(RuntimeError):
    """Too few nodes connected in time: the run stops instead of waiting for ever."""


@dataclass(frozen=True)
class ServerConfig:
    rounds: int
    devices_per_round: int | float         # a count, or a fraction of the connected devices
    min_available: int
    aggregation: str = "mask-aware"
    resparsify: bool = True
    sparsity: float | None = None          # target for re-sparsifying; None: a dense method
    masked_names: tuple[str, ...] = ()
    granularity: str = "weight"            # re-sparsify single weights or whole output channels
    value_dtype: str = "float32"
    round_timeout_s: float = 600.0
    connect_timeout_s: float = 120.0
    seed: int = 0
    devices: int = 0                       # the fleet's size (device ids 0..devices-1); 0: unknown
    device_spec: str = "{}"                # JSON sent to every device (clients.device.DeviceSpec)
    run_key: str = ""                      # names the run to devices (their state subfolder)
    # for plain Flower clients (nodes that do not answer the device query): the model's integer
    # buffers (BatchNorm's num_batches_tracked), sent as zeros so that a strict load_state_dict
    # takes the arrays, and the training settings sent in their config (lr, local-epochs)
    counters: tuple[str, ...] = ()
    statistics: tuple[str, ...] = ()       # floating buffers (BatchNorm running mean and variance)
    plain_config: dict = field(default_factory=dict)
    # how a plain client's projected update counts: "in-mask" weighs its examples by the share of
    # its change that the sparse model keeps (server.aggregate.in_mask_share); "examples" as FedAvg
    plain_weight: str = "in-mask"
    # "recalibrated": devices recompute the norms' statistics on what they send, pooled per batch
    norm_statistics: str = "averaged"
    # sample this factor more devices than devices_per_round asks and keep the first that many
    # updates to arrive (1: no over-selection)
    over_select: float = 1.0


@runtime_checkable
class World(Protocol):
    """Plans each round before anyone trains and settles it after (fleet.world, with simpy)."""

    def online(self, server_round: int, devices: list[int]) -> list[int]: ...

    def free(self, devices: list[int]) -> list[int]: ...

    def plan(self, server_round: int, devices: list[int], down_bytes: int | dict[int, int]) -> dict[int, dict]: ...

    def settle(self, server_round: int, reports: list[DeviceReport], keep: int | None = None) -> RoundTiming: ...


class InstantWorld:
    """Every device always online, unlimited and on time: a plain Flower federation."""

    def online(self, server_round: int, devices: list[int]) -> list[int]:
        return devices

    def free(self, devices: list[int]) -> list[int]:
        return devices

    def plan(self, server_round: int, devices: list[int], down_bytes: int | dict[int, int]) -> dict[int, dict]:
        return {d: {} for d in devices}

    def settle(self, server_round: int, reports: list[DeviceReport], keep: int | None = None) -> RoundTiming:
        """Everyone arrives at once: no order to keep the first `keep` by, so every update counts."""
        ok = [r.device_id for r in reports if r.status == "ok"]
        return RoundTiming(frozenset(ok), {r.device_id: r.status for r in reports}, 0.0, 0.0)


def sample_size(config: ServerConfig, available: int) -> int:
    """Devices to sample this round: a count or a fraction, never more than are online."""
    want = config.devices_per_round
    k = int(round(want * available)) if isinstance(want, float) else int(want)
    return max(0, min(available, max(1, k)))


def project_onto(weights: dict[str, np.ndarray], global_masks: dict[str, np.ndarray],
                 masked: tuple[str, ...], statistics: tuple[str, ...] = ()
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A dense update from a plain client, kept only where the global mask keeps weights.

    Averaged as it came, its dense values would count everywhere and the
    re-sparsification would pick the top magnitudes of a dense tensor: one
    plain client would replace the fleet's mask (issue 9 reports 96.8% falling to 6.5%).
    Projected, it trains the sparse model the SparCL devices train. Its
    normalisation `statistics` (BatchNorm's running mean and variance) were
    measured on its dense network, not on the sparse one: they count for nothing.
    """
    masks = {n: global_masks[n].astype(bool) for n in masked if n in global_masks}
    masks.update({n: np.zeros(np.shape(weights[n]), bool) for n in statistics if n in weights})
    return {n: (w * masks[n] if n in masks else w) for n, w in weights.items()}, masks


def measured_figures(figures: dict[str, float]) -> tuple[float | None, int | None, float | None]:
    """What the device measured itself (its checked `figures`): compute seconds, its process's peak memory,
    energy (or None)."""
    rss = figures.get("process-peak-rss-bytes")
    return figures.get("compute-s"), None if rss is None else int(rss), figures.get("energy-j")


def plain_model(weights: dict[str, np.ndarray], counters: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The global model as an ordinary Flower client loads it: dense tensors under their own names
    (pruned weights are zeros), plus zeroed integer counters so that a strict load_state_dict fits."""
    return {**weights, **{name: np.zeros((), np.int64) for name in counters}}


def over_selected(k: int, factor: float, available: int) -> int:
    """Devices to sample so that the first k updates to arrive can be kept: ceil(k x factor), capped at those
    available. Servers over-select (about 1.3x, Bonawitz et al. 2019) so that stragglers and dropouts do
    not stall the round."""
    return min(available, math.ceil(round(k * factor, 9)))  # round: 10 x 1.3 is 13.000000000000002


def arrivals_kept(config: ServerConfig, free: int) -> int | None:
    """How many arrivals the round keeps under over-selection (None: every update in time)."""
    return sample_size(config, free) if config.over_select > 1 and free else None


def choose_devices(rng: random.Random, free: list[int], config: ServerConfig) -> list[int]:
    """This round's sample of the free devices, over-selected where asked, in id order (a dry run draws the
    same ones)."""
    if not free:
        return []
    return sorted(rng.sample(free, over_selected(sample_size(config, len(free)), config.over_select, len(free))))


class SparseFedAvg(FedAvg):
    def __init__(self, config: ServerConfig, world: World | None = None) -> None:
        super().__init__(fraction_train=1.0, fraction_evaluate=0.0,
                         min_available_nodes=config.min_available, min_train_nodes=1)
        self.config = config
        self.world = world or InstantWorld()
        self.rng = random.Random(config.seed)
        self.devices: dict[int, int] = {}      # node id -> device id
        self.plain: set[int] = set()           # device ids of plain Flower clients (dense arrays, no budget)
        self.real: set[int] = set()            # device ids on their own hardware (node config `real`)
        self.last_device_rows: list[dict] = []
        self.totals = Totals()
        self.last_row: dict = {}
        self.last_timing: RoundTiming | None = None
        # work booked into the totals after the last row (an asynchronous run that stopped between
        # versions): the runner's ledger books it too, so devices.csv adds up to summary.json
        self.unversioned: tuple[RoundTiming, list[DeviceReport], set[int]] | None = None
        self.last_reports: list[DeviceReport] = []
        self.last_adapted: set[int] = set()
        self.last_offline: frozenset[int] = frozenset()  # this round's devices offline at its start
        self.last_busy: frozenset[int] = frozenset()     # and those online but finishing a late round
        self.sim_time_s = 0.0
        self.global_weights: dict[str, np.ndarray] = {}
        self.global_masks: dict[str, np.ndarray] = {}
        self.round_offset = 0                  # rounds finished before this start (a resumed run)
        # wall seconds in the world and in aggregation (where time goes)
        self.spent: defaultdict[str, float] = defaultdict(float)
        self.started_s: float | None = None    # perf_counter when the first round was configured
        self._sent: dict[int, int] = {}        # device id -> bytes sent to it this round
        self.round_work: dict[int, float] = {}  # device id -> kernel FLOPs of its last completed round
        self.round_timeout_s = config.round_timeout_s  # this round's wait for replies (paced_timeout)
        self.keep: int | None = None           # this round's arrivals to keep (over-selection), None: all

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.spent[key] += time.perf_counter() - start

    # -- checkpoints -------------------------------------------------------------
    def snapshot(self) -> dict:
        """What a resumed run needs besides the global model (JSON-able)."""
        version, internal, gauss = self.rng.getstate()
        return {"totals": asdict(self.totals), "rng": [version, list(internal), gauss],
                "sim_time_s": self.sim_time_s, "round_work": sorted(self.round_work.items())}

    def restore(self, snapshot: dict, rounds_done: int, weights: dict[str, np.ndarray],
                masks: dict[str, np.ndarray]) -> None:
        """Continue after `rounds_done` rounds from a `snapshot` and the global model of that round."""
        version, internal, gauss = snapshot["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.totals = Totals(**snapshot["totals"])
        if "accepted_updates" not in snapshot["totals"]:  # a checkpoint from before the count: assume it learned
            self.totals.accepted_updates = rounds_done
        self.sim_time_s = float(snapshot["sim_time_s"])
        self.round_work = {int(d): float(f) for d, f in snapshot.get("round_work", [])}  # paces reply timeouts
        self.global_weights, self.global_masks = weights, masks
        self.round_offset = rounds_done

    # -- sending ---------------------------------------------------------------
    def configure_evaluate(self, server_round, arrays, config, grid) -> Iterable[Message]:
        return []  # evaluation is centralised

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        server_round += self.round_offset
        flat = from_arrays(arrays)
        if not self.global_weights:  # the initial model; later rounds decoded it in aggregate_train
            self.global_weights, self.global_masks = decode_model(flat)
        nodes = self._wait_for_nodes(grid)
        self._identify(grid, nodes)
        by_device = {d: n for n, d in self.devices.items() if n in nodes}
        if self.started_s is None:
            self.started_s = time.perf_counter()
        with self.timed("world"):
            online = self.world.online(server_round, sorted(by_device))
            free = self.world.free(online)
            chosen = choose_devices(self.rng, free, self.config)
            self.keep = arrivals_kept(self.config, len(free))
            self.last_offline = frozenset(by_device).difference(online)
            self.last_busy = frozenset(online).difference(free)
            dense = plain_model(self.global_weights, self.config.counters) if self.plain else {}
            plain = to_arrays(dense) if dense else None
            sizes = {"wire": model_bytes(flat), "plain": model_bytes(dense)}
            self._sent = {d: sizes["plain" if d in self.plain else "wire"] for d in chosen}
            plans = self.world.plan(server_round, chosen, self._sent)
        self.totals.download_bytes += sum(self._sent.values())
        self.round_timeout_s = self.paced_timeout(plans)
        self.last_row = {"round": server_round, "online": len(online), "busy": len(online) - len(free),
                         "n_offline": len(by_device) - len(online), "sampled": len(chosen)}
        return self.train_messages(server_round, chosen, plans, arrays, plain, by_device)

    def train_messages(self, server_round: int, chosen: list[int], plans: dict[int, dict], arrays: ArrayRecord,
                       plain: ArrayRecord | None, by_device: dict[int, int]) -> list[Message]:
        """One training message per chosen device: the wire-format model with its budget, or for a plain
        Flower client the dense arrays and its settings; stamped with the clock it starts at."""
        messages = []
        for device in chosen:
            content: dict[str, ArrayRecord | MetricRecord | ConfigRecord]
            if device in self.plain:  # what a stock Flower ClientApp reads: arrays to load, its settings
                assert plain is not None, "the dense arrays are made whenever a plain client is known"
                content = {"arrays": plain, "config": ConfigRecord({
                    "server-round": server_round, "device-spec": self.config.device_spec,
                    "sim-time-s": float(self.sim_time_s), **self.config.plain_config})}
            else:
                budget = {f"budget-{k}": v for k, v in plans[device].items()}
                content = {"arrays": arrays, "config": ConfigRecord({
                    "server-round": server_round, "device-spec": self.config.device_spec,
                    "run-key": self.config.run_key, "sim-time-s": float(self.sim_time_s), **budget})}
            messages.append(Message(RecordDict(content),
                                    dst_node_id=by_device[device], message_type=MessageType.TRAIN,
                                    group_id=str(server_round)))
        return messages

    def paced_timeout(self, plans: dict[int, dict]) -> float:
        """How long this round waits for training replies: the scenario's round_timeout_s, or
        ROUND_TIMEOUT_SLACK times the slowest planned device's modelled round if that is longer.
        A device's work is its last completed round's (the fleet's mean before it has one); its
        speed, its profile's sustained FLOP/s (the plan's `gflops`)."""
        known = list(self.round_work.values())
        longest = 0.0
        for device, plan in plans.items():
            work = self.round_work.get(device, sum(known) / len(known) if known else 0.0)
            gflops, down_s = float(plan.get("gflops", 0.0) or 0.0), float(plan.get("download-s", 0.0) or 0.0)
            compute_s = work / (gflops * 1e9) if gflops > 0 else 0.0
            longest = max(longest, 2 * down_s + compute_s)  # the upload is about the download's size
        return max(self.config.round_timeout_s, ROUND_TIMEOUT_SLACK * longest)

    def _wait_for_nodes(self, grid: Grid) -> set[int]:
        deadline = time.monotonic() + self.config.connect_timeout_s
        while len(nodes := set(grid.get_node_ids())) < self.config.min_available:
            if time.monotonic() > deadline:
                raise NodesUnavailable(f"only {len(nodes)} of the {self.config.min_available} devices needed "
                                       f"connected within {self.config.connect_timeout_s:.0f} s")
            time.sleep(0.2)
        return nodes

    def _identify(self, grid: Grid, nodes: set[int]) -> None:
        """Ask new nodes which device they are.

        A node that cannot say runs a plain Flower ClientApp: it gets the next
        free device id, and from then on dense arrays it can `load_state_dict`
        instead of the wire format. Cannot say: its reply is an error (a
        ClientApp without a query handler raises), carries no device id, or
        never comes within connect_timeout_s (the simulation engine may drop
        the error of an app without a query handler).
        """
        new = sorted(nodes - set(self.devices))
        if not new:
            return
        queries = [Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=n,
                           message_type=MessageType.QUERY) for n in new]
        unanswered = {}
        for reply in grid.send_and_receive(queries, timeout=self.config.connect_timeout_s):
            node = reply.metadata.src_node_id
            if reply.has_error() or "metrics" not in reply.content or "device-id" not in reply.content["metrics"]:
                unanswered[node] = "an error" if reply.has_error() else "no device id"
                continue
            answer = reply.content["metrics"]
            claimed = answer["device-id"]
            if isinstance(claimed, bool) or not isinstance(claimed, int) or claimed < 0 or (
                    self.config.devices and claimed >= self.config.devices):
                fleet = f"[0, {self.config.devices})" if self.config.devices else "0 or above"
                unanswered[node] = f"{claimed!r:.40}, not a device id in {fleet}"
                continue
            self.devices[node] = claimed  # a device that reconnects claims its id again from a new node
            if answer.get("real", 0):
                self.real.add(claimed)
        for node in new:  # an error, a reply without a device id, or none at all: it cannot say
            if node not in self.devices:
                self.devices[node] = self._free_id()
                self.plain.add(self.devices[node])
                self.totals.notes.append(
                    f"device {self.devices[node]} is a plain Flower client (its device query got "
                    f"{unanswered.get(node, 'no reply')}): it gets dense arrays, and its training time and energy "
                    "are unknown to the world (only its transfers count)")

    def _free_id(self) -> int:
        """An id for a node that did not say its own: the highest one free in the fleet (SparCL devices
        claim theirs from 0 up), or the next after all known ones when the fleet's size is unknown."""
        taken = set(self.devices.values())
        free = [d for d in range(self.config.devices - 1, -1, -1) if d not in taken]
        return free[0] if free else max(taken, default=-1) + 1

    # -- receiving ---------------------------------------------------------------
    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.round_offset
        t = self.totals
        rejected0, failed0 = t.rejected_updates, t.failed_replies
        # in device order, not arrival order: the average (a float sum) and the notes do not depend on timing
        replies = sorted(replies, key=lambda r: self.devices.get(r.metadata.src_node_id, -1))
        missing = max(0, len(self._sent) - len(replies))  # Flower gave up waiting for them
        t.timed_out += missing
        with self.timed("aggregation"):
            accepted, reports = self._collect(server_round, replies)
        with self.timed("world"):
            timing = self.world.settle(server_round, reports, self.keep)
        self.last_timing, self.last_reports = timing, reports
        self.last_device_rows = device_rows(server_round, reports, timing, self.real, self.plain, accepted)
        self.last_adapted = {a.device_id for a in accepted if a.metrics.get("adapted", 0)}
        on_time = [a for a in accepted if a.device_id in timing.accepted]
        t.accepted_updates += len(on_time)
        self.sim_time_s = timing.sim_time_s
        row = self.last_row
        row.update(round_row(accepted, reports, timing))
        book_round(t, row, timing)
        with self.timed("aggregation"):
            weights, masks = self.aggregate([(a.weights, a.masks, a.n_examples) for a in on_time])
            if self.config.norm_statistics == "recalibrated":
                weights = pool_statistics([(a.weights, float(a.metrics.get("norm-batches", 0))) for a in on_time],
                                          self.config.statistics, weights)
            flat = encode_model(weights, masks, value_dtype=self.config.value_dtype)
            self.global_weights, self.global_masks = decode_model(flat)  # what travels (fp16 included)
        row.update(rejected=t.rejected_updates - rejected0, failed=t.failed_replies - failed0,
                   timed_out=missing, download_bytes=sum(self._sent.values()))
        return to_arrays(flat), MetricRecord({k: v for k, v in row.items() if isinstance(v, (int, float))})

    def _collect(self, server_round: int, replies: list[Message]) -> tuple[list[Accepted], list[DeviceReport]]:
        """Validate every reply; count failures, declines and rejections; keep the good updates.

        Every device that answered gets a report (the world books its time and
        energy); only valid updates are candidates for aggregation.
        """
        accepted, reports, t = [], [], self.totals
        for reply in replies:
            device = self.devices.get(reply.metadata.src_node_id, -1)
            down = self._sent.get(device, 0)
            if reply.has_error():
                t.failed_replies += 1
                said = (reply.error.reason or "").strip()  # Flower's Error may carry no reason
                reason = said.splitlines()[-1][:200] if said else "?"
                t.rejections.append(f"round {server_round}, device {device}: failed: {reason}")
                if device in self._sent:
                    reports.append(DeviceReport(device, 0.0, down, 0, 0, 0.0, "failed"))
                continue
            metrics = dict(reply.content["metrics"]) if "metrics" in reply.content else {}
            info = dict(reply.content["info"]) if "info" in reply.content else {}
            status = str(info.get("status", "ok"))
            try:
                figures = reported_figures(metrics, FIGURES)
            except UpdateRejected as err:
                self._reject(server_round, device, err)
                continue
            flops = figures.get("train-flops", 0.0)
            kernel = figures.get("kernel-flops", flops)
            memory = int(figures.get("round-peak-memory-bytes", figures.get("peak-memory-bytes", 0)))
            n_examples: float = int(figures.get("num-examples", 1))
            if info.get("adaptations"):
                t.notes.append(f"round {server_round}, device {device}: adapted: {str(info['adaptations'])}")
            if status in ("declined", "failed"):
                if status == "declined":
                    t.notes.append(f"round {server_round}, device {device}: declined: {str(info.get('reason', ''))}")
                reports.append(DeviceReport(device, flops, down, 0, 0, kernel, status))
                continue
            try:
                record = reply.content["arrays"]
                if not isinstance(record, ArrayRecord):
                    raise TypeError(f"its arrays are a {type(record).__name__}, not an ArrayRecord")
                flat = from_arrays(record)
                weights, masks = validate_update(flat, self.global_weights)
                plain = all(SEP not in k for k in flat)  # an ordinary Flower client's dense state_dict
            except (UpdateRejected, KeyError, TypeError, ValueError) as err:
                self._reject(server_round, device, err)
                continue
            if self.config.sparsity is not None and plain:
                dense = weights
                weights, masks = project_onto(dense, self.global_masks, self.config.masked_names,
                                              self.config.statistics)
                n_examples, metrics["in-mask-share"] = self.plain_count(dense, masks, n_examples)
            accepted.append(Accepted(device, weights, masks, n_examples, metrics))
            if kernel > 0:
                self.round_work[device] = kernel
            reports.append(DeviceReport(device, flops, down, model_bytes(flat), memory, kernel, "ok",
                                        *measured_figures(figures)))
        return accepted, reports

    def _reject(self, server_round: int, device: int, err: Exception) -> None:
        """Count a reply whose update or figures failed validation; the run goes on without it."""
        self.totals.rejected_updates += 1
        self.totals.rejections.append(f"round {server_round}, device {device}: {err}")
        log.warning("device %s: %s", device, err)

    def plain_count(self, dense: dict[str, np.ndarray], projected_masks: dict[str, np.ndarray],
                    n_examples: float) -> tuple[float, float]:
        """What a plain client's dense update counts for once projected (project_onto's masks), and the
        share of its change over the masked tensors that it keeps.

        One weight for the whole update, its dense tensors (head, norms) included: they were
        trained on features of a dense network that the projection removes."""
        masked = {n: projected_masks[n] for n in self.config.masked_names if n in projected_masks}
        share = in_mask_share(dense, self.global_weights, masked)
        weight = share if self.config.plain_weight == "in-mask" else 1.0
        return n_examples * weight, share

    def aggregate(self, updates: list[tuple[dict, dict, float]]
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """New global weights and masks (masks only for the masked tensors)."""
        previous = self.global_weights
        if not updates:
            return previous, {n: self.global_masks[n] for n in self.config.masked_names}
        average = mask_aware_average if self.config.aggregation == "mask-aware" else zero_filled_fedavg
        weights = average(updates, previous)
        names = list(self.config.masked_names)
        if self.config.sparsity is None or not names:
            return weights, {}
        if self.config.resparsify:
            return resparsify(weights, names, self.config.sparsity, self.config.granularity)
        union = union_mask([{n: m[n] for n in names} for _, m, _ in updates])
        return {n: (w * union[n] if n in union else w) for n, w in weights.items()}, union
