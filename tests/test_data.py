"""Task streams: bundled datasets, tiny on-disk MNIST/CIFAR files, errors, device partitions."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from clients.data import DATASETS, Task, TaskStream, load_stream, partition_indices, split_tasks
from clients.errors import InputError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


# --------------------------------------------------------------------------- helpers


def all_train(stream: TaskStream) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([t.x_train for t in stream.tasks]), torch.cat([t.y_train for t in stream.tasks])


def assert_streams_equal(a: TaskStream, b: TaskStream) -> None:
    assert len(a) == len(b)
    for ta, tb in zip(a.tasks, b.tasks):
        assert ta.classes == tb.classes
        for field in ("x_train", "y_train", "x_test", "y_test"):
            assert torch.equal(getattr(ta, field), getattr(tb, field)), field


def write_idx(path: Path, magic: int, array: np.ndarray, *, compress: bool = False) -> None:
    """The real IDX layout: big-endian magic, big-endian dims, raw uint8 data."""
    payload = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def make_mnist(folder: Path, *, compress: bool = False) -> dict[str, np.ndarray]:
    """20 train / 10 test 28x28 images; pixel values encode (index, row, col) so placement is checkable."""
    rng = np.random.default_rng(123)
    arrays = {
        "train_x": rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8),
        "train_y": np.tile(np.arange(10), 2).astype(np.uint8),
        "test_x": rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8),
        "test_y": np.arange(10)[::-1].astype(np.uint8),
    }
    arrays["train_x"][3, 5, 17] = 255  # a known corner-case pixel: full white
    arrays["train_x"][3, 17, 5] = 0
    write_idx(folder / "train-images-idx3-ubyte", 0x803, arrays["train_x"], compress=compress)
    write_idx(folder / "train-labels-idx1-ubyte", 0x801, arrays["train_y"], compress=compress)
    write_idx(folder / "t10k-images-idx3-ubyte", 0x803, arrays["test_x"], compress=compress)
    write_idx(folder / "t10k-labels-idx1-ubyte", 0x801, arrays["test_y"], compress=compress)
    return arrays


def make_cifar(folder: Path) -> None:
    """Five train batches of 2 rows (labels 2b, 2b+1) and a 10-row test batch, all zero but one pixel."""
    folder.mkdir(parents=True, exist_ok=True)
    for b in range(5):
        data = np.zeros((2, 3072), dtype=np.uint8)
        labels = [2 * b, 2 * b + 1]
        if b == 1:  # the example labelled 3: channel 2 (blue), row 4, col 7 is white
            data[1, 2 * 1024 + 4 * 32 + 7] = 255
        with (folder / f"data_batch_{b + 1}").open("wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)
    with (folder / "test_batch").open("wb") as f:
        pickle.dump({b"data": np.zeros((10, 3072), dtype=np.uint8), b"labels": list(range(10))}, f)


# --------------------------------------------------------------------------- digits


def test_digits_default_is_five_disjoint_two_class_tasks_with_global_labels() -> None:
    stream = load_stream("digits")
    assert stream.name == "digits"
    assert stream.input_shape == (1, 8, 8)
    assert stream.num_classes == 10
    assert len(stream) == 5
    assert stream.classes_per_task == 2
    for t, task in enumerate(stream.tasks):
        assert isinstance(task, Task)
        assert task.task_id == t
        assert task.classes == (2 * t, 2 * t + 1)
        assert task.x_train.dtype == torch.float32 and task.y_train.dtype == torch.int64
        assert task.x_train.shape[1:] == (1, 8, 8) and task.x_test.shape[1:] == (1, 8, 8)
        assert len(task.x_train) == len(task.y_train) > 0
        assert len(task.x_test) == len(task.y_test) > 0
        assert set(task.y_train.tolist()) == set(task.classes)
        assert set(task.y_test.tolist()) == set(task.classes)


def test_digits_split_is_stratified_30_percent_and_standardised() -> None:
    from sklearn.datasets import load_digits

    counts = np.bincount(load_digits().target)
    stream = load_stream("digits")
    x, y = all_train(stream)
    y_test = torch.cat([t.y_test for t in stream.tasks])
    assert len(y) + len(y_test) == 1797
    for c in range(10):
        n_test = int(round(0.3 * counts[c]))
        assert int((y_test == c).sum()) == n_test
        assert int((y == c).sum()) == counts[c] - n_test
    assert abs(float(x.double().mean())) < 1e-5
    assert abs(float(x.double().std(unbiased=False)) - 1.0) < 1e-5


def test_digits_is_deterministic_for_a_seed_and_varies_with_it() -> None:
    assert_streams_equal(load_stream("digits", seed=3), load_stream("digits", seed=3))
    a, b = load_stream("digits", seed=3), load_stream("digits", seed=4)
    assert not torch.equal(a.tasks[0].x_test, b.tasks[0].x_test)


def test_n_tasks_and_max_per_class() -> None:
    stream = load_stream("digits", n_tasks=10, max_per_class=7)
    assert len(stream) == 10 and stream.classes_per_task == 1
    for c, task in enumerate(stream.tasks):
        assert task.classes == (c,)
        assert len(task.y_train) == 7
    full = load_stream("digits", n_tasks=10)
    assert [len(t.y_test) for t in stream.tasks] == [len(t.y_test) for t in full.tasks]
    assert len(load_stream("digits", n_tasks=2)) == 2


# --------------------------------------------------------------------------- synthetic


def test_synthetic_shape_sizes_and_determinism() -> None:
    stream = load_stream("synthetic", seed=1)
    assert stream.input_shape == (1, 8, 8) and stream.num_classes == 10 and len(stream) == 5
    x, y = all_train(stream)
    assert torch.equal(torch.bincount(y), torch.full((10,), 60))
    assert torch.equal(torch.bincount(torch.cat([t.y_test for t in stream.tasks])), torch.full((10,), 20))
    assert_streams_equal(stream, load_stream("synthetic", seed=1))
    assert not torch.equal(stream.tasks[0].x_train, load_stream("synthetic", seed=2).tasks[0].x_train)
    capped = load_stream("synthetic", max_per_class=5)
    assert torch.equal(torch.bincount(all_train(capped)[1]), torch.full((10,), 5))


def test_synthetic_is_learnable_by_nearest_class_mean() -> None:
    stream = load_stream("synthetic")
    x, y = all_train(stream)
    means = torch.stack([x[y == c].flatten(1).mean(0) for c in range(10)])
    gaps = torch.cdist(means, means) + torch.eye(10) * 1e9
    assert float(gaps.min()) > 5.0  # class means are far apart relative to unit noise
    x_test = torch.cat([t.x_test for t in stream.tasks]).flatten(1)
    y_test = torch.cat([t.y_test for t in stream.tasks])
    accuracy = (torch.cdist(x_test, means).argmin(1) == y_test).float().mean()
    assert float(accuracy) > 0.95


# --------------------------------------------------------------------------- mnist


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files_load_with_exact_values(tmp_path: Path, compress: bool) -> None:
    raw = make_mnist(tmp_path, compress=compress)
    stream = load_stream("mnist", data_dir=tmp_path)
    assert stream.input_shape == (1, 28, 28) and stream.num_classes == 10 and len(stream) == 5
    x, y = all_train(stream)
    assert x.shape == (20, 1, 28, 28)
    # tasks keep file order within each task; rebuild the same order from the raw labels
    order = np.concatenate([np.flatnonzero(np.isin(raw["train_y"], [2 * t, 2 * t + 1])) for t in range(5)])
    assert y.tolist() == raw["train_y"][order].tolist()
    expected = (torch.from_numpy(raw["train_x"][order].astype(np.float32)) / 255 - MNIST_MEAN) / MNIST_STD
    assert torch.allclose(x[:, 0], expected, atol=1e-6)
    task1 = stream.tasks[1]  # classes 2, 3: file index 3 is the first label-3 example -> row 1 of task 1
    assert task1.y_train.tolist() == [2, 3, 2, 3]
    assert task1.x_train[1, 0, 5, 17].item() == pytest.approx((1.0 - MNIST_MEAN) / MNIST_STD)
    assert task1.x_train[1, 0, 17, 5].item() == pytest.approx(-MNIST_MEAN / MNIST_STD)
    assert stream.tasks[4].y_test.tolist() == [9, 8]
    assert stream.tasks[4].x_test.shape == (2, 1, 28, 28)


FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


def test_fashion_mnist_reads_idx_files_with_its_own_statistics(tmp_path: Path) -> None:
    raw = make_mnist(tmp_path, compress=True)  # Debian's package ships the .gz files
    stream = load_stream("fashion-mnist", data_dir=tmp_path)
    assert stream.name == "fashion-mnist" and stream.input_shape == (1, 28, 28)
    task1 = stream.tasks[1]
    assert task1.x_train[1, 0, 5, 17].item() == pytest.approx((1.0 - FASHION_MEAN) / FASHION_STD)
    assert task1.x_train[1, 0, 17, 5].item() == pytest.approx(-FASHION_MEAN / FASHION_STD)
    x, _ = all_train(stream)
    assert x.shape == (20, 1, 28, 28) and raw["train_x"].shape == (20, 28, 28)


def test_fashion_mnist_errors_name_the_dataset(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(InputError, match=r"^fashion-mnist file '.*t10k-labels-idx1-ubyte' is missing"):
        load_stream("fashion-mnist", data_dir=tmp_path)


def test_fashion_mnist_missing_folder_says_how_to_install(tmp_path: Path, monkeypatch) -> None:
    import clients.data as data

    missing = tmp_path / "fashion-mnist"
    monkeypatch.setitem(data.DEFAULT_DATA_DIRS, "fashion-mnist", str(missing))
    with pytest.raises(InputError) as err:
        load_stream("fashion-mnist")  # no data_dir: Debian's package folder
    assert str(err.value) == (f"data folder '{missing}' for fashion-mnist does not exist "
                              "(install it with `apt-get install dataset-fashion-mnist`, or set data_dir)")


def test_mnist_bad_magic_names_file(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", 0x803, np.zeros(20, dtype=np.uint8))
    with pytest.raises(InputError, match=r"train-labels-idx1-ubyte' has bad magic number 0x00000803"):
        load_stream("mnist", data_dir=tmp_path)


def test_mnist_truncated_file_names_file(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(InputError, match=r"t10k-images-idx3-ubyte' has 7839 data bytes"):
        load_stream("mnist", data_dir=tmp_path)
    path.write_bytes(b"\x00\x00\x08")
    with pytest.raises(InputError, match=r"t10k-images-idx3-ubyte' is truncated"):
        load_stream("mnist", data_dir=tmp_path)


def test_mnist_missing_file_names_file(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(InputError, match=r"mnist file '.*t10k-labels-idx1-ubyte' is missing"):
        load_stream("mnist", data_dir=tmp_path)


def test_mnist_image_label_count_mismatch(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", 0x801, np.arange(10, dtype=np.uint8))
    with pytest.raises(InputError, match=r"has 20 images but '.*train-labels-idx1-ubyte' has 10 labels"):
        load_stream("mnist", data_dir=tmp_path)


def test_mnist_max_per_class_caps_training_only(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    stream = load_stream("mnist", data_dir=tmp_path, max_per_class=1)
    x, y = all_train(stream)
    assert sorted(y.tolist()) == list(range(10))
    assert sum(len(t.y_test) for t in stream.tasks) == 10


# --------------------------------------------------------------------------- cifar10


@pytest.mark.parametrize("nested", [False, True])
def test_cifar10_batches_load_with_pixel_in_place(tmp_path: Path, nested: bool) -> None:
    make_cifar(tmp_path / "cifar-10-batches-py" if nested else tmp_path)
    stream = load_stream("cifar10", data_dir=tmp_path)
    assert stream.input_shape == (3, 32, 32) and stream.num_classes == 10 and len(stream) == 5
    x, y = all_train(stream)
    assert x.shape == (10, 3, 32, 32) and y.tolist() == list(range(10))
    task1 = stream.tasks[1]
    assert task1.classes == (2, 3) and task1.y_train.tolist() == [2, 3]
    image = task1.x_train[1]
    background = torch.tensor([-m / s for m, s in zip(CIFAR_MEAN, CIFAR_STD)]).view(3, 1, 1).expand(3, 32, 32)
    expected = background.clone()
    expected[2, 4, 7] = (1.0 - CIFAR_MEAN[2]) / CIFAR_STD[2]
    assert torch.allclose(image, expected, atol=1e-6)
    assert torch.allclose(task1.x_train[0], background, atol=1e-6)
    assert [t.y_test.tolist() for t in stream.tasks] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


def test_cifar10_missing_batch_names_file(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(InputError, match=r"cifar10 file '.*data_batch_3' is missing"):
        load_stream("cifar10", data_dir=tmp_path)


def test_cifar10_garbage_batch_names_file(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match=r"cifar10 file '.*test_batch' is not a CIFAR-10 batch"):
        load_stream("cifar10", data_dir=tmp_path)


# --------------------------------------------------------------------------- input errors


def test_unknown_dataset_lists_choices() -> None:
    assert DATASETS == ("digits", "synthetic", "mnist", "fashion-mnist", "cifar10")
    with pytest.raises(InputError) as err:
        load_stream("foo")
    assert str(err.value) == "dataset 'foo' is unknown (choose from: cifar10, digits, fashion-mnist, mnist, synthetic)"


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_or_absent_data_dir(tmp_path: Path, name: str) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(InputError) as err:
        load_stream(name, data_dir=missing)
    assert str(err.value) == f"data folder '{missing}' for {name} does not exist"
    with pytest.raises(InputError, match=rf"dataset '{name}' needs data_dir"):
        load_stream(name)


@pytest.mark.parametrize("n_tasks", [3, 4, 7])
def test_n_tasks_not_dividing_classes(n_tasks: int) -> None:
    with pytest.raises(InputError) as err:
        load_stream("synthetic", n_tasks=n_tasks)
    assert str(err.value) == f"n_tasks {n_tasks} does not divide the 10 classes of synthetic"


@pytest.mark.parametrize(
    ("kwargs", "culprit"),
    [
        ({"n_tasks": 0}, "n_tasks 0"),
        ({"n_tasks": True}, "n_tasks True"),
        ({"max_per_class": 0}, "max_per_class 0"),
        ({"seed": -1}, "seed -1"),
    ],
)
def test_bad_numbers_name_the_argument(kwargs: dict, culprit: str) -> None:
    with pytest.raises(InputError, match=rf"^{culprit} must be"):
        load_stream("synthetic", **kwargs)


def test_split_tasks_rejects_gappy_labels() -> None:
    x = torch.zeros(4, 1, 2, 2)
    y = torch.tensor([0, 1, 3, 3])
    with pytest.raises(InputError, match=r"toy training labels must be 0..K-1, found classes \[0, 1, 3\]"):
        split_tasks(x, y, x, y, n_tasks=1, name="toy", input_shape=(1, 2, 2))
    y_train, y_test = torch.tensor([1, 0, 1, 0]), torch.tensor([1])
    stream = split_tasks(x, y_train, x[:1], y_test, n_tasks=2, name="toy", input_shape=(1, 2, 2))
    assert [t.classes for t in stream.tasks] == [(0,), (1,)]
    assert [len(t.y_test) for t in stream.tasks] == [0, 1]


# --------------------------------------------------------------------------- partition_indices


def assert_partition(parts: list[np.ndarray], n: int) -> None:
    for p in parts:
        assert p.dtype == np.int64 and len(p) > 0
        assert np.all(np.diff(p) > 0)  # sorted, no duplicates
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def test_partition_iid_sizes_differ_by_at_most_one() -> None:
    labels = np.repeat(np.arange(2), 52)[:103]
    parts = partition_indices(labels, 4, alpha=None, seed=0)
    assert sorted(len(p) for p in parts) == [25, 26, 26, 26]
    assert_partition(parts, 103)
    assert not np.array_equal(parts[0], np.arange(26))  # shuffled, not contiguous blocks


def test_partition_dirichlet_small_alpha_is_skewed() -> None:
    labels = np.repeat(np.arange(10), 100)
    parts = partition_indices(labels, 10, alpha=0.1, seed=0)
    assert_partition(parts, 1000)
    dominant = np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in parts])
    iid = partition_indices(labels, 10, alpha=None, seed=0)
    iid_dominant = np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in iid])
    assert dominant > 0.5 > 0.25 > iid_dominant


def test_partition_never_leaves_a_part_empty() -> None:
    labels = np.repeat(np.arange(2), 6)
    for seed in range(20):
        parts = partition_indices(labels, 12, alpha=0.01, seed=seed)
        assert [len(p) for p in parts] == [1] * 12
    parts = partition_indices(labels, 5, alpha=0.01, seed=0)
    assert_partition(parts, 12)


def test_partition_is_deterministic_per_seed() -> None:
    labels = np.repeat(np.arange(4), 30)
    for alpha in (None, 0.5):
        a = partition_indices(labels, 6, alpha=alpha, seed=7)
        b = partition_indices(labels, 6, alpha=alpha, seed=7)
        c = partition_indices(labels, 6, alpha=alpha, seed=8)
        assert all(np.array_equal(p, q) for p, q in zip(a, b))
        assert not all(np.array_equal(p, q) for p, q in zip(a, c))


@pytest.mark.parametrize(
    ("n_parts", "alpha", "culprit"),
    [(0, None, "n_parts 0"), (13, None, "n_parts 13"), (3, 0.0, "alpha 0.0"), (3, -1.0, "alpha -1.0")],
)
def test_partition_bad_arguments(n_parts: int, alpha: float | None, culprit: str) -> None:
    with pytest.raises(InputError, match=rf"^{culprit} "):
        partition_indices(np.zeros(12, dtype=np.int64), n_parts, alpha=alpha, seed=0)
