"""Task losses, registered by name; the default follows the dataset's task."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from torch import nn

from modelopt.spec.cell import Choice, chosen
from modelopt.spec.registries import LOSSES, TASKS
from modelopt.spec.registry import Positive


@LOSSES.register("cross_entropy", task="classification")
def cross_entropy(*, label_smoothing: Annotated[float, Field(ge=0, le=1)] = 0.0) -> nn.Module:
    """Softmax cross-entropy (classification default)."""
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


@LOSSES.register("mse", task="regression")
def mse() -> nn.Module:
    """Mean squared error (regression default)."""
    return nn.MSELoss()


@LOSSES.register("huber", task="regression")
def huber(*, delta: Positive = 1.0) -> nn.Module:
    """Huber loss: quadratic within delta, linear beyond."""
    return nn.HuberLoss(delta=delta)


def build(spec: Choice | dict | None, task: str) -> nn.Module:
    """The cell's loss (a Choice or a spec), else its task's default."""
    return chosen("loss", spec or {"name": TASKS.info(task).default_loss}).build()
