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


class TokenCrossEntropy(nn.CrossEntropyLoss):
    """Cross-entropy over every position of a sequence: (N, T, V) scores against (N, T)."""

    def forward(self, out, target):
        return super().forward(out.reshape(-1, out.shape[-1]), target.reshape(-1))


@LOSSES.register("token_cross_entropy", task="language_modelling")
def token_cross_entropy(*, label_smoothing: Annotated[float, Field(ge=0, le=1)] = 0.0
                        ) -> nn.Module:
    """Next-token cross-entropy, averaged over every position (language-modelling default)."""
    return TokenCrossEntropy(label_smoothing=label_smoothing)


def build(spec: Choice | dict | None, task: str) -> nn.Module:
    """The cell's loss (a Choice or a spec), else its task's default."""
    return chosen("loss", spec or {"name": TASKS.info(task).default_loss}).build()
