"""Class-incremental task streams and the per-device split of a task (torch only).

A stream is a fixed sequence of tasks, each owning a disjoint group of classes;
labels stay GLOBAL so one classifier head grows across tasks, which is what
class-incremental continual learning (and SparCL) measures. Every loader is
deterministic for a seed so that all devices of a fleet, given the same seed,
see the same stream and only differ by how `partition_indices` splits a task.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clients.errors import InputError, excerpt

DATASETS = ("digits", "synthetic", "mnist", "fashion-mnist", "cifar10")
IDX_DATASETS = ("mnist", "fashion-mnist")  # the four standard IDX files
NUM_CLASSES = {name: 10 for name in DATASETS}  # every supported dataset has 10 classes
INPUT_SHAPES = {"digits": (1, 8, 8), "synthetic": (1, 8, 8), "mnist": (1, 28, 28),
                "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
# Training examples of the smallest class (the standard files; digits after its 70/30 split).
TRAIN_PER_CLASS = {"digits": 122, "synthetic": 60, "mnist": 5421, "fashion-mnist": 6000, "cifar10": 5000}

# Debian's `dataset-fashion-mnist` package (Raspberry Pi OS is Debian too) installs the
# four IDX .gz files here; it is the folder used when a scenario names no data_dir.
DEFAULT_DATA_DIRS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist"}
INSTALL_HINTS = {"fashion-mnist": "apt-get install dataset-fashion-mnist"}
DEFAULT_TASKS = 5

# (divisor to bring raw pixels to [0, 1], per-channel mean, per-channel std)
_MNIST_STATS = (255.0, (0.1307,), (0.3081,))
_FASHION_MNIST_STATS = (255.0, (0.2860,), (0.3530,))  # its 60,000 training images (not MNIST's)
_CIFAR_STATS = (255.0, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension

_CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST_FILE = "test_batch"
_CIFAR_SUBDIR = "cifar-10-batches-py"

_DIGITS_TEST_FRACTION = 0.3
_SYNTHETIC_CLASSES = 10
_SYNTHETIC_SHAPE = (1, 8, 8)
_SYNTHETIC_TRAIN_PER_CLASS = 60
_SYNTHETIC_TEST_PER_CLASS = 20
_SYNTHETIC_NOISE = 1.0


@dataclass(frozen=True, eq=False)
class Task:
    """One step of the stream: its classes and their train/test examples.

    eq=False: fields are tensors, whose `==` is elementwise, so dataclass
    equality would raise; compare tensors with torch.equal instead.
    """

    task_id: int
    classes: tuple[int, ...]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@dataclass(frozen=True, eq=False)
class TaskStream:
    """A named, ordered sequence of tasks sharing one input shape and label space."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    tasks: tuple[Task, ...]

    @property
    def classes_per_task(self) -> int:
        """Size of each task's class group (the split is always even)."""
        return self.num_classes // len(self.tasks)

    def __len__(self) -> int:
        """Number of tasks."""
        return len(self.tasks)


# --------------------------------------------------------------------------- public


def load_stream(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    n_tasks: int | None = None,
    seed: int = 0,
    max_per_class: int | None = None,
) -> TaskStream:
    """Load dataset `name` and split it into a class-incremental stream.

    data_dir is needed only by the file-backed datasets (mnist, fashion-mnist,
    cifar10); fashion-mnist falls back to Debian's package folder.
    max_per_class caps TRAINING examples per class (seeded pick) so big
    datasets can be cut down for quick runs; the test sets are kept whole.
    """
    if name not in DATASETS:
        raise InputError(f"dataset {excerpt(name)} is unknown (choose from: {', '.join(sorted(DATASETS))})")
    n_tasks = DEFAULT_TASKS if n_tasks is None else n_tasks
    _check_positive_int("n_tasks", n_tasks)
    _check_seed(seed)
    if max_per_class is not None:
        _check_positive_int("max_per_class", max_per_class)
    rng = np.random.default_rng(seed)

    x_train, y_train, x_test, y_test = _load_raw(name, data_dir, rng)
    if max_per_class is not None:
        keep = _cap_per_class(y_train, max_per_class, rng)
        x_train, y_train = x_train[keep], y_train[keep]
    xt_train, xt_test = _normalise(name, x_train, x_test)
    channels, height, width = x_train.shape[1:]  # every loader gives (N, C, H, W) images
    input_shape = (int(channels), int(height), int(width))
    return split_tasks(
        xt_train,
        torch.from_numpy(y_train.astype(np.int64)),
        xt_test,
        torch.from_numpy(y_test.astype(np.int64)),
        n_tasks=n_tasks,
        name=name,
        input_shape=input_shape,
    )


def split_tasks(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    n_tasks: int,
    name: str,
    input_shape: tuple[int, int, int],
) -> TaskStream:
    """Cut a labelled dataset into n_tasks groups of consecutive sorted classes.

    Labels must be 0..K-1 (they index the classifier head) and are kept global.
    """
    _check_split_inputs(x_train, y_train, x_test, y_test, name, input_shape)
    classes = sorted(int(c) for c in torch.unique(y_train))
    num_classes = len(classes)
    if classes != list(range(num_classes)):
        raise InputError(f"{name} training labels must be 0..K-1, found classes {classes}")
    unknown = sorted(set(int(c) for c in torch.unique(y_test)) - set(classes))
    if unknown:
        raise InputError(f"{name} test labels {unknown} do not occur in the training set")
    _check_positive_int("n_tasks", n_tasks)
    if num_classes % n_tasks:
        raise InputError(f"n_tasks {n_tasks} does not divide the {num_classes} classes of {name}")

    per_task = num_classes // n_tasks
    tasks = tuple(
        _make_task(t, tuple(classes[t * per_task : (t + 1) * per_task]), x_train, y_train, x_test, y_test)
        for t in range(n_tasks)
    )
    channels, height, width = input_shape  # a list from an untyped caller is kept as a tuple
    return TaskStream(name=name, input_shape=(channels, height, width), num_classes=num_classes, tasks=tasks)


def partition_indices(
    labels: np.ndarray, n_parts: int, *, alpha: float | None, seed: int
) -> list[np.ndarray]:
    """Split one task's training examples across n_parts devices.

    alpha None gives an iid split (sizes differ by at most one); alpha > 0 draws,
    per class, Dirichlet(alpha) shares over the parts (the usual non-iid FL
    split: small alpha means each device sees few classes). Empty parts are
    filled by moving one example from the largest part, so every device has
    data. Returns sorted int64 index arrays that partition range(len(labels)).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise InputError(f"labels must be 1-D, got shape {labels.shape}")
    _check_positive_int("n_parts", n_parts)
    if n_parts > len(labels):
        raise InputError(f"n_parts {n_parts} exceeds the {len(labels)} examples to split")
    if alpha is not None and not (np.isfinite(alpha) and alpha > 0):
        raise InputError(f"alpha {alpha} must be a positive number (or None for iid)")
    _check_seed(seed)
    rng = np.random.default_rng(seed)

    parts = _iid_parts(len(labels), n_parts, rng) if alpha is None else _dirichlet_parts(labels, n_parts, alpha, rng)
    _fill_empty_parts(parts)
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


# --------------------------------------------------------------------------- validation


def _check_positive_int(what: str, value: object) -> None:
    """Reject non-integers (bools included) and values below one."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{what} {excerpt(value)} must be a positive integer")


def _check_seed(seed: object) -> None:
    """numpy seeds must be non-negative integers; say so in our own words."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed {excerpt(seed)} must be a non-negative integer")


def _check_split_inputs(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    name: str,
    input_shape: Sequence[int],
) -> None:
    """Catch mismatched arrays early, where the message can still name the dataset."""
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if tuple(x.shape[1:]) != tuple(input_shape):
            raise InputError(f"{name} {split} images have shape {tuple(x.shape[1:])}, expected {tuple(input_shape)}")
        if y.ndim != 1 or len(y) != len(x):
            raise InputError(f"{name} {split} labels have shape {tuple(y.shape)}, expected ({len(x)},)")
    if len(y_train) == 0:
        raise InputError(f"{name} has no training examples")


# --------------------------------------------------------------------------- stream helpers


def _make_task(
    task_id: int,
    classes: tuple[int, ...],
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
) -> Task:
    """Select the examples of `classes`, keeping dataset order and global labels."""
    wanted = torch.tensor(classes, dtype=y_train.dtype)
    train = torch.isin(y_train, wanted)
    test = torch.isin(y_test, wanted)
    return Task(
        task_id=task_id,
        classes=classes,
        x_train=x_train[train],
        y_train=y_train[train],
        x_test=x_test[test],
        y_test=y_test[test],
    )


def _cap_per_class(labels: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices keeping at most `cap` randomly chosen examples of each class."""
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep.append(rng.choice(idx, size=cap, replace=False) if len(idx) > cap else idx)
    return np.sort(np.concatenate(keep))


def _normalise(name: str, x_train: np.ndarray, x_test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale raw pixels and standardise per channel, as each dataset is usually fed."""
    if name == "synthetic":
        return torch.from_numpy(x_train.astype(np.float32)), torch.from_numpy(x_test.astype(np.float32))
    mean: Sequence[float]
    std: Sequence[float]
    if name == "digits":  # no published stats: use the training split's own
        scaled = x_train.astype(np.float64) / 16.0
        scale, mean, std = 16.0, (float(scaled.mean()),), (float(scaled.std()),)
    else:
        scale, mean, std = {"mnist": _MNIST_STATS, "fashion-mnist": _FASHION_MNIST_STATS}.get(name, _CIFAR_STATS)
    return _standardise(x_train, scale, mean, std), _standardise(x_test, scale, mean, std)


def _standardise(x: np.ndarray, scale: float, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x / scale - mean[c]) / std[c] as a float32 (N, C, H, W) tensor."""
    out = torch.from_numpy(x.astype(np.float32)) / scale
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (out - m) / s


# --------------------------------------------------------------------------- partition helpers


def _iid_parts(n: int, n_parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, then cut into near-equal consecutive chunks."""
    return list(np.array_split(rng.permutation(n), n_parts))


def _dirichlet_parts(labels: np.ndarray, n_parts: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    """For each class, deal its shuffled examples out by Dirichlet(alpha) shares."""
    parts: list[list[np.ndarray]] = [[] for _ in range(n_parts)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(n_parts, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for part, chunk in zip(parts, np.split(idx, cuts)):
            part.append(chunk)
    return [np.concatenate(p) for p in parts]


def _fill_empty_parts(parts: list[np.ndarray]) -> None:
    """Give each empty part one example taken from the currently largest part."""
    for i, part in enumerate(parts):
        if len(part) == 0:
            donor = max(range(len(parts)), key=lambda j: len(parts[j]))
            parts[i], parts[donor] = parts[donor][-1:], parts[donor][:-1]


# --------------------------------------------------------------------------- loaders

Raw = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test


def _load_raw(name: str, data_dir: str | os.PathLike | None, rng: np.random.Generator) -> Raw:
    """Dispatch to the loader; images come back as un-normalised (N, C, H, W) arrays."""
    if name == "digits":
        return _load_digits(rng)
    if name == "synthetic":
        return _make_synthetic(rng)
    folder = require_data_dir(name, data_dir)
    return _load_idx_dataset(name, folder) if name in IDX_DATASETS else _load_cifar10(folder)


def require_data_dir(name: str, data_dir: str | os.PathLike | None) -> Path:
    """File-backed datasets cannot be downloaded here, so the folder must exist."""
    data_dir = DEFAULT_DATA_DIRS.get(name) if data_dir is None else data_dir
    if data_dir is None:
        raise InputError(f"dataset {name!r} needs data_dir (a folder holding its files)")
    folder = Path(data_dir)
    if not folder.is_dir():
        hint = f" (install it with `{INSTALL_HINTS[name]}`, or set data_dir)" if name in INSTALL_HINTS else ""
        raise InputError(f"data folder '{folder}' for {name} does not exist{hint}")
    return folder


def _load_digits(rng: np.random.Generator) -> Raw:
    """scikit-learn's bundled 8x8 digits with a seeded 70/30 split within each class."""
    from sklearn.datasets import load_digits  # deferred: only this dataset needs sklearn

    bunch = load_digits()
    x = bunch.images.reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    test = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.append(idx[: int(round(_DIGITS_TEST_FRACTION * len(idx)))])
    is_test = np.zeros(len(y), dtype=bool)
    is_test[np.concatenate(test)] = True
    return x[~is_test], y[~is_test], x[is_test], y[is_test]


def _make_synthetic(rng: np.random.Generator) -> Raw:
    """One Gaussian prototype per class plus unit noise: separable, tiny, instant."""
    dim = int(np.prod(_SYNTHETIC_SHAPE))
    prototypes = rng.normal(size=(_SYNTHETIC_CLASSES, dim))

    def sample(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(_SYNTHETIC_CLASSES, dtype=np.int64), per_class)
        x = prototypes[y] + _SYNTHETIC_NOISE * rng.normal(size=(len(y), dim))
        return x.reshape(-1, *_SYNTHETIC_SHAPE), y

    x_train, y_train = sample(_SYNTHETIC_TRAIN_PER_CLASS)
    x_test, y_test = sample(_SYNTHETIC_TEST_PER_CLASS)
    return x_train, y_train, x_test, y_test


def _load_idx_dataset(name: str, folder: Path) -> Raw:
    """The four IDX files of MNIST or Fashion-MNIST (same names and format), plain or gzipped."""
    train_x, train_y, test_x, test_y = (_find_file(name, folder, f) for f in _MNIST_FILES)
    x_train, y_train = _read_idx_images(name, train_x), _read_idx_labels(name, train_y)
    x_test, y_test = _read_idx_images(name, test_x), _read_idx_labels(name, test_y)
    for images, labels, xs, ys in ((train_x, train_y, x_train, y_train), (test_x, test_y, x_test, y_test)):
        if len(xs) != len(ys):
            raise InputError(f"{name} file '{images}' has {len(xs)} images but '{labels}' has {len(ys)} labels")
    return x_train, y_train, x_test, y_test


def _find_file(name: str, folder: Path, filename: str) -> Path:
    """Prefer the plain file, else its .gz twin."""
    for candidate in (folder / filename, folder / f"{filename}.gz"):
        if candidate.is_file():
            return candidate
    raise InputError(f"{name} file '{folder / filename}' is missing (also tried .gz)")


def _read_bytes(name: str, path: Path) -> bytes:
    """Whole file contents, transparently gunzipped for a .gz suffix."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as err:  # BadGzipFile is an OSError
        raise InputError(f"{name} file '{path}' cannot be read: {err}") from None


def _read_idx(name: str, path: Path, magic: int, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file: big-endian magic, ndim sizes, then the data."""
    data = _read_bytes(name, path)
    header = 4 * (1 + ndim)
    if len(data) < header:
        raise InputError(f"{name} file '{path}' is truncated ({len(data)} bytes, header needs {header})")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        raise InputError(f"{name} file '{path}' has bad magic number 0x{found:08x} (expected 0x{magic:08x})")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise InputError(
            f"{name} file '{path}' has {len(data) - header} data bytes, header {dims} needs {expected}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx_images(name: str, path: Path) -> np.ndarray:
    """(N, 1, rows, cols) uint8 images."""
    images = _read_idx(name, path, _IDX_IMAGES_MAGIC, 3)
    return images.reshape(images.shape[0], 1, *images.shape[1:])


def _read_idx_labels(name: str, path: Path) -> np.ndarray:
    """(N,) int64 labels."""
    return _read_idx(name, path, _IDX_LABELS_MAGIC, 1).astype(np.int64)


def _load_cifar10(folder: Path) -> Raw:
    """CIFAR-10 python batches from data_dir or its cifar-10-batches-py subfolder."""
    if (folder / _CIFAR_SUBDIR).is_dir():
        folder = folder / _CIFAR_SUBDIR
    paths = [folder / f for f in (*_CIFAR_TRAIN_FILES, _CIFAR_TEST_FILE)]
    for path in paths:
        if not path.is_file():
            raise InputError(f"cifar10 file '{path}' is missing")
    train = [_read_cifar_batch(p) for p in paths[:-1]]
    x_test, y_test = _read_cifar_batch(paths[-1])
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test


_CIFAR_MAX_BYTES = 256 << 20  # a batch of the standard files is 31 MB


def _latin1(text: str, encoding: str) -> bytes:
    """`_codecs.encode` as pickle protocol 2 uses it for bytes, and nothing more."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("_codecs.encode is allowed only to turn text into latin1 bytes")
    return text.encode("latin1")


try:
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer  # type: ignore[attr-defined]  # private: not in numpy's stubs
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]  # the same function, numpy 1's path
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]  # the same function, numpy 1's path

# Everything a CIFAR-10 batch refers to by name: numpy arrays as the real files (and numpy's own
# protocols 2 to 5) pickle them, and bytes under pickle protocol 2. dicts, lists, bytes, str and
# ints need no name. The objects are given here, not imported from the names a file asks for.
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1,
}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only what a CIFAR-10 batch holds: nothing in a hostile file runs.

    pickle calls only what find_class returns (REDUCE, NEWOBJ, INST and OBJ
    take their callables from it, extension codes too), so refusing every name
    outside _CIFAR_GLOBALS leaves a file no way to reach os.system or eval.
    """

    def find_class(self, module: str, name: str):
        try:
            return _CIFAR_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise pickle.UnpicklingError(f"it refers to {excerpt(f'{module}.{name}', 60)}, which a CIFAR-10 batch "
                                         "never does") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it holds a persistent reference, which a CIFAR-10 batch never does")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch: rows of 3072 bytes (R, G, B planes, each 32x32 row-major).

    Read by _CifarUnpickler (only numpy arrays, dicts, lists, bytes, str and
    ints can come out of it), from a regular file of at most _CIFAR_MAX_BYTES.
    """
    try:
        size = path.stat().st_size
    except OSError as err:
        raise InputError(f"cifar10 file '{path}' cannot be read: {err.strerror or err}") from None
    if size > _CIFAR_MAX_BYTES:
        raise InputError(f"cifar10 file '{path}' is {size:,} bytes, more than the {_CIFAR_MAX_BYTES:,} "
                         "a CIFAR-10 batch may have")
    try:
        with path.open("rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
        if not isinstance(batch, dict):
            raise TypeError(f"it holds {type(batch).__name__}, not a dict")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as err:  # unpickling can fail in many ways; all mean a bad file
        raise InputError(f"cifar10 file '{path}' is not a CIFAR-10 batch: {type(err).__name__}: "
                         f"{' '.join(str(err).split())[:200]}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise InputError(
            f"cifar10 file '{path}' has data {data.shape} and labels {labels.shape}, expected (N, 3072) and (N,)"
        )
    return data.reshape(-1, 3, 32, 32), labels
