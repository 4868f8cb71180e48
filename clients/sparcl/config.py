"""The learner's settings (what to train, how, on which torch device) and the records of its work.

Plain dataclasses, checked where they are built, so a scenario, a benchmark and
a real device describe a learner the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace


import torch

from clients.batching import BATCHINGS
from clients.budget import Fit
from clients.cl.methods import MethodConfig
from clients.errors import InputError, excerpt
from clients.sparcl.ddr import DDRConfig
from clients.sparcl.dgm import DGMConfig
from clients.sparcl.tdm import TDMConfig


METHOD_LABELS = {"finetune": "Finetune", "er": "ER", "der": "DER", "derpp": "DER++"}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (SparCL reference: plain SGD, lr 0.03, batch 32)."""

    epochs_per_task: int = 20
    batch_size: int = 32
    lr: float = 0.03
    seed: int = 0
    # at each task's end, recompute the norms' running statistics (Learner.recalibrate_norms);
    # off is the reference, which evaluates with the statistics training left behind
    recalibrate_norms: bool = False
    # where the learner's tensors live: cpu, cuda (the process's current GPU), cuda:N, or auto
    # (cuda where this process sees one); resolved where the learner runs (torch_device)
    device: str = "cpu"
    # how an epoch is cut into batches: as PyTorch's DataLoader (the reference; a small remainder
    # last) or balanced (as many steps, sizes within one example); clients.batching
    batches: str = "loader"

    def __post_init__(self) -> None:
        if self.epochs_per_task < 1:
            raise InputError(f"epochs_per_task must be >= 1, got {self.epochs_per_task}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise InputError(f"lr must be > 0, got {self.lr}")
        check_device_name(self.device)
        if self.batches not in BATCHINGS:
            raise InputError(f"batches must be one of {', '.join(BATCHINGS)}, got {excerpt(self.batches)}")


def check_device_name(name: str, what: str = "train device") -> None:
    if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", str(name)):
        raise InputError(f"{what} must be cpu, cuda, cuda:N or auto, got {excerpt(name)}")


def torch_device(name: str, what: str = "train device") -> torch.device:
    """The torch device a learner configured with `name` runs on in this process.

    Resolved where the learner runs, not where the scenario was read: a server
    without a GPU hands `auto` to devices that may have one. Asking for CUDA
    where torch sees none is an error, not a silent fall-back to the CPU.
    `what` names the setting in error messages.
    """
    check_device_name(name, what)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{what} {name!r}: torch {torch.__version__} sees no CUDA GPU here "
                             "(a CPU build, no driver, or CUDA_VISIBLE_DEVICES hides it)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"{what} {name!r}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    return device


@dataclass(frozen=True)
class SparCLConfig:
    """Which SparCL components are on; None switches one off."""

    tdm: TDMConfig | None = field(default_factory=TDMConfig)
    ddr: DDRConfig | None = field(default_factory=DDRConfig)
    dgm: DGMConfig | None = field(default_factory=DGMConfig)

    @classmethod
    def dense(cls) -> SparCLConfig:
        return cls(tdm=None, ddr=None, dgm=None)

    @property
    def enabled(self) -> bool:
        return any(c is not None for c in (self.tdm, self.ddr, self.dgm))

    @property
    def components(self) -> str:
        on = [n.upper() for n in ("tdm", "ddr", "dgm") if getattr(self, n) is not None]
        return "+".join(on) if on else "dense"


@dataclass(frozen=True)
class LearnerConfig:
    method: MethodConfig = field(default_factory=MethodConfig)
    sparcl: SparCLConfig = field(default_factory=SparCLConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    backbone: str = "auto"
    width: int | None = None
    norm: str = "batch"          # the backbone's normalisation: batch or group (clients.backbones.norm_layer)

    def with_device(self, device: str) -> LearnerConfig:
        """The same learner placed on another device (a server's copy needs no GPU of its own)."""
        return replace(self, train=replace(self.train, device=device))

    @property
    def label(self) -> str:
        base = METHOD_LABELS[self.method.name]
        return f"SparCL-{base}" if self.sparcl.enabled else base


@dataclass
class Counters:
    """What the learner has spent since it was built (restored with its state)."""

    train_flops: float = 0.0
    kernel_flops: float = 0.0   # FLOPs the device's kernels executed (clients.budget): what time is made of
    examples: int = 0           # examples through the model, buffer draws included
    steps: int = 0
    removed: int = 0            # training examples removed by DDR
    peak_memory: int = 0        # bytes, estimated with masked layers stored sparse
    peak_memory_dense: int = 0  # bytes, the same with every weight stored dense


@dataclass(frozen=True)
class RoundWork:
    """What one budgeted round did (differences of the counters), or why it declined."""

    fit: Fit
    steps: int = 0
    examples: int = 0
    train_flops: float = 0.0
    kernel_flops: float = 0.0
    removed: int = 0
    peak_memory_bytes: int = 0      # this round's estimate, storage as the kernels hold it
    compute_limited: bool = False   # stopped early: the next step would not fit the compute budget
    declined: str | None = None
    accuracy: float = 0.0           # training accuracy of the steps done (%)
