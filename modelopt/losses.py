"""Task losses, registered by name; the default follows the dataset's task."""

from __future__ import annotations

from torch import nn

from modelopt.registry import Registry

LOSSES = Registry("loss")


@LOSSES.register("cross_entropy", task="classification")
def cross_entropy(*, label_smoothing: float = 0.0) -> nn.Module:
    """Softmax cross-entropy (classification default)."""
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


@LOSSES.register("mse", task="regression")
def mse() -> nn.Module:
    """Mean squared error (regression default)."""
    return nn.MSELoss()


@LOSSES.register("huber", task="regression")
def huber(*, delta: float = 1.0) -> nn.Module:
    """Huber loss: quadratic within delta, linear beyond."""
    return nn.HuberLoss(delta=delta)


DEFAULT = {"classification": "cross_entropy", "regression": "mse"}


def build(spec: dict | None, task: str) -> nn.Module:
    name = spec["name"] if spec else DEFAULT[task]
    params = {k: v for k, v in (spec or {}).items() if k != "name"}
    return LOSSES.build(name, **params)
