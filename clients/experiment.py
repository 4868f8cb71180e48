"""Train one learner through a whole task stream and measure it (no Flower).

This is what `fleet bench sparcl` runs for each configuration: the same
stream, the same seed, dense or SparCL, timed and counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


from clients.data import TaskStream
from clients.metrics import average_accuracy, forgetting, learning_accuracy, task_accuracy
from clients.sparcl.config import LearnerConfig
from clients.sparcl.learner import Learner


@dataclass(frozen=True)
class StreamResult:
    label: str
    components: str
    seed: int
    class_il_matrix: list[list[float]]
    task_il_matrix: list[list[float]]
    train_flops: float
    examples: int
    removed: int
    peak_memory_bytes: int
    dense_peak_memory_bytes: int
    wall_s: float
    cpu_s: float             # process CPU time of training: what a busy machine cannot inflate
    final_density: float | None
    epochs: int
    # weights of the layers SparCL masks (the 3x3 convolutions outside the stem): all of them, and those
    # live at the stream's end (every one for a dense run); None where a result predates them
    masked_weights: int | None = None
    live_weights: int | None = None

    @property
    def class_il(self) -> float:
        return average_accuracy(self.class_il_matrix[-1])

    @property
    def task_il(self) -> float:
        return average_accuracy(self.task_il_matrix[-1])

    @property
    def forgetting(self) -> float:
        return forgetting(self.class_il_matrix)

    @property
    def forgetting_authors(self) -> float:
        """Forgetting as SparCL's code and mammoth define it (never negative): clients.metrics.forgetting."""
        return forgetting(self.class_il_matrix, authors=True)

    @property
    def learning_acc(self) -> float:
        return learning_accuracy(self.class_il_matrix)

    def to_dict(self) -> dict:
        return {
            "label": self.label, "components": self.components, "seed": self.seed,
            "class_il": self.class_il, "task_il": self.task_il, "forgetting": self.forgetting,
            "forgetting_authors": self.forgetting_authors, "learning_acc": self.learning_acc,
            "train_flops": self.train_flops, "examples": self.examples, "removed": self.removed,
            "peak_memory_bytes": self.peak_memory_bytes,
            "dense_peak_memory_bytes": self.dense_peak_memory_bytes,
            "wall_s": self.wall_s, "cpu_s": self.cpu_s, "final_density": self.final_density,
            "epochs": self.epochs, "masked_weights": self.masked_weights, "live_weights": self.live_weights,
            "class_il_matrix": self.class_il_matrix, "task_il_matrix": self.task_il_matrix,
        }


def evaluate_seen(learner: Learner, stream: TaskStream, upto: int) -> tuple[list[float], list[float]]:
    """Class-IL and Task-IL accuracy on every task 0..upto."""
    pairs = [task_accuracy(learner.model, t.x_test, t.y_test, t.classes) for t in stream.tasks[: upto + 1]]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def run_stream(config: LearnerConfig, stream: TaskStream,
               on_epoch: Callable[[int, int], None] | None = None) -> StreamResult:
    """Train task after task; evaluate on all seen tasks after each one.

    Wall and process CPU time cover training only (evaluation is the same for
    every method).
    `on_epoch(task, epoch)` is called after each epoch (progress display).
    """
    learner = Learner(config, stream.input_shape, stream.num_classes)
    cil, til, wall, cpu = [], [], 0.0, 0.0
    for task in stream.tasks:
        start, start_cpu = time.perf_counter(), time.process_time()
        learner.begin_task(task.task_id, task.classes, task.x_train, task.y_train)
        while not learner.task_done:
            learner.train_epoch()
            if on_epoch:
                on_epoch(task.task_id, learner.epoch)
        learner.wait()  # a GPU's kernels are queued: count them before reading the clocks
        wall += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        row_c, row_t = evaluate_seen(learner, stream, task.task_id)
        cil.append(row_c)
        til.append(row_t)
    densities = learner.weight_densities()
    masked = {n: p.numel() for n, p in learner.model.named_parameters() if n in learner.masked_names}
    live = sum(int(learner.masks.live(n).sum()) for n in masked) if learner.masks else sum(masked.values())
    c = learner.counters
    return StreamResult(
        label=config.label, components=config.sparcl.components, seed=config.train.seed,
        class_il_matrix=cil, task_il_matrix=til, train_flops=c.train_flops, examples=c.examples,
        removed=c.removed, peak_memory_bytes=c.peak_memory, dense_peak_memory_bytes=c.peak_memory_dense,
        wall_s=wall, cpu_s=cpu, epochs=config.train.epochs_per_task,
        final_density=(sum(densities.values()) / len(densities)) if densities else None,
        masked_weights=sum(masked.values()), live_weights=live,
    )
