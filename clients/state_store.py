"""A device's learner state on disk: one file per round it finished, so a run can go back to any round.

A device writes `device-<id>/round-<r>.pt` after each round r whose update it
sent, and starts round r from its newest file of an earlier round. Keeping the
round in the name is what makes a resumed run exact: files written in a round
that never finished (the run was killed mid-round) are newer than the run's
last checkpoint and are discarded when it resumes (`discard_after`), and
files older than a device's newest checkpointed state are pruned (`prune`).
Writes go to a temporary name and are renamed into place, so a crash never
leaves half a file; reads are bounded in size.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from clients.errors import InputError

MAX_STATE_BYTES = 4 << 30  # a learner state (model, masks, buffer) far above any edge device's memory
_NAME = re.compile(r"round-(\d{1,9})\.pt")
_DEVICE = re.compile(r"device-(\d{1,9})")


def device_folder(root: Path, device: int) -> Path:
    return Path(root) / f"device-{int(device)}"


def device_folders(root: Path) -> list[tuple[Path, int]]:
    """(state root, device id) of every device folder anywhere under `root` (a run key may nest them)."""
    if not Path(root).is_dir():
        return []
    return [(p.parent, int(m.group(1))) for p in sorted(Path(root).rglob("device-*"))
            if p.is_dir() and (m := _DEVICE.fullmatch(p.name))]


def state_rounds(root: Path, device: int) -> list[int]:
    """The rounds for which this device has a state file, in order."""
    folder = device_folder(root, device)
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _NAME.fullmatch(p.name)))


def save_state(root: Path, device: int, server_round: int, blob: bytes) -> Path:
    """Write the state after `server_round`, atomically and never through a link."""
    folder = device_folder(root, device)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"round-{int(server_round)}.pt"
    tmp = folder / f".round-{int(server_round)}.pt.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_state(root: Path, device: int, before_round: int) -> bytes | None:
    """The newest state written before `before_round` (None on a device's first round)."""
    rounds = [r for r in state_rounds(root, device) if r < before_round]
    if not rounds:
        return None
    path = device_folder(root, device) / f"round-{rounds[-1]}.pt"
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_STATE_BYTES:
            raise InputError(f"state file '{path}' is {size} bytes, over the {MAX_STATE_BYTES} allowed")
        return f.read()


def prune(root: Path, device: int, up_to_round: int) -> None:
    """Remove every state older than the newest one written at or before `up_to_round`.

    A device that has just saved round r prunes up to r - 1 and so keeps two
    files: the new one, and the one a run checkpointed before round r would
    resume from.
    """
    kept = [r for r in state_rounds(root, device) if r <= up_to_round]
    for r in kept[:-1]:
        (device_folder(root, device) / f"round-{r}.pt").unlink(missing_ok=True)


def discard_after(root: Path, device: int, server_round: int) -> None:
    """Remove the states of rounds after `server_round` (a round that never finished)."""
    for r in state_rounds(root, device):
        if r > server_round:
            (device_folder(root, device) / f"round-{r}.pt").unlink(missing_ok=True)


def describe(blob: bytes) -> dict:
    """What a saved learner state holds, for people: task position, buffer, mask density, work so far.

    Read as untrusted data (torch.load with weights_only). `fingerprint` hashes the masks
    and the buffer, so two states can be compared at a glance.
    """
    import hashlib
    import io

    import torch

    try:
        state = torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")
        task, buffer, counters = state["task"], state["buffer"], state["counters"]
    except Exception as err:
        raise InputError(f"not a learner state: {' '.join(str(err).split())[:200]}") from None
    masks = state.get("masks") or {}
    digest = hashlib.sha256()
    for name in sorted(masks):
        digest.update(name.encode() + masks[name].numpy().tobytes())
    for key in ("examples", "labels"):
        if key in buffer:
            digest.update(buffer[key].numpy().tobytes())
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    return {
        "task": int(task["task_id"]), "epoch": int(task["epoch"]), "classes": list(task["classes"]),
        "buffer_seen": int(buffer["num_seen"]), "buffer_held": int(len(buffer.get("labels", ()))),
        "mask_density": round(kept / total, 4) if total else None,
        "examples": int(counters["examples"]), "steps": int(counters["steps"]),
        "train_flops": float(counters["train_flops"]), "fingerprint": digest.hexdigest()[:16],
    }
