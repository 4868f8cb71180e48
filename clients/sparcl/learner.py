"""The continual learner of one device: a rehearsal method, optionally wrapped in SparCL.

`Learner` composes the three SparCL components, each switchable for ablations:
TDM (weight masks), DDR (data removal) and DGM (gradient masks). With all three
off it is the dense rehearsal method. Training runs task by task and epoch by
epoch (`begin_task`, `train_epoch`), so a federated client can train a few
epochs per round and keep its place in the task between rounds; schedules are
fractions of a task's epochs, so they work at 5 or at 50 epochs per task.

Under channel-granular TDM a backbone that can (the SmallCNN) runs compacted,
on its live channels only: the learner hands it the live channels after every
mask change and counts the FLOPs the compacted layers really run.
"""

from __future__ import annotations

import io
import warnings
from collections import OrderedDict

import math

import numpy as np
import torch
from torch import nn

from clients.accounting import (
    MemoryEstimate, buffer_bytes, compacted_densities, forward_flops_per_example, peak_memory, profile_model,
    training_flops_per_example,
)
from clients.batching import batch_slices, next_batch
from clients.budget import KernelModel, RoundBudget, fit_memory, kernel_flops_per_example
from clients.backbones import SmallCNN, build_backbone, compacted_inputs, masked_parameter_names
from clients.cl.methods import build_method
from clients.errors import InputError
from clients.sparcl.config import Counters, LearnerConfig, RoundWork, torch_device
from clients.sparcl.ddr import DataRemoval
from clients.sparcl.dgm import GradientMasks
from clients.sparcl.sparse_kernels import SparseKernels
from clients.sparcl.sparse_kernels import available as sparse_kernels_available
from clients.sparcl.tdm import WeightMasks, update_epochs

class Learner:
    def __init__(self, config: LearnerConfig, input_shape: tuple[int, int, int], num_classes: int) -> None:
        self.config = config
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        seed = config.train.seed
        self.device = torch_device(config.train.device)
        # seeded initialisation without touching the global RNG; on the CPU only, so building
        # a learner never initialises CUDA (the server's copy, CPU runs on a GPU machine)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = build_backbone(config.backbone, self.input_shape, num_classes, config.width, config.norm)
        self.cost = profile_model(self.model, self.input_shape)
        # initialised on the CPU, then moved: the same seed gives the same network on every device.
        # The random streams stay on the CPU too (indices, regrowth, buffer draws), so a GPU run
        # draws what a CPU run draws.
        self.model.to(self.device)
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.method = build_method(self.model, config.method, self.generator)
        self.masked_names = masked_parameter_names(self.model)
        sp = config.sparcl
        self.masks = WeightMasks(self.model, self.masked_names, sp.tdm, self.generator) if sp.tdm else None
        # layers run compacted -> the masked layer whose live channels are their input (empty: none)
        self.compacted_inputs = compacted_inputs(self.model) if self.masks and self.masks.channel else {}
        self.sparse_kernels = self._sparse_kernels(config) if sp.tdm and sp.tdm.sparse_kernels else None
        self._sync_compaction()
        self.dgm = GradientMasks(self.model, self.masked_names, sp.dgm) if sp.dgm else None
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.train.lr)
        self.batch_size = config.train.batch_size  # a memory budget may shrink it for a round
        self.kernels = KernelModel()                # what the device's kernels do with masked layers
        self.counters = Counters()
        self.task_id = -1
        self.epoch = 0
        self.classes: tuple[int, ...] = ()
        self.x = torch.empty(0)
        self.y = torch.empty(0, dtype=torch.long)
        self.removal: DataRemoval | None = None
        self.last_grads: dict[str, torch.Tensor] | None = None
        self.order: np.ndarray | None = None  # this epoch's example order; None between epochs
        self.cursor = 0                       # examples of `order` already trained
        self.epoch_hits = 0
        self._costs: tuple[float, float, dict[str, float]] | None = None  # see step_costs
        self._round_peak = 0

    # -- the task schedule -------------------------------------------------
    @property
    def epochs_per_task(self) -> int:
        return self.config.train.epochs_per_task

    def wait(self) -> None:
        """Block until the device's queued kernels are done (GPU kernels run asynchronously, so a
        timer read before this misses them); nothing to wait for on the CPU."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def begin_task(self, task_id: int, classes: tuple[int, ...], x: torch.Tensor, y: torch.Tensor) -> None:
        """Start a task with its full training data (DDR removals do not carry over)."""
        self.task_id, self.classes, self.epoch = task_id, tuple(classes), 0
        self.attach(x, y)
        self.order, self.cursor, self.epoch_hits = None, 0, 0
        self.method.begin_task(self.classes, task_id)
        ddr = self.config.sparcl.ddr
        self.removal = DataRemoval(len(y), self.epochs_per_task, ddr, self.rng) if ddr else None
        if self.masks:
            self.masks.begin_task(self.last_grads, (task_id, 0))
            self._mask_changed()

    @property
    def task_done(self) -> bool:
        return self.epoch >= self.epochs_per_task

    def train_epoch(self) -> float:
        """One epoch over the task's active examples (the rest of it, if one is under way);
        returns its training accuracy (%)."""
        if self.order is None:
            self._start_epoch()
        assert self.order is not None  # _start_epoch drew it
        while self.cursor < len(self.order):
            self._train_batch(self._next_batch())
        return self._finish_epoch()

    def _next_batch(self) -> int:
        """The size of the epoch's next batch (clients.batching), at the batch size this round allows."""
        assert self.order is not None  # only within an epoch
        return next_batch(len(self.order) - self.cursor, self.batch_size, self.config.train.batches)

    def _start_epoch(self) -> None:
        """The schedule's epoch-start events (mask update, DGM restart, removal), then a fresh order."""
        if self.masks and self.epoch in update_epochs(self.epochs_per_task, self.masks.config):
            self.masks.update(self.last_grads, (self.task_id, self.epoch))
            self._mask_changed()
        if self.dgm:  # the reference's batch count restarts every epoch
            self.dgm.restart()
        if self.removal:
            self.counters.removed += len(self.removal.begin_epoch(self.epoch))
        active = self.removal.active if self.removal else np.arange(len(self.y))
        self.order, self.cursor, self.epoch_hits = self.rng.permutation(active), 0, 0

    def _train_batch(self, batch: int) -> int:
        """The next batch of this epoch's order; returns how many of it were classified right."""
        assert self.order is not None  # only within an epoch
        idx = self.order[self.cursor:self.cursor + batch]
        self.cursor += len(idx)
        hits = self._step(idx, keep_grads=self.cursor >= len(self.order))
        self.epoch_hits += hits
        return hits

    def _finish_epoch(self) -> float:
        assert self.order is not None  # only within an epoch
        accuracy = 100.0 * self.epoch_hits / max(1, len(self.order))
        self.epoch += 1
        self.order, self.cursor, self.epoch_hits = None, 0, 0
        if self.task_done and self.config.train.recalibrate_norms:
            self.recalibrate_norms()
        return accuracy

    # -- the norms' statistics at a task's end -------------------------------
    @torch.no_grad()
    def recalibrate_norms(self) -> int:
        """Recompute the norms' running statistics from the task's data and the buffer; weights unchanged.

        Why: evaluation uses the running statistics, an average that lags the
        weights by tens of steps. When a task's last steps move the weights far,
        it describes a network that no longer exists: on Split Fashion-MNIST at
        lr 0.1 a SparCL run scored 51.7% Task-IL (chance is 50) with them and
        92.3% with statistics recomputed, and dense DER++ 50.0% against 95.3%
        (benchmarks/norm_lag.py). One pass without gradients, in the mix a
        training step sees (see _recalibration_batches); counted as forward FLOPs.

        Returns the batches the pass ran (0: nothing to recalibrate). The
        statistics are plain averages over them, so devices' statistics
        averaged with these counts as weights are what one pass over all their
        batches gives (server.aggregate.pool_statistics).
        """
        norms = self._batch_norms()
        if not norms or len(self.y) == 0:
            return 0
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the whole pass
        self.model.train()
        batches = 0
        try:
            for x in self._recalibration_batches():
                self.model(x)
                batches += 1
        finally:
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
        densities = self.step_costs()[2]
        compacted = compacted_densities(densities, self.compacted_inputs)
        self.counters.train_flops += self.recalibration_examples() * forward_flops_per_example(
            self.cost, densities, compacted)
        self.counters.kernel_flops += self.recalibration_kernel_flops()
        return batches

    def _batch_norms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        return [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    @property
    def has_norm_statistics(self) -> bool:
        """Whether the model keeps running statistics to recalibrate (BatchNorm does, GroupNorm not)."""
        return bool(self._batch_norms())

    def _recalibration_batches(self):
        """Every example of the task (removed ones too: the statistics describe the task), not
        augmented, each batch followed by the method's buffer draws. The task's examples are
        shuffled by (seed, task) and the buffer is read in turn, so the learner's own random
        streams, and with them the training that follows, are untouched."""
        order = np.random.default_rng([self.config.train.seed, self.task_id]).permutation(len(self.y))
        buffer, stored = self.method.buffer, len(self.method.buffer)
        draw, cursor = min(self.method.minibatch, stored), 0
        for part in batch_slices(len(order), self.batch_size, self.config.train.batches):
            yield self.x[order[part]]
            for _ in range(self.method.draws if stored and self.method.replay_on else 0):
                yield buffer.examples[(torch.arange(draw, device=buffer.examples.device) + cursor) % stored]
                cursor = (cursor + draw) % stored

    def recalibration_examples(self, stored: int | None = None) -> int:
        """Examples the recalibration pass pushes through the model (what _recalibration_batches yields),
        with `stored` examples in the buffer (default: as it holds now)."""
        stored = len(self.method.buffer) if stored is None else stored
        batches = math.ceil(len(self.y) / self.batch_size)
        draws = self.method.draws if self.method.replay_on else 0  # the mix a step of this task sees
        return len(self.y) + batches * draws * min(self.method.minibatch, stored)

    def recalibration_kernel_flops(self, stored: int | None = None) -> float:
        """What the pass costs the device's kernels: a training step's cost is three passes of
        one forward's size (clients.budget), so a third of it per example."""
        return self.recalibration_examples(stored) * self.step_costs()[1] / 3.0

    # -- a budgeted round ---------------------------------------------------
    def round_memory(self, batch: int, draw: int, buffer: int) -> int:
        """Peak-memory estimate of a step at these settings, weights stored as the kernels hold them.

        Dense kernels (PyTorch) hold every weight dense, masked or not; only
        sparse kernels hold masked layers as bitmask + values.
        """
        return self.memory(batch + self.method.draws * draw, sparse_storage=self.kernels.kind == "sparse",
                           buffer_capacity=buffer).total

    def train_round(self, epochs: int, budget: RoundBudget | None = None) -> RoundWork:
        """Up to `epochs` epochs' worth of steps of the current task, within the budget.

        Memory first (clients.budget.fit_memory: batch, then buffer draw, then
        buffer); then steps until the next one would overrun the compute
        budget. The epoch position carries over between rounds, so the task's
        schedule (mask updates, removals, the frozen end) follows the work
        really done. Declines, training nothing, when no setting fits the
        memory or not one step fits the compute.
        """
        budget = budget or RoundBudget()
        self.use_kernels(budget.kernels)
        m = self.method
        fit = fit_memory(self.round_memory, budget.memory_bytes, self.config.train.batch_size,
                         self.config.method.minibatch, m.buffer.capacity)
        if fit.declined:
            return RoundWork(fit=fit, declined=fit.declined)
        self.batch_size, m.minibatch = fit.batch, fit.draw
        m.buffer.shrink(fit.buffer)  # a no-op unless the memory budget asked for a smaller buffer
        c = self.counters
        before = (c.steps, c.examples, c.train_flops, c.kernel_flops, c.removed)
        self._round_peak, hits, seen = 0, 0, 0
        active = len(self.removal.active) if self.removal else len(self.y)
        wanted = epochs * math.ceil(active / self.batch_size)
        limited = False
        for _ in range(wanted):
            if self.order is None:
                self._start_epoch()
            assert self.order is not None  # _start_epoch drew it
            n = self._next_batch()
            cost = m.step_examples(n) * self.step_costs()[1]
            ends_task = self.cursor + n >= len(self.order) and self.epoch + 1 >= self.epochs_per_task
            if ends_task and self.config.train.recalibrate_norms:
                cost += self.recalibration_kernel_flops()
            if budget.compute_flops is not None and c.kernel_flops - before[3] + cost > budget.compute_flops:
                limited = True
                break
            hits += self._train_batch(n)
            seen += n
            if self.cursor >= len(self.order):
                self._finish_epoch()
        self.batch_size, m.minibatch = self.config.train.batch_size, self.config.method.minibatch
        steps = c.steps - before[0]
        declined = None
        if steps == 0 and limited:
            assert budget.compute_flops is not None  # only a compute budget limits a round
            declined = (f"its compute budget of {budget.compute_flops / 1e9:.3g} GFLOPs fits no step "
                        f"(one costs {cost / 1e9:.3g})")
        return RoundWork(fit=fit, steps=steps, examples=c.examples - before[1],
                         train_flops=c.train_flops - before[2], kernel_flops=c.kernel_flops - before[3],
                         removed=c.removed - before[4], peak_memory_bytes=self._round_peak,
                         compute_limited=limited, declined=declined,
                         accuracy=100.0 * hits / max(1, seen))

    def _mask_changed(self) -> None:
        """New weight masks: FLOPs per example change and DGM must re-derive its pattern."""
        self._costs = None
        self._sync_compaction()
        if self.dgm:
            self.dgm.restart()

    def _sync_compaction(self) -> None:
        """A compacting backbone learns the live channels of the current masks; one on sparse
        kernels, the format of the live weights."""
        if not (self.compacted_inputs or self.sparse_kernels):
            return
        # either only for a SmallCNN under TDM (backbones.compacted_inputs, _sparse_kernels)
        assert isinstance(self.model, SmallCNN) and self.masks is not None
        if self.compacted_inputs:
            self.model.set_live_channels(self.masks.live_channels())
        if self.sparse_kernels:
            self.model.set_sparse_kernels(self.sparse_kernels.plans({n: self.masks.live(n) for n in self.masks.masks}))

    def _sparse_kernels(self, config: LearnerConfig) -> SparseKernels | None:
        """SparseProp's kernels where installed; elsewhere (a Pi, the server) the same function on dense ones."""
        if self.device.type != "cpu":
            raise InputError(f"sparse kernels are SparseProp's CPU kernels; train device {config.train.device!r} "
                             "runs on a GPU")
        if not hasattr(self.model, "set_sparse_kernels"):
            raise InputError(f"sparse kernels run on the small-cnn backbone, not {type(self.model).__name__}")
        if not sparse_kernels_available():
            warnings.warn("sparcl.sparse_kernels: SparseProp is not installed here, so the masked layers run "
                          "on dense kernels (the same function)", stacklevel=2)
            return None
        return SparseKernels(self.model, self.masked_names, (config.train.batch_size, *self.input_shape))

    # -- one optimisation step ---------------------------------------------
    def _step(self, idx: np.ndarray, keep_grads: bool) -> int:
        x, y = self.x[idx], self.y[idx]
        self.model.train()
        self.optimizer.zero_grad()
        step = self.method.loss(x, y)
        step.loss.backward()
        if keep_grads and self.masks:  # the drop score uses the last minibatch's gradient
            self.last_grads = {}
            for n, p in self.masks.params.items():
                assert p.grad is not None  # every masked weight is in the forward pass
                self.last_grads[n] = p.grad.detach().clone()
        if self.masks:
            self.masks.mask_grads()
        if self.dgm and self.dgm.apply(self.masks.masks if self.masks else None):
            self._costs = None
        self.optimizer.step()
        if self.masks:
            self.masks.apply()
        logits = step.logits.detach()
        self.method.end_step(x, y, logits)
        # DDR judges the raw outputs, as the reference does: with other tasks' logits
        # masked, nearly every example of a 2-class task is "right" and removal is random
        hits = (logits.argmax(1) == y).cpu().numpy()
        if self.removal:
            self.removal.tracker.record(idx, hits)
        self._account(step.examples)
        return int(hits.sum())

    def weight_densities(self) -> dict[str, float]:
        return self.masks.densities() if self.masks else {}

    def grad_densities(self) -> dict[str, float]:
        if self.dgm:
            return self.dgm.densities()
        return self.masks.trainable_densities() if self.masks and self.masks.frozen else {}

    def use_kernels(self, kernels: KernelModel) -> None:
        """The kernel model the device runs (what a masked layer costs it); costs are worked out again."""
        if self.kernels != kernels:
            self.kernels, self._costs = kernels, None

    def step_costs(self) -> tuple[float, float, dict[str, float]]:
        """Counted and kernel FLOPs per example and weight densities, recomputed when a mask changes."""
        if self._costs is None:
            densities = self.weight_densities()
            compacted = compacted_densities(densities, self.compacted_inputs)  # channel masks: live shares
            self._costs = (training_flops_per_example(self.cost, densities, self.grad_densities(), compacted),
                           kernel_flops_per_example(self.cost, densities, self.kernels, compacted), densities)
        return self._costs

    def _account(self, examples: int) -> None:
        flops_per_example, kernel_per_example, densities = self.step_costs()
        c = self.counters
        c.train_flops += examples * flops_per_example
        c.kernel_flops += examples * kernel_per_example
        c.examples += examples
        c.steps += 1
        sparse = self.memory(examples, densities=densities).total
        dense = self.memory(examples, sparse_storage=False, densities=densities).total
        c.peak_memory = max(c.peak_memory, sparse)
        c.peak_memory_dense = max(c.peak_memory_dense, dense)
        self._round_peak = max(self._round_peak, sparse if self.kernels.kind == "sparse" else dense)

    def memory(self, examples_per_step: int, sparse_storage: bool = True,
               densities: dict[str, float] | None = None, buffer_capacity: int | None = None) -> MemoryEstimate:
        """Peak training memory of one step; the replay buffer at its current capacity unless given."""
        densities = self.weight_densities() if densities is None else densities
        capacity = self.method.buffer.capacity if buffer_capacity is None else buffer_capacity
        buffer = buffer_bytes(capacity, self.input_shape, self.num_classes,
                              with_logits=self.config.method.name in ("der", "derpp"))
        return peak_memory(self.cost, densities, examples_per_step=examples_per_step, buffer_bytes=buffer,
                           sparse_storage=sparse_storage and self.masks is not None)

    # -- persistence (a federated device keeps this between rounds) ---------
    def state_dict(self) -> dict:
        removal = None
        if self.removal:
            t = self.removal.tracker
            removal = {"active": self.removal.active, "last": t.last, "events": t.events,
                       "learned": t.learned, "presentations": t.presentations}
        return {
            "model": self.model.state_dict(),
            "masks": self.masks.state_dict() if self.masks else None,
            "dgm": {"patterns": self.dgm.patterns, "batches": self.dgm.batches} if self.dgm else None,
            "buffer": self.method.buffer.state_dict(),
            "task": {"task_id": self.task_id, "epoch": self.epoch, "classes": self.classes,
                     "order": self.order, "cursor": self.cursor, "epoch_hits": self.epoch_hits},
            "removal": removal,
            "last_grads": self.last_grads,
            "counters": vars(self.counters).copy(),
            "generator": self.generator.get_state(),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a saved learner; then `attach` the current task's data (not saved)."""
        self.model.load_state_dict(state["model"])
        if self.masks and state["masks"] is not None:
            self.masks.load_state_dict(state["masks"])
        if self.dgm and state["dgm"] is not None:
            self.dgm.patterns = {n: p.to(self.device) for n, p in state["dgm"]["patterns"].items()}
            self.dgm.batches = state["dgm"]["batches"]
        self.method.buffer.load_state_dict(state["buffer"], self.device)
        task = state["task"]
        self.task_id, self.epoch, self.classes = task["task_id"], task["epoch"], tuple(task["classes"])
        self.order, self.cursor, self.epoch_hits = task["order"], task["cursor"], task["epoch_hits"]
        self.method.begin_task(self.classes, self.task_id)
        self.removal = None
        if state["removal"] is not None and self.config.sparcl.ddr:
            r = state["removal"]
            self.removal = DataRemoval(len(r["last"]), self.epochs_per_task, self.config.sparcl.ddr, self.rng)
            self.removal.active = r["active"]
            t = self.removal.tracker
            t.last, t.events, t.learned, t.presentations = r["last"], r["events"], r["learned"], r["presentations"]
        grads = state["last_grads"]
        self.last_grads = None if grads is None else {n: g.to(self.device) for n, g in grads.items()}
        self.counters = Counters(**state["counters"])
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = state["rng"]
        self._costs = None
        self._sync_compaction()

    def attach(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Give a restored learner its current task's training data (kept on the learner's device)."""
        self.x, self.y = x.to(self.device), y.to(self.device)

    def load_weights(self, weights: dict[str, np.ndarray], masks: dict[str, np.ndarray] | None,
                     shared: dict[str, np.ndarray] | None = None) -> None:
        """Take (global) weights, and masks unless None; re-apply the masks to the weights.

        `shared` (local masks): the global mask; its weights outside this device's
        own mask are kept frozen in the forward pass rather than zeroed.
        """
        state = self.model.state_dict()
        for name, value in weights.items():
            state[name] = torch.from_numpy(np.asarray(value)).to(state[name].dtype).reshape(state[name].shape)
        self.model.load_state_dict(state)
        if self.masks:
            if masks is not None:
                self.masks.load_state_dict({n: torch.from_numpy(np.asarray(masks[n])) for n in self.masks.masks})
            self.masks.frozen = {} if shared is None else {
                n: torch.from_numpy(np.asarray(shared[n])).to(self.device) & ~m for n, m in self.masks.masks.items()}
            self.masks.apply()
            self._mask_changed()

    def weights_numpy(self) -> dict[str, np.ndarray]:
        """Every floating-point tensor of the model's state (weights and norm statistics)."""
        return {name: t.detach().cpu().numpy().copy() for name, t in self.model.state_dict().items()
                if t.is_floating_point()}

    def masks_numpy(self) -> dict[str, np.ndarray]:
        """The weight masks, and under channel granularity the live channels of the norms after them."""
        if not self.masks:
            return {}
        return {n: m.cpu().numpy().copy() for n, m in {**self.masks.masks, **self.masks.norm_masks()}.items()}

    def to_bytes(self) -> bytes:
        """The state as a torch file of tensors, numbers, strings and containers only.

        That is what torch.load(weights_only=True) accepts, so `load_bytes`
        never unpickles code: DDR's numpy arrays travel as tensors and numpy
        scalars as Python numbers.
        """
        buf = io.BytesIO()
        torch.save(_plain_state(self.state_dict()), buf)
        return buf.getvalue()

    def load_bytes(self, blob: bytes) -> None:
        """Restore a state saved by `to_bytes`; a device keeps it in a file, so it is read as untrusted data."""
        try:
            state = torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")  # saved on any device
        except Exception as err:  # weights_only refuses anything but plain data; a bad file fails in many ways
            inner = err.__context__ or err  # torch wraps the unpickler's own, precise reason in a long message
            why = " ".join(str(inner).split())[:200] or type(inner).__name__
            raise InputError(f"device state is not a learner state saved by to_bytes: {why}") from None
        if isinstance(state, dict) and isinstance(state.get("removal"), dict):
            state["removal"] = {k: v.numpy() if isinstance(v, torch.Tensor) else v
                                for k, v in state["removal"].items()}
        if isinstance(state, dict) and isinstance(state.get("task"), dict):  # the epoch's example order
            order = state["task"].get("order")
            state["task"]["order"] = order.numpy() if isinstance(order, torch.Tensor) else order
        self.load_state_dict(state)


def _plain_state(value: object) -> object:
    """`value` with numpy arrays as tensors, numpy scalars as Python numbers and every tensor on the
    CPU, so a state saved on a GPU loads anywhere (see Learner.to_bytes)."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.cpu()  # the same tensor when it is on the CPU already
    if isinstance(value, dict):
        plain = {k: _plain_state(v) for k, v in value.items()}
        if all(plain[k] is v for k, v in value.items()):
            return value  # nothing to convert (a model's state_dict keeps its type and _metadata)
        if isinstance(value, OrderedDict):  # a model's state_dict from a GPU: keep its version _metadata
            plain = OrderedDict(plain)
            plain._metadata = getattr(value, "_metadata", None)  # type: ignore[attr-defined]
        return plain
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_state(v) for v in value)
    return value
