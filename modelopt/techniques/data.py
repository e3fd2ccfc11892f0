"""Datasets (all offline): mnist1d, digits, synthetic, torchvision sets from a local root; splits."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from pydantic import Field

from modelopt.spec.cell import Choice, chosen
from modelopt.spec.registries import DATASETS
from modelopt.spec.registry import NonNegative, NonNegativeInt, PositiveInt
from modelopt.spec.tasks import DEFAULT as DEFAULT_TASK
from modelopt.techniques import tasks
from modelopt.techniques.errors import DataUnavailable
from modelopt.techniques.stream import Stream

Split = Annotated[float, Field(gt=0, lt=1)]  # a share of the samples: some on either side
Classes = Annotated[int, Field(ge=2)]
ClassNames = Annotated[list[str | int], Field(min_length=2)]  # labels in a model's own order

__all__ = ["DATASETS", "Data", "DataUnavailable", "load", "rows", "split_validation"]


@dataclass(frozen=True)
class Data:
    """In-memory tensors of one dataset, split. x: float32 (N, *input_shape); y: int64 or float32."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int  # 0 where targets are not classes
    task: str = DEFAULT_TASK  # a TASKS entry's name (techniques/tasks.py)
    name: str = ""
    target_scale: tuple[float, float] = (1.0, 0.0)  # y_original = y * scale + shift
    info: dict = field(default_factory=dict)  # what preprocessing did (e.g. duplicates dropped)
    # a training split streamed from files (techniques/stream.py): x_train is then empty
    # (0 rows, the input shape) and y_train holds the split's labels
    stream: Stream | None = None
    # token inputs (techniques/text.py): ids below this, 0 padding; 0 for other inputs
    vocab_size: int = 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        """What a model is built for: a sample's shape; (sequence length, vocabulary) of ids."""
        shape = tuple(self.x_train.shape[1:])
        return (*shape, self.vocab_size) if self.vocab_size else shape

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def num_outputs(self) -> int:
        return tasks.get(self.task).num_outputs(self.num_classes)


def cache_dir() -> Path:
    """Where generated datasets are kept between runs and workers."""
    path = Path(os.environ.get("MODELOPT_CACHE") or Path.home() / ".cache" / "modelopt")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cached(kind: str, params: dict, make) -> dict[str, np.ndarray]:
    """Generate once per parameter set; later runs and parallel workers read the .npz."""
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / f"{kind}-{key}.npz"
    if path.exists():
        try:
            with np.load(path) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError):
            pass  # a torn file from a killed writer: regenerate
    arrays = make()
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # atomic: a concurrent reader sees all or nothing
    return arrays


def to_data(name, x_train, y_train, x_test, y_test, num_classes, task=DEFAULT_TASK) -> Data:
    ydtype = tasks.get(task).target_dtype
    t = lambda a, dt: torch.as_tensor(np.ascontiguousarray(a), dtype=dt)  # noqa: E731
    empty_x = t(np.zeros((0, *np.shape(x_train)[1:])), torch.float32)
    return Data(t(x_train, torch.float32), t(y_train, ydtype), empty_x,
                t(np.zeros(0), ydtype), t(x_test, torch.float32), t(y_test, ydtype),
                num_classes, task, name)


@DATASETS.register("mnist1d", task="classification", input="signal")
def mnist1d(seed: int, /, num_samples: PositiveInt = 5000, train_split: Split = 0.8,
            data_seed: int = 42) -> Data:
    """MNIST-1D (Greydanus 2020): 40-long 1-D signals, 10 classes, generated locally."""
    params = {"num_samples": num_samples, "train_split": train_split, "seed": data_seed}

    def make():
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args(as_dict=True)
        args.update(params)
        from mnist1d.utils import ObjectView

        d = make_dataset(ObjectView(args))
        return {"x": d["x"], "y": d["y"], "x_test": d["x_test"], "y_test": d["y_test"]}

    a = _cached("mnist1d", params, make)
    # (N, 40) signals become (N, 1, 40): one channel, as conv1d expects
    return to_data("mnist1d", a["x"][:, None, :], a["y"], a["x_test"][:, None, :], a["y_test"], 10)


@DATASETS.register("digits", task="classification", input="image")
def digits(seed: int, /, test_fraction: Split = 0.2, split_seed: int = 0) -> Data:
    """scikit-learn's 8x8 handwritten digits (1,797 images, shipped with the package)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8) in [0, 1]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=test_fraction,
                                          random_state=split_seed, stratify=d.target)
    return to_data("digits", xtr, ytr, xte, yte, 10)


def _check_synthetic(params: dict) -> None:
    # make_classification puts each class on a corner of an n_informative-dimensional cube
    informative = min(params["n_informative"], params["n_features"])
    if params["n_classes"] > 2 ** informative:
        raise ValueError(f"synthetic: n_classes {params['n_classes']} needs at least "
                         f"{(params['n_classes'] - 1).bit_length()} informative features; it "
                         f"has {informative} (n_informative, at most n_features)")


@DATASETS.register("synthetic", task="classification", input="vector",
                   preflight=_check_synthetic)
def synthetic(seed: int, /, n_samples: PositiveInt = 2000, n_features: PositiveInt = 20,
              n_classes: Classes = 4, n_informative: PositiveInt = 10,
              test_fraction: Split = 0.25, data_seed: int = 0) -> Data:
    """Gaussian clusters from scikit-learn's make_classification (fixed by data_seed)."""
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    x, y = make_classification(n_samples=n_samples, n_features=n_features,
                               n_informative=min(n_informative, n_features), n_redundant=0,
                               n_classes=n_classes, n_clusters_per_class=1,
                               random_state=data_seed)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=data_seed,
                                          stratify=y)
    return to_data("synthetic", xtr, ytr, xte, yte, n_classes)


# ---------------------------------------------------------------- regression

def of_values(name, x, y, test_fraction, split_seed, task) -> Data:
    """A dataset whose targets are values (no classes), split at random."""
    from sklearn.model_selection import train_test_split

    xtr, xte, ytr, yte = train_test_split(np.asarray(x, dtype=np.float32),
                                          np.asarray(y, dtype=np.float32),
                                          test_size=test_fraction, random_state=split_seed)
    return to_data(name, xtr, ytr, xte, yte, 0, task)


@DATASETS.register("diabetes", task="regression", input="vector")
def diabetes(seed: int, /, test_fraction: Split = 0.2, split_seed: int = 0) -> Data:
    """scikit-learn's diabetes progression (442 patients, 10 features, shipped with it)."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    return of_values("diabetes", d.data, d.target, test_fraction, split_seed, "regression")


@DATASETS.register("synthetic_regression", task="regression", input="vector")
def synthetic_regression(seed: int, /, n_samples: PositiveInt = 1000, n_features: PositiveInt = 10,
                         n_informative: NonNegativeInt = 5, noise: NonNegative = 10.0,
                         test_fraction: Split = 0.2, data_seed: int = 0) -> Data:
    """A random linear target with gaussian noise (scikit-learn make_regression)."""
    from sklearn.datasets import make_regression

    x, y = make_regression(n_samples=n_samples, n_features=n_features,
                           n_informative=min(n_informative, n_features), noise=noise,
                           random_state=data_seed)
    return of_values("synthetic_regression", x, y, test_fraction, data_seed, "regression")


def single_samples(name: str, what: str, found, lonely: list[str],
                   hint: str = "merge or drop the rare classes") -> str:
    """Why a split that keeps each class's share in training and test cannot be made: a
    class with one sample cannot be shared (scikit-learn's own words named no column or
    folder). `what` holds the classes: `'label' of t.csv`, `the class folders of ROOT`."""
    return (f"{name}: {len(found)} classes in {what}, and {len(lonely)} of them have a "
            f"single sample ({', '.join(lonely[:5])}{' ...' if len(lonely) > 5 else ''}): a "
            f"class needs two, one for training and one for test; {hint}")


def no_holes(df, p: Path, name: str = "csv", where: str = "lines", first: int = 2) -> None:
    """Empty values are refused, not guessed: a NaN feature makes training diverge, a blank
    label turns integer classes into floats (a regression target), a missing text is no
    text. `where` counts rows as the file does: `first` is the first row's number (a csv's
    header is its line 1)."""
    holes = df.isna().sum()
    holes = holes[holes > 0]
    if len(holes):
        rows = [str(i + first) for i in df.index[df.isna().any(axis=1)][:3]]
        raise ValueError(f"{name}: {p} has empty values ("
                         + ", ".join(f"'{c}': {n}" for c, n in holes.items())
                         + f"; first on {where} {', '.join(rows)}); fill or drop them first")


def numbered(name: str, labels, classes: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """The class names and each label's class index: in sorted order, or in `classes`' (a
    trained model numbers its classes its own way: its scores are read in that order)."""
    if classes is None:
        return np.unique(labels, return_inverse=True)
    said = np.asarray(labels).astype(str)
    classes = classes_are(name, classes, set(said.tolist()))
    index = {c: i for i, c in enumerate(classes)}
    return np.asarray(classes), np.asarray([index[v] for v in said.tolist()])


def classes_are(name: str, classes: list | None, found) -> list[str] | None:
    """`classes` as text (integer labels are written as numbers), checked to be the labels
    `found`, each once: when the suite loads, and again when a cell reads the file."""
    if classes is None:
        return None
    classes = [str(c) for c in classes]
    if set(classes) != set(found) or len(set(classes)) != len(classes):
        raise ValueError(f"{name}: classes {classes} are not the labels found, each once: "
                         f"{', '.join(sorted(found))}")
    return classes


def standardize_targets(data: Data) -> Data:
    """Targets scaled as the task trains on them (regression: zero mean, unit std with
    training statistics); figures are reported in the original units (`target_scale`)."""
    return tasks.of(data).standardize(data)


# ---------------------------------------------------------------- splits

def split_validation(data: Data, val_fraction: float, seed: int, folds: int = 0,
                     fold: int = 0) -> Data:
    """Carve a validation split from the training split; the seed picks which samples.
    With `folds`, validation is fold `fold` of k equal parts (k-fold cross-validation)."""
    if len(data.y_val):  # the dataset fixed its validation split (a corpus: by position)
        if folds:
            raise ValueError(f"dataset '{data.name}' fixes its validation split by position; "
                             "cross-validation does not apply to it")
        return data
    n = data.n_train
    g = torch.Generator().manual_seed(10_007 + seed)
    perm = torch.randperm(n, generator=g)
    if folds:
        if not 0 <= fold < folds:
            raise ValueError(f"fold {fold} outside 0..{folds - 1}")
        parts = torch.tensor_split(perm, folds)
        val = parts[fold]
        train = torch.cat([p for i, p in enumerate(parts) if i != fold])
    elif val_fraction <= 0:
        return data
    else:
        n_val = max(1, int(round(n * val_fraction)))
        val, train = perm[:n_val], perm[n_val:]
    if data.stream is not None:  # validation is decoded once; training keeps streaming
        return replace(data, y_train=data.y_train[train], x_val=data.stream.decode(val),
                       y_val=data.y_train[val], stream=data.stream.take(train))
    return replace(data, x_train=data.x_train[train], y_train=data.y_train[train],
                   x_val=data.x_train[val], y_val=data.y_train[val])


def load(spec: Choice | dict, seed: int, val_fraction: float, folds: int = 0,
         fold: int = 0) -> Data:
    data = chosen("dataset", spec).build(seed)
    return standardize_targets(split_validation(data, val_fraction, seed, folds, fold))


def train_sample(data: Data, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` training inputs and labels drawn at random (the same for every cell of the
    data), in memory (calibration, importance statistics; never test); a streamed split's
    are decoded without augmentation. Drawn, not the first n: a split in its files' order
    (an image folder's, class by class) would calibrate on its first class alone."""
    if n >= data.n_train:
        idx = torch.arange(data.n_train)
    else:
        draw = torch.Generator().manual_seed(0)
        idx = torch.randperm(data.n_train, generator=draw)[:n].sort().values
    x = data.stream.decode(idx) if data.stream is not None else rows(data.x_train, idx)
    return x, data.y_train[idx]


def rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[idx] as a dense batch; x may be stored sparse (the `sparse` preprocessing)."""
    if x.is_sparse:
        return torch.index_select(x, 0, idx).to_dense()
    return x[idx]
