"""`fleet run`: one scenario on Flower's simulation engine, with reports.

Builds the typed pieces from the scenario (device spec for the clients, server
settings, the simpy world, centralised evaluation), runs the real ClientApp and
ServerApp through `flwr.simulation.run_simulation` on a loopback-only Ray
instance, and writes rounds.csv and a checkpoint (after every round), then
summary.json, the final model and plots. A stopped run resumes from its last
checkpoint and reaches exactly the result of an uninterrupted one.
"""

from __future__ import annotations

import os

# Read when Ray and Flower are imported: keep Ray on 127.0.0.1, no telemetry, no warning noise.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import csv  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from flwr.app import ArrayRecord, MetricRecord  # noqa: E402
from flwr.serverapp import ServerApp  # noqa: E402

from clients import state_store  # noqa: E402
from clients.data import TaskStream, load_stream  # noqa: E402
from clients.device import DeviceSpec, spec_task, torch_threads  # noqa: E402
from clients.metrics import (  # noqa: E402
    average_accuracy, forgetting, last_k_mean, learning_accuracy_over_rounds, task_accuracy,
)
from clients.sparcl.learner import Learner
from fleet.world import AsyncWorld, DEVICE_COLUMNS, Ledger, SimWorld
from fleet.run.checkpoint import Checkpoint, device_state_dir, read_checkpoint, remove_checkpoint, write_checkpoint
from fleet.run.signals import stopping
from fleet.outputs import (
    RoundsCsv,
    folder_lock,
    plot_accuracy,
    plot_accuracy_time,
    plot_bytes,
    plot_staleness,
    plot_timeline,
    plot_timeline_rounds,
    prepare_output_dir,
    write_csv,
    write_json,
    write_model,
    write_text,
)
from fleet.config import Scenario
from server.app import Resume, make_server_app, make_strategy, restore_strategy  # noqa: E402
from server.buffered import ARRIVAL_COLUMNS, BufferConfig  # noqa: E402
from server.bookkeeping import DEVICE_ROUND_COLUMNS, STATUS_COUNTS
from server.strategy import ServerConfig, SparseFedAvg

BASE_COLUMNS = ["round", "sim_start_s", "sim_time_s", "online", "busy", "sampled", "replies", "accepted",
                "dropped", "rejected", "failed", "timed_out",
                "n_offline", "n_ok", "n_late", "n_failed", "n_oom", "n_declined", "n_adapted",
                "upload_bytes", "download_bytes", "train_flops", "wasted_train_flops", "executed_flops",
                "wasted_executed_flops", "energy_j", "idle_energy_j", "wasted_energy_j",
                "modelled_compute_s", "measured_compute_s",
                "local_accuracy", "class_il_accuracy", "task_il_accuracy", "tasks_reached", "wall_s"]


Launch = Callable[[ServerApp], None]  # runs a ServerApp on an engine


def round_columns(n_tasks: int) -> list[str]:
    """rounds.csv's columns: the round's figures, then Class-IL and Task-IL accuracy per task, then who
    trained which task and how."""
    return (BASE_COLUMNS + [f"acc_task_{t}" for t in range(n_tasks)] + [f"til_task_{t}" for t in range(n_tasks)]
            + ["tasks", "statuses"])


def device_spec(scenario: Scenario) -> DeviceSpec:
    s = scenario
    return DeviceSpec(
        dataset=s.dataset.name, data_dir=s.dataset.data_dir, n_tasks=s.dataset.n_tasks,
        max_per_class=s.dataset.max_per_class, devices=s.fleet.devices,
        alpha=s.partition.alpha if s.partition.scheme == "dirichlet" else None,
        rounds_per_task=s.stream.rounds_per_task, stagger_rounds=s.stream.stagger_rounds,
        local_epochs=s.train.local_epochs, mask_policy=s.federation.mask_policy,
        value_dtype=s.federation.value_dtype, seed=s.seed, learner=s.learner_config(s.seed),
        threads=s.train.threads, norm_statistics=s.federation.norm_statistics, task_every_s=s.stream.task_every_s,
    )


def server_config(scenario: Scenario, spec: DeviceSpec, learner: Learner) -> ServerConfig:
    f, sp, t = scenario.federation, scenario.sparcl, scenario.train
    sparse = sp.enabled and sp.tdm
    counters = tuple(n for n, v in learner.model.state_dict().items() if not v.is_floating_point())
    statistics = tuple(n for n, b in learner.model.named_buffers() if b.is_floating_point())
    assert f.rounds is not None and f.min_available is not None  # a parsed scenario has them filled
    return ServerConfig(
        rounds=f.rounds, devices_per_round=scenario.sample_size(), min_available=f.min_available,
        aggregation=f.aggregation, resparsify=f.resparsify, sparsity=sp.sparsity if sparse else None,
        masked_names=tuple(learner.masked_names) if sparse else (), granularity=sp.granularity,
        value_dtype=f.value_dtype,
        round_timeout_s=f.round_timeout_s, seed=scenario.seed, devices=scenario.fleet.devices,
        device_spec=spec.to_json(), counters=counters, statistics=statistics,
        plain_config={"lr": t.lr, "local-epochs": t.local_epochs, "batch-size": t.batch_size},
        plain_weight=f.plain_weight, norm_statistics=f.norm_statistics, over_select=f.over_select,
    )


def run_key(scenario: Scenario, out_dir: Path) -> str:
    """Names a run to its devices: the scenario and where its results go (a resumed run keeps it)."""
    import hashlib

    return f"{scenario.name}-{hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:8]}"


def tasks_reached(spec: DeviceSpec, server_round: int, sim_start_s: float = 0.0) -> int:
    """How many tasks at least one device has started by this round (which starts at `sim_start_s`)."""
    return 1 + max(spec_task(spec, d, server_round, sim_start_s) for d in range(spec.devices))


@dataclass
class Evaluator:
    """Centralised evaluation after each round, and the round's row in rounds.csv."""

    stream: TaskStream
    learner: Learner
    spec: DeviceSpec
    csv: RoundsCsv
    sink: dict
    ledger: Ledger
    on_round: object = None
    started: float = 0.0
    checkpoint: object = None   # called with the round once its row is written
    spent_s: float = 0.0        # wall seconds evaluating (and checkpointing)
    device_csv: RoundsCsv | None = None  # device_rounds.csv: modelled next to measured, per device

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            return None
        began = time.perf_counter()
        try:
            return self._evaluate(server_round)
        finally:
            self.spent_s += time.perf_counter() - began

    def _evaluate(self, server_round: int) -> MetricRecord:
        strategy = self.sink["strategy"]  # it holds `arrays` decoded already
        self.learner.load_weights(strategy.global_weights, strategy.global_masks if self.learner.masks else None)
        # the tasks the devices had reached when they started this round's work (asynchronous: its last start)
        clock = strategy.last_row.get("tasks_from_s", strategy.last_row.get("sim_start_s", 0.0))
        reached = tasks_reached(self.spec, server_round, float(clock))
        with torch_threads(self.spec.threads):  # the same count every run: bit-identical logits
            accs = [task_accuracy(self.learner.model, t.x_test, t.y_test, t.classes)
                    for t in self.stream.tasks[:reached]]
        if strategy.last_timing is not None:
            self.ledger.add_round(server_round, strategy.last_timing, strategy.last_reports, strategy.last_adapted,
                                  strategy.last_offline, strategy.last_busy)
        row = dict(strategy.last_row)
        row.update({f"acc_task_{i}": round(c, 3) for i, (c, _) in enumerate(accs)})
        row.update({f"til_task_{i}": round(t, 3) for i, (_, t) in enumerate(accs)})
        class_il, task_il = average_accuracy([c for c, _ in accs]), average_accuracy([t for _, t in accs])
        row.update(class_il_accuracy=round(class_il, 3), task_il_accuracy=round(task_il, 3), tasks_reached=reached,
                   wall_s=round(time.perf_counter() - self.started, 2))
        if self.device_csv is not None:
            for device_row in strategy.last_device_rows:
                self.device_csv.append(device_row)
        self.csv.append(row)
        if callable(self.checkpoint):
            self.checkpoint(server_round)
        if callable(self.on_round):
            self.on_round(row)
        return MetricRecord({"class-il-accuracy": class_il})


def accuracy_history(rows: list[dict], prefix: str = "acc_task_") -> list[list[float]]:
    """Per round, the accuracy of each task reached by then (rounds.csv's `acc_task_*` or `til_task_*`;
    a round from before Task-IL was recorded, in a resumed older run, is left out)."""
    return [[float(r[f"{prefix}{t}"]) for t in range(int(r["tasks_reached"]))] for r in rows
            if f"{prefix}0" in r]


def learning_metrics(rows: list[dict], last_k: int) -> dict:
    """What a continual-learning reader expects of a run, from its rounds: final Class-IL and Task-IL,
    their mean over the last `last_k` rounds, learning accuracy, and forgetting under both
    definitions (clients.metrics.forgetting: ours, and the authors'/mammoth's, never negative).
    None everywhere for a dry run, which trains nothing."""
    keys = [f"{m}{s}" for s in ("", "_task_il") for m in
            ("final_accuracy", "last_k_accuracy", "learning_accuracy", "forgetting", "forgetting_authors")]
    if not rows:
        return {**dict.fromkeys(keys, 0.0), "last_k": last_k}
    if rows[-1].get("class_il_accuracy") is None:
        return {**dict.fromkeys(keys), "last_k": last_k}
    out: dict = {"last_k": last_k}
    for suffix, prefix, column in (("", "acc_task_", "class_il_accuracy"),
                                   ("_task_il", "til_task_", "task_il_accuracy")):
        history = accuracy_history(rows, prefix)
        out.update({
            f"final_accuracy{suffix}": None if rows[-1].get(column) is None else float(rows[-1][column]),
            f"last_k_accuracy{suffix}": last_k_mean([float(r[column]) for r in rows if r.get(column) is not None],
                                                    last_k),
            f"learning_accuracy{suffix}": learning_accuracy_over_rounds(history),
            f"forgetting{suffix}": forgetting(history),
            f"forgetting_authors{suffix}": forgetting(history, authors=True),
        })
    return out


def arrival_figures(rows: list[dict]) -> dict:
    """An asynchronous run's arrivals in brief: how stale the applied updates were (versions and seconds),
    how many were dropped as too stale, and the share of applied updates trained on a task the stream had
    left by their arrival."""
    applied = [r for r in rows if r["status"] == "ok"]

    def spread(values: list[float]) -> dict:
        if not values:
            return {"median": None, "p90": None, "max": None}
        return {"median": float(np.median(values)), "p90": float(np.percentile(values, 90)), "max": max(values)}

    known = [r for r in applied if r.get("task_current") not in (None, "")]
    return {"count": len(rows), "applied": len(applied), "too_stale": sum(1 for r in rows if r["status"] == "late"),
            "staleness_versions": spread([int(r["staleness"]) for r in applied]),
            "staleness_s": spread([float(r["staleness_s"]) for r in applied]),
            "off_task_share": (sum(1 for r in known if not int(r["task_current"])) / len(known)) if known else None}


def backend_config(ray_dir: Path | None = None, ray_address: str | None = None,
                   cpus: float = 1.0, gpus: float = 0.0) -> dict:
    """Flower's Ray backend: a loopback-only local Ray instance whose session files go to `ray_dir`
    (removed after the run), or the existing cluster at `ray_address`, whose nodes host the clients.

    Each simulated device reserves `cpus` CPUs and `gpus` GPUs (the scenario's train.cpus_per_device
    and train.gpus_per_device), so a cluster of N CPUs trains N / cpus devices at once, spread over
    its nodes; Ray shows a device's process only the GPUs it reserved.
    """
    resources = {"num_cpus": cpus, **({"num_gpus": gpus} if gpus else {})}
    if ray_address is not None:
        return {"client_resources": resources, "init_args": {"address": ray_address, "log_to_driver": False}}
    init = {"address": "local", "_node_ip_address": "127.0.0.1", "include_dashboard": False,
            "num_cpus": os.cpu_count() or 1, "log_to_driver": False}
    if ray_dir is not None:
        init["_temp_dir"] = str(ray_dir)
    return {"client_resources": resources, "init_args": init}


def ray_scratch() -> Path:
    """A fresh folder for one run's Ray session (short: Ray's socket paths must stay under 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix="fleet-ray-", dir="/tmp" if os.path.isdir("/tmp") else None))


def quiet_flower(verbose: bool) -> None:
    from flwr.common.logger import update_console_handler
    update_console_handler(level=logging.INFO if verbose else logging.CRITICAL)


def run_scenario(scenario: Scenario, out_dir: Path, *, on_round=None, verbose: bool = False,
                 client_app=None, force: bool = False, resume: bool = False, ray_address: str | None = None,
                 launch: Launch | None = None) -> dict:
    """Run the scenario; return the summary (also written to out_dir/summary.json).

    force: out_dir may hold an earlier run, whose files are replaced.
    ray_address: the devices train on this existing Ray cluster instead of a
    local instance. resume: out_dir holds this scenario's run, stopped;
    continue after its last checkpointed round (fleet.run.checkpoint), keeping
    its rounds. summary.json is
    there from the first round on (status `running`, then `complete`; Ctrl-C,
    SIGTERM or a crash make it `interrupted` or `failed`), and every process
    the run started is stopped however it ends. While it runs, the folder is
    locked against a second run.

    launch: runs the ServerApp on an engine that is already there (the
    deployment engine: fleet.deploy.serverapp hands in its Grid); None starts Flower's
    simulation engine with the scenario's devices.
    """
    spec = device_spec(scenario)
    stream = load_stream(spec.dataset, data_dir=spec.data_dir, n_tasks=spec.n_tasks, seed=spec.seed,
                         max_per_class=spec.max_per_class)
    # the server's copy evaluates the global model: on a GPU where the devices train on one and this
    # host has one, else on the CPU (a driver without a GPU can still run a GPU fleet)
    host = "cpu" if spec.learner.train.device == "cpu" else "auto"
    learner = Learner(spec.learner.with_device(host), stream.input_shape, stream.num_classes)
    config = replace(server_config(scenario, spec, learner), run_key=run_key(scenario, out_dir))
    if launch is None:  # Flower's simulation engine registers its nodes one by one while the ServerApp
        # starts: wait for every simulated device, or round 1 may sample from part of the fleet
        config = replace(config, min_available=spec.devices)
    ckpt = read_checkpoint(out_dir) if resume else None
    # everything that can fail on bad input has run: only now touch the output folder
    with folder_lock(out_dir):
        return _run(scenario, out_dir, spec, stream, learner, config, ckpt, on_round=on_round, verbose=verbose,
                    client_app=client_app, force=force or resume, ray_address=ray_address, launch=launch)


def _run(scenario: Scenario, out_dir: Path, spec: DeviceSpec, stream: TaskStream, learner: Learner,
         config: ServerConfig, ckpt: Checkpoint | None, *, on_round, verbose: bool, client_app, force: bool,
         ray_address: str | None, launch: Launch | None) -> dict:
    base = make_world(scenario)
    world = AsyncWorld(base) if scenario.federation.mode == "async" else base
    buffer = buffer_config(scenario)
    ledger = Ledger(scenario.device_profiles())
    if ckpt is None:
        prepare_output_dir(out_dir, force=force)
        write_text(out_dir / "scenario.yaml", yaml.safe_dump(scenario.to_dict(), sort_keys=False))
        weights, masks = learner.weights_numpy(), learner.masks_numpy() if config.sparsity is not None else {}
        rows, device_rows, done, wall0 = [], [], 0, 0.0
    else:
        weights, masks, done = ckpt.weights, ckpt.masks, ckpt.round
        rows, device_rows, wall0 = ckpt.state["rows"], ckpt.state.get("device_rows", []), ckpt.state["wall_s"]
        world.restore(ckpt.state["world"])
        ledger.restore(ckpt.state["ledger"])
        # states written in the round that never finished (asynchronous devices name theirs by dispatch)
        last = int(ckpt.state["strategy"].get("dispatch", done))
        for device in range(spec.devices):
            state_store.discard_after(device_state_dir(out_dir), device, last)
    rounds_csv = RoundsCsv(out_dir / "rounds.csv", round_columns(spec.n_tasks), rows)
    device_csv = RoundsCsv(out_dir / "device_rounds.csv", DEVICE_ROUND_COLUMNS, device_rows)
    sink: dict = {}
    started = time.perf_counter() - wall0

    def write_summary(status: str) -> None:
        write_json(out_dir / "summary.json",
                   stopped_summary(scenario, sink, rounds_csv.rows, time.perf_counter() - started, status))

    def checkpoint(server_round: int) -> None:
        strategy = sink["strategy"]
        state = {"strategy": strategy.snapshot(), "world": world.snapshot(), "ledger": ledger.snapshot(),
                 "rows": rounds_csv.rows, "device_rows": device_csv.rows, "wall_s": time.perf_counter() - started}
        flight = strategy.flight_arrays() if buffer is not None else {}
        write_checkpoint(out_dir, Checkpoint(server_round, state, strategy.global_weights, strategy.global_masks,
                                             flight))
        write_summary("running")  # a run killed outright leaves this marker: resume it

    def stopped(status: str) -> None:  # interrupted or failed: keep the finished rounds, say how it ended
        rounds_csv.close()
        device_csv.close()
        write_summary(status)

    evaluator = Evaluator(stream, learner, spec, rounds_csv, sink, ledger, on_round, started, checkpoint,
                          device_csv=device_csv)
    resume = Resume(done, ckpt.state["strategy"], ckpt.flight) if ckpt else None
    current_task = (lambda device, clock_s: spec_task(spec, device, 1, clock_s)) if buffer is not None else None
    server_app = make_server_app(config, weights, masks, world, evaluator, sink, resume=resume, buffer=buffer,
                                 current_task=current_task)
    quiet_flower(verbose)
    write_summary("running")
    run_started = time.perf_counter()
    # a cluster of the user's, or the deployment engine, keeps its own files
    scratch = None if ray_address or launch else ray_scratch()
    with stopping(stopped, watch=launch is None, scratch=scratch):
        if done < config.rounds:
            if launch is None:
                backend = backend_config(scratch, ray_address, scenario.train.cpus_per_device,
                                         scenario.train.gpus_per_device)
                launch = simulation(scenario, out_dir, client_app, backend, verbose)
            launch(server_app)
            if "result" not in sink:
                raise RuntimeError("the Flower run ended without a result (see the log with --verbose)")
        else:  # stopped after its last round was checkpointed, before it was written up
            assert resume is not None  # done >= config.rounds >= 1: a checkpoint was read
            sink["strategy"] = make_strategy(config, world, buffer, current_task)
            restore_strategy(sink["strategy"], resume, weights, masks)
    strategy = sink["strategy"]
    if strategy.unversioned is not None:
        ledger.add_work(*strategy.unversioned)
    status = "failed" if strategy.totals.every_reply_failed else "complete"  # no update was ever aggregated
    summary = {"status": status, **summarise(scenario, strategy, rounds_csv.rows, time.perf_counter() - started),
               "wall_breakdown_s": wall_breakdown(strategy, evaluator, run_started, time.perf_counter())}
    write_json(out_dir / "summary.json", summary)
    write_csv(out_dir / "devices.csv", ledger.rows(), DEVICE_COLUMNS)
    if buffer is not None:
        write_csv(out_dir / "arrivals.csv", strategy.arrival_rows, ARRIVAL_COLUMNS)
    write_model(out_dir / "model.npz", strategy.global_weights, strategy.global_masks)
    remove_checkpoint(out_dir)
    write_plots(scenario, spec, base, ledger, rounds_csv.rows, summary, out_dir)
    return summary


def simulation(scenario: Scenario, out_dir: Path, client_app, backend: dict, verbose: bool) -> Launch:
    """Flower's simulation engine: one SuperNode per device, each with its own state folder."""
    from flwr.simulation import run_simulation

    from clients.app import make_client_app

    app = client_app or make_client_app(str(device_state_dir(out_dir)), scenario.fleet.stock_devices())
    return lambda server_app: run_simulation(server_app=server_app, client_app=app,
                                             num_supernodes=scenario.fleet.devices, backend_config=backend,
                                             verbose_logging=verbose)


def wall_breakdown(strategy: SparseFedAvg, evaluator: Evaluator, started: float, ended: float) -> dict:
    """Where this process's wall time went: starting Ray and Flower until the first round was configured,
    the world (simpy), aggregation (validation included), evaluation (and checkpoints), and training (the
    rest: waiting for the devices, Flower's messaging included)."""
    total = ended - started
    startup = (strategy.started_s - started) if strategy.started_s is not None else total
    parts = {"startup": startup, "world": strategy.spent["world"], "aggregation": strategy.spent["aggregation"],
             "evaluation": evaluator.spent_s}
    return {**{k: round(v, 3) for k, v in parts.items()}, "training": round(total - sum(parts.values()), 3),
            "total": round(total, 3)}


def write_plots(scenario: Scenario, spec: DeviceSpec, world: SimWorld, ledger: Ledger, rows: list[dict],
                summary: dict, out_dir: Path) -> None:
    label = f"{scenario.name}: {spec.learner.label}"
    if rows and rows[-1].get("class_il_accuracy") is not None:  # a dry run has no accuracy
        plot_accuracy(rows, spec.n_tasks, out_dir / "accuracy.png", label)
        plot_accuracy_time({label: summary["curve"]}, out_dir / "accuracy_time.png", label)
    if rows:
        plot_bytes(rows, out_dir / "bytes.png", label)
    if scenario.federation.mode == "async":  # the round timelines picture synchronous rounds
        arrivals = out_dir / "arrivals.csv"
        if arrivals.exists():
            plot_staleness(list(csv.DictReader(arrivals.open())), out_dir / "staleness.png",
                           f"{label}: arrivals (buffer {scenario.federation.buffer_size})",
                           scenario.federation.max_staleness)
        return
    if ledger.timeline is not None:
        server_round, timing = ledger.timeline
        plot_timeline(timing.devices, timing.start_s, timing.sim_time_s, world.deadline_s,
                      out_dir / "timeline.png", f"{scenario.name}: round {server_round} "
                      f"({spec.learner.label}, budget {scenario.timing.budget}, {world.kernels.kind} kernels)",
                      dict(enumerate(scenario.device_profiles())))
    if ledger.rounds:
        plot_timeline_rounds(ledger.rounds, ledger.tracked, out_dir / "timeline_rounds.png",
                             f"{scenario.name}: every round ({spec.learner.label}, budget {scenario.timing.budget})",
                             dict(enumerate(scenario.device_profiles())), fleet=len(ledger.devices),
                             deadline_s=world.deadline_s)


def buffer_config(scenario: Scenario) -> BufferConfig | None:
    """FedBuff's settings in asynchronous mode (concurrency defaults to devices_per_round), else None."""
    f = scenario.federation
    if f.mode != "async":
        return None
    return BufferConfig(f.buffer_size, f.max_staleness, f.concurrency or scenario.sample_size())


def make_world(scenario: Scenario) -> SimWorld:
    """The simpy world of a scenario: its devices under its budget profile and kernel model."""
    t = scenario.timing
    return SimWorld(scenario.resolved_device_profiles(), scenario.budget_profile(),
                    deadline_s=t.deadline_s, keep_first=t.keep_first, offline_rate_per_s=t.offline_rate_per_s,
                    seed=scenario.seed, kernels=scenario.kernel_model(),
                    server_ingress_mbps=t.server_ingress_mbps, server_egress_mbps=t.server_egress_mbps,
                    plan_quantile=t.plan_quantile)


def stopped_summary(scenario: Scenario, sink: dict, rows: list[dict], wall_s: float, status: str) -> dict:
    """summary.json of a run that has not completed: what its finished rounds show, and its status."""
    if "strategy" not in sink:  # stopped before the server started
        return {"status": status, "scenario": scenario.name, "rounds_completed": len(rows), "wall_s": wall_s}
    return {"status": status, **summarise(scenario, sink["strategy"], rows, wall_s)}


def summarise(scenario: Scenario, strategy, rows: list[dict], wall_s: float) -> dict:
    t = strategy.totals
    final = rows[-1] if rows else {}
    return {
        "scenario": scenario.name,
        "method": device_spec(scenario).learner.label,
        **learning_metrics(rows, scenario.last_k),
        "final_task_accuracies": [final.get(f"acc_task_{i}") for i in range(final.get("tasks_reached", 0))],
        "final_task_il_accuracies": [final.get(f"til_task_{i}") for i in range(final.get("tasks_reached", 0))],
        "rounds_completed": len(rows),
        "sim_time_s": strategy.sim_time_s,
        "energy_j": t.energy_j,
        "idle_energy_j": t.idle_energy_j,
        "upload_bytes": t.upload_bytes,
        "download_bytes": t.download_bytes,
        "train_flops": t.train_flops,
        "dropped_updates": t.dropped_updates,
        "rejected_updates": t.rejected_updates,
        "failed_replies": t.failed_replies,
        "timed_out_replies": t.timed_out,
        "rounds_without_update": sum(1 for r in rows if int(r.get("accepted", 0)) == 0),
        "rounds_nobody_online": sum(1 for r in rows if r.get("online") not in (None, "") and int(r["online"]) == 0),
        "mode": scenario.federation.mode,
        "accepted_updates": t.accepted_updates,
        "energy_per_update_j": (t.energy_j / t.accepted_updates) if t.accepted_updates else None,
        **({"arrivals": arrival_figures(strategy.arrival_rows)} if hasattr(strategy, "arrival_rows") else {}),
        "declined": t.declined,
        "adapted": t.adapted,
        "statuses": {s: sum(int(r.get(f"n_{s}", 0)) for r in rows)
                     for s in (*STATUS_COUNTS, "offline", "adapted")},
        "wasted_train_flops": t.wasted_train_flops,
        "executed_flops": t.executed_flops,
        "wasted_executed_flops": t.wasted_executed_flops,
        "wasted_upload_bytes": t.wasted_upload_bytes,
        "wasted_energy_j": t.wasted_energy_j,
        "budget": scenario.timing.budget,
        "kernels": scenario.timing.kernels,
        "curve": [[r["sim_time_s"], r.get("class_il_accuracy"), r.get("task_il_accuracy")] for r in rows],
        "rejections": t.rejections[:50],
        "notes": t.notes[:50],
        "notes_left_out": max(0, len(t.notes) - 50) + max(0, len(t.rejections) - 50),
        "wall_s": wall_s,
    }
