"""Data techniques: preprocessing fitted on the training split, augmentation, subsampling."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import replace
from typing import Annotated, Callable

import torch
from pydantic import Field

from modelopt.spec.cell import chosen
from modelopt.spec.registries import AUGMENT, CELL_CHECKS, DATASETS, PREPROCESS
from modelopt.spec.registry import NonNegative, NonNegativeInt, Positive, Probability, RegistryError
from modelopt.techniques import tasks
from modelopt.techniques.data import Data


def _dims(x: torch.Tensor, per_feature: bool) -> tuple[int, ...]:
    # statistics over samples only (per feature), or over everything (global)
    return (0,) if per_feature else tuple(range(x.dim()))


@PREPROCESS.register("none", streams=True)
def none(data: Data, seed: int, /) -> Data:
    """Leave the inputs as they are."""
    return data


@PREPROCESS.register("standardize")
def standardize(data: Data, seed: int, /, per_feature: bool = True, eps: Positive = 1e-8,
                mean: list[float] | None = None, std: list[float] | None = None) -> Data:
    """Zero mean, unit variance with statistics of the training split only; or with the
    statistics a model trained elsewhere was trained with (`mean`, `std`: one value per
    feature, e.g. a scikit-learn StandardScaler's mean_ and scale_), so that it sees its
    inputs as it did."""
    _check_statistics(mean, std, data.x_train.shape[1:].numel(), per_feature)
    if mean is not None:
        shape = (1, *data.x_train.shape[1:]) if per_feature else (1,)
        mean_t = torch.tensor(mean, dtype=data.x_train.dtype).reshape(shape)
        std_t = torch.tensor(std, dtype=data.x_train.dtype).reshape(shape).clamp_min(eps)
    else:
        mean_t = data.x_train.mean(_dims(data.x_train, per_feature), keepdim=per_feature)
        std_t = data.x_train.std(_dims(data.x_train, per_feature),
                                 keepdim=per_feature).clamp_min(eps)
    f = lambda x: (x - mean_t) / std_t  # noqa: E731
    return replace(data, x_train=f(data.x_train), x_val=f(data.x_val), x_test=f(data.x_test))


def _check_statistics(mean, std, features: int, per_feature: bool) -> None:
    if (mean is None) != (std is None):
        raise RegistryError("standardize: give mean and std together (or neither: the "
                            "training split's own)")
    width = features if per_feature else 1
    if mean is not None and not len(mean) == len(std) == width:
        raise RegistryError(f"standardize: mean and std take one value per feature: {width}, "
                            f"got {len(mean)} and {len(std)}" if per_feature else
                            "standardize: per_feature: false takes one mean and one std")


def check_statistics(config: dict) -> None:
    """When the suite loads: statistics given to standardize (a scaler's a model was trained
    with) fit the dataset's features; found at run time, every cell of the suite failed.
    The dataset is built once per suite, and only where statistics are given."""
    for spec in config.get("preprocess") or []:
        if spec.get("name") == "standardize" and ("mean" in spec or "std" in spec):
            per_feature = spec.get("per_feature", True)
            width = _features(json.dumps(config["dataset"], sort_keys=True, default=str)) \
                if per_feature and spec.get("mean") is not None else 1
            _check_statistics(spec.get("mean"), spec.get("std"), width, per_feature)


@functools.lru_cache(maxsize=16)
def _features(dataset: str) -> int:
    return DATASETS.build_spec(json.loads(dataset), 0).x_train.shape[1:].numel()


CELL_CHECKS.append(check_statistics)


@PREPROCESS.register("minmax")
def minmax(data: Data, seed: int, /, low: float = 0.0, high: float = 1.0,
           per_feature: bool = True, eps: float = 1e-8) -> Data:
    """Rescale to [low, high] using the training split's min and max (test may fall outside)."""
    dims = _dims(data.x_train, per_feature)
    lo = data.x_train.amin(dims, keepdim=per_feature)
    hi = data.x_train.amax(dims, keepdim=per_feature)
    span = (hi - lo).clamp_min(eps)
    f = lambda x: low + (x - lo) / span * (high - low)  # noqa: E731
    return replace(data, x_train=f(data.x_train), x_val=f(data.x_val), x_test=f(data.x_test))


@PREPROCESS.register("subsample", selects_rows=True, streams=True)
def subsample(data: Data, seed: int, /, fraction: Annotated[float, Field(gt=0, le=1)] = 0.1,
              balanced: bool = False) -> Data:
    """Train on a random (or class-balanced: each class's share kept, at least one sample)
    fraction of the training split, after validation is carved out (validation and test keep
    every sample); an image folder's too, whose images stay on disk."""
    g = torch.Generator().manual_seed(20_011 + seed)
    n = data.n_train
    if balanced and tasks.of(data).info.class_outputs:
        keep = []
        for c in torch.unique(data.y_train):
            idx = torch.nonzero(data.y_train == c).flatten()
            k = max(1, int(round(len(idx) * fraction)))
            keep.append(idx[torch.randperm(len(idx), generator=g)[:k]])
        keep = torch.sort(torch.cat(keep)).values
    else:
        keep = torch.randperm(n, generator=g)[:max(1, int(round(n * fraction)))]
    info = {**data.info, "train_samples": len(keep)}
    if data.stream is not None:  # the files' positions kept; nothing decoded
        return replace(data, y_train=data.y_train[keep], stream=data.stream.take(keep),
                       info=info)
    return replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep], info=info)


@PREPROCESS.register("dedupe", selects_rows=True)
def dedupe(data: Data, seed: int, /) -> Data:
    """Drop exact duplicate training samples (same input and label); reports how many."""
    flat = torch.cat([data.x_train.flatten(1), data.y_train.reshape(-1, 1).to(data.x_train.dtype)], 1)
    _, inverse = torch.unique(flat, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(inverse), dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(len(inverse)), reduce="amin")
    keep = torch.sort(first).values
    info = {**data.info, "duplicates_dropped": len(flat) - len(keep)}
    return replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep], info=info)


@PREPROCESS.register("sparse", last=True)
def sparse(data: Data, seed: int, /, threshold: NonNegative = 0.0) -> Data:
    """Zero inputs with |x| <= threshold and store the training split as a sparse COO tensor
    (batches are made dense as they are drawn); reports the memory it saves."""
    def cut(x):
        return torch.where(x.abs() > threshold, x, torch.zeros((), dtype=x.dtype))
    x_train = cut(data.x_train).to_sparse()
    dense_mb = data.x_train.numel() * data.x_train.element_size() / 2**20
    sparse_mb = (x_train.indices().numel() * x_train.indices().element_size()
                 + x_train.values().numel() * x_train.values().element_size()) / 2**20
    info = {**data.info, "input_mb_dense": dense_mb, "input_mb_sparse": sparse_mb,
            "input_density": x_train.values().numel() / max(1, data.x_train.numel())}
    return replace(data, x_train=x_train, x_val=cut(data.x_val), x_test=cut(data.x_test),
                   info=info)


def apply(specs, data: Data, seed: int) -> Data:
    for spec in specs:
        data = chosen("preprocess", spec).build(data, seed)
    return data


# ---------------------------------------------------------------- augmentation
# Each returns fn(batch, generator) -> batch, applied to training batches only, on the
# batch's device, with randomness drawn on the CPU from the cell's seeded generator.

def _uniform(n, lo, hi, g):
    return lo + (hi - lo) * torch.rand(n, generator=g)


@AUGMENT.register("shift", inputs=("signal",))
def shift(*, max_steps: NonNegativeInt = 5, circular: bool = True) -> Callable:
    """Shift each 1-D signal by a random number of steps in [-max_steps, max_steps]."""
    def fn(x, g):
        n, length = x.shape[0], x.shape[-1]
        s = torch.randint(-max_steps, max_steps + 1, (n,), generator=g).to(x.device)
        pos = torch.arange(length, device=x.device).unsqueeze(0) - s.unsqueeze(1)  # (n, L)
        if circular:
            idx = pos.remainder(length)
            return torch.gather(x, -1, idx.unsqueeze(1).expand_as(x))
        inside = (pos >= 0) & (pos < length)
        out = torch.gather(x, -1, pos.clamp(0, length - 1).unsqueeze(1).expand_as(x))
        return out * inside.unsqueeze(1)  # zero padding where the shift brought nothing in
    return fn


@AUGMENT.register("noise", inputs=("signal", "vector", "image"))
def noise(*, sigma: NonNegative = 0.05) -> Callable:
    """Add gaussian noise of std sigma."""
    def fn(x, g):
        return x + sigma * torch.randn(x.shape, generator=g).to(x.device)
    return fn


@AUGMENT.register("scale", inputs=("signal", "vector"))
def scale(*, low: float = 0.8, high: float = 1.2) -> Callable:
    """Multiply each sample's amplitude by a factor drawn from [low, high]."""
    def fn(x, g):
        f = _uniform(x.shape[0], low, high, g).to(x.device)
        return x * f.view(-1, *([1] * (x.dim() - 1)))
    return fn


def _per_sample(x: torch.Tensor, params: list, op) -> torch.Tensor:
    # torchvision.transforms.v2 draws one parameter set per call; we draw one per sample
    # from our seeded generator and use v2.functional on tensors (no PIL round trip)
    return torch.stack([op(x[i], *p) for i, p in enumerate(params)])


@AUGMENT.register("rotation", inputs=("image",))
def rotation(*, degrees: float = 15.0) -> Callable:
    """Rotate each image by an angle drawn from [-degrees, degrees] (torchvision v2)."""
    from torchvision.transforms.v2 import functional as F

    def fn(x, g):
        angles = _uniform(x.shape[0], -degrees, degrees, g).tolist()
        return _per_sample(x, [(a,) for a in angles], lambda img, a: F.rotate(img, a))
    return fn


@AUGMENT.register("resized_crop", inputs=("image",))
def resized_crop(*, scale: tuple[float, float] = (0.8, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Callable:
    """Crop a random area (scale) and aspect ratio, resized back to the input size (torchvision v2)."""
    from torchvision.transforms.v2 import functional as F

    def fn(x, g):
        n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        area = _uniform(n, scale[0], scale[1], g) * h * w
        log_r = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), g)
        r = torch.exp(log_r)
        ch = torch.sqrt(area / r).round().clamp(1, h).long()
        cw = torch.sqrt(area * r).round().clamp(1, w).long()
        top = (torch.rand(n, generator=g) * (h - ch + 1)).long()
        left = (torch.rand(n, generator=g) * (w - cw + 1)).long()
        params = list(zip(top.tolist(), left.tolist(), ch.tolist(), cw.tolist()))
        return _per_sample(x, params, lambda img, t, lft, hh, ww: F.resized_crop(
            img, t, lft, hh, ww, [h, w], antialias=True))
    return fn


@AUGMENT.register("hflip", inputs=("image",))
def hflip(*, p: Probability = 0.5) -> Callable:
    """Flip each image left-right with probability p."""
    def fn(x, g):
        flip = (torch.rand(x.shape[0], generator=g) < p).to(x.device)
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    return fn


def augmenter(specs, data: Data) -> Callable | None:
    if not specs:
        return None
    fns = [chosen("augment", s).build() for s in specs]

    def fn(x, g):
        for f in fns:
            x = f(x, g)
        return x
    return fn
