"""Datasets read from files the user put in place, never downloaded: MNIST and Fashion-MNIST
(IDX files, read by torchvision) and CIFAR-10 (the "python version" batches)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from modelopt.spec.registries import DATASETS
from modelopt.spec.registry import PositiveInt
from modelopt.techniques.data import Data, to_data
from modelopt.techniques.errors import DataUnavailable

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_check(name: str, cls_name: str):
    """The four IDX files of a torchvision dataset under ROOT/<cls_name>/raw."""
    def check(params: dict) -> None:
        raw = Path(params["root"]).expanduser() / cls_name / "raw"
        missing = [f for f in _IDX_FILES if not (raw / f).exists() and not (raw / f"{f}.gz").exists()]
        if missing:
            raise DataUnavailable(
                f"{name}: files not found under {raw.resolve()} (missing: {', '.join(missing)}). "
                f"modelopt never downloads: put the four {cls_name} IDX files (as published, "
                f"uncompressed) in {raw}/, or point 'root' at the folder holding {cls_name}/raw/.")
    return check


def _torchvision_idx(name: str, cls_name: str, root: str, limit: int | None) -> Data:
    import torchvision.datasets as tvd

    _idx_check(name, cls_name)({"root": root})
    cls = getattr(tvd, cls_name)
    # torchvision decompresses any .gz itself; download=False keeps it offline
    train = cls(root=str(Path(root).expanduser()), train=True, download=False)
    test = cls(root=str(Path(root).expanduser()), train=False, download=False)
    xtr, ytr = train.data[:limit].float().div(255)[:, None], train.targets[:limit]
    xte, yte = test.data[:limit].float().div(255)[:, None], test.targets[:limit]
    return to_data(name, xtr.numpy(), ytr.numpy(), xte.numpy(), yte.numpy(), 10)


@DATASETS.register("mnist", task="classification", input="image",
                   preflight=_idx_check("mnist", "MNIST"))
def mnist(seed: int, /, root: str, limit: PositiveInt | None = None) -> Data:
    """MNIST from ROOT/MNIST/raw (IDX files), read by torchvision; never downloaded."""
    return _torchvision_idx("mnist", "MNIST", root, limit)


@DATASETS.register("fashion_mnist", task="classification", input="image",
                   preflight=_idx_check("fashion_mnist", "FashionMNIST"))
def fashion_mnist(seed: int, /, root: str, limit: PositiveInt | None = None) -> Data:
    """Fashion-MNIST from ROOT/FashionMNIST/raw (IDX files), read by torchvision; never downloaded."""
    return _torchvision_idx("fashion_mnist", "FashionMNIST", root, limit)


_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def _check_cifar(params: dict) -> None:
    folder = Path(params["root"]).expanduser() / "cifar-10-batches-py"
    missing = [f for f in _CIFAR_FILES if not (folder / f).exists()]
    if missing:
        raise DataUnavailable(
            f"cifar10: files not found under {folder.resolve()} (missing: {', '.join(missing)}). "
            "modelopt never downloads: extract cifar-10-python.tar.gz (the 'python version') "
            f"into {Path(params['root']).expanduser().resolve()}/ so that cifar-10-batches-py/ "
            "is there.")


class _Arrays(pickle.Unpickler):
    """The batches are pickles: read as data, a dict of numpy arrays and lists, and nothing
    else (a planted batch file would otherwise run its code when the cell loads it)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"cifar10: a batch file names {module}.{name}, which a "
                                         "CIFAR-10 batch never holds; not loaded")
        return super().find_class(module, name)


@DATASETS.register("cifar10", task="classification", input="image", preflight=_check_cifar)
def cifar10(seed: int, /, root: str, limit: PositiveInt | None = None) -> Data:
    """CIFAR-10 from ROOT/cifar-10-batches-py (the 'python version' batches); never downloaded."""
    _check_cifar({"root": root})
    folder = Path(root).expanduser() / "cifar-10-batches-py"

    # Read the batches as torchvision.datasets.CIFAR10 does (pickled dicts); we do not call
    # it because it insists on the md5 of the full download, so a subset copy cannot load.
    def read(files):
        xs, ys = [], []
        for f in files:
            with open(folder / f, "rb") as fh:
                entry = _Arrays(fh, encoding="latin1").load()
            xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
        return np.concatenate(xs)[:limit] / 255.0, np.asarray(ys)[:limit]

    xtr, ytr = read(_CIFAR_FILES[:5])
    xte, yte = read(_CIFAR_FILES[5:])
    return to_data("cifar10", xtr, ytr, xte, yte, 10)
