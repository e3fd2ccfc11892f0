import pickle
import struct

import numpy as np
import pytest
import torch

from modelopt.techniques.data import DATASETS, DataUnavailable, load, split_validation


def test_the_calibration_sample_is_drawn_not_the_first_rows():
    """A training split in class order (an image folder read with val_fraction 0): the
    sample that calibrates int8 and scores channels holds every class, and is the same
    draw every time."""
    from modelopt.techniques.data import Data, train_sample

    y = torch.arange(4).repeat_interleave(200)  # 200 of class 0, then 200 of class 1, ...
    data = Data(y[:, None].float(), y, y[:0, None].float(), y[:0], y[:8, None].float(), y[:8],
                num_classes=4)
    x, labels = train_sample(data, 64)
    assert len(x) == 64 and set(labels.tolist()) == {0, 1, 2, 3}
    assert torch.equal(x[:, 0].long(), labels)  # inputs and labels drawn together
    assert torch.equal(train_sample(data, 64)[1], labels)
    assert len(train_sample(data, 5000)[0]) == 800  # all of it, where it asks for more


def test_mnist1d_shapes_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELOPT_CACHE", str(tmp_path))
    d = load({"name": "mnist1d"}, 0, 0.1)
    assert d.x_train.shape == (3600, 1, 40) and d.x_val.shape == (400, 1, 40)
    assert d.x_test.shape == (1000, 1, 40) and d.num_classes == 10
    assert set(d.y_test.unique().tolist()) == set(range(10))
    assert list(tmp_path.glob("mnist1d-*.npz"))  # generated once, then read from disk
    again = load({"name": "mnist1d"}, 0, 0.1)
    assert torch.equal(again.x_train, d.x_train)


def test_digits_and_synthetic():
    d = load({"name": "digits"}, 0, 0.0)
    assert d.x_train.shape[1:] == (1, 8, 8) and d.x_train.max() <= 1 and len(d.x_val) == 0
    s = load({"name": "synthetic", "n_samples": 200, "n_features": 5, "n_classes": 3}, 0, 0.2)
    assert s.x_train.shape[1] == 5 and s.num_classes == 3


def test_validation_split_is_disjoint_and_seeded():
    d = DATASETS.build("synthetic", 0, n_samples=200)
    a, b = split_validation(d, 0.25, 0), split_validation(d, 0.25, 1)
    assert len(a.x_val) == 38 and len(a.x_train) + len(a.x_val) == len(d.x_train)
    rows = {tuple(r.tolist()) for r in a.x_train}
    assert not any(tuple(r.tolist()) in rows for r in a.x_val)
    assert not torch.equal(a.x_val, b.x_val)
    assert torch.equal(a.x_val, split_validation(d, 0.25, 0).x_val)


def _write_idx(folder, prefix, n, rng):
    folder.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    # IDX: magic (0x0803 images / 0x0801 labels), big-endian dimensions, then raw bytes
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 0x0803, n, 28, 28) + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 0x0801, n) + labels.tobytes())
    return images, labels


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_torchvision_idx_from_local_root(tmp_path, name, folder):
    rng = np.random.default_rng(0)
    raw = tmp_path / folder / "raw"
    images, labels = _write_idx(raw, "train", 12, rng)
    _write_idx(raw, "t10k", 5, rng)
    d = load({"name": name, "root": str(tmp_path)}, 0, 0.0)
    assert d.x_train.shape == (12, 1, 28, 28) and d.x_test.shape == (5, 1, 28, 28)
    assert torch.allclose(d.x_train[:, 0], torch.tensor(images, dtype=torch.float32) / 255)
    assert d.y_train.tolist() == labels.tolist()


def test_cifar10_from_local_root(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, 4).tolist()}
        (folder / f).write_bytes(pickle.dumps(batch))
    d = load({"name": "cifar10", "root": str(tmp_path)}, 0, 0.0)
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
    # a batch is read as arrays and lists only: a planted one runs nothing
    marker = tmp_path / "RAN"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "test_batch").write_bytes(pickle.dumps({"data": Payload(), "labels": [1]}))
    with pytest.raises(pickle.UnpicklingError, match=r"names \w+\.open, which a CIFAR-10 batch "
                                                     "never holds"):
        load({"name": "cifar10", "root": str(tmp_path)}, 0, 0.0)
    assert not marker.exists()


@pytest.mark.parametrize("name,expect", [("mnist", "MNIST/raw"), ("fashion_mnist", "FashionMNIST/raw"),
                                         ("cifar10", "cifar-10-batches-py")])
def test_missing_root_says_where_to_put_files(tmp_path, name, expect):
    with pytest.raises(DataUnavailable) as e:
        load({"name": name, "root": str(tmp_path)}, 0, 0.0)
    assert expect in str(e.value) and "never downloads" in str(e.value)


@pytest.mark.parametrize("dataset, words", [
    ("{name: mnist1d, train_split: 1.5}", "train_split"),
    ("{name: synthetic, n_classes: 1}", "n_classes"),
    ("{name: synthetic, n_informative: 0}", "n_informative"),
    ("{name: synthetic, n_features: 2, n_classes: 5}", "needs at least 3 informative features"),
    ("{name: synthetic_regression, noise: -1}", "noise"),
])
def test_a_dataset_value_it_cannot_use_exits_at_load_naming_it(dataset, words):
    from modelopt.spec.suite import SuiteError, parse

    with pytest.raises(SuiteError) as e:
        parse(f"name: d\nseeds: [0]\ndefaults: {{model: linear, optimizer: sgd}}\n"
              f"matrix: {{dataset: [{dataset}]}}\n")
    assert words in str(e.value) and "dataset" in str(e.value), str(e.value)
