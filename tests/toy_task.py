"""A third task, registered the way a user's plugin registers one (a suite names this module
under `plugins:`): signs to predict, one output per input, scored by the share of signs
right. With its dataset and its default loss, it is everything a task needs; nothing in
modelopt is edited for it (tests/test_tasks.py runs it through a cell, report and compare)."""

import torch
from torch import nn

from modelopt.spec.metric import Metric
from modelopt.spec.registries import DATASETS, LOSSES, TASKS
from modelopt.techniques.data import Data
from modelopt.techniques.tasks import Task


class Signs(Task):
    """Targets are -1 or +1; the sign of the one output is the prediction."""

    def loss(self, out, y):
        return nn.functional.softplus(-y.reshape(-1) * out.reshape(-1)).mean()

    def score(self, out, y):
        return float((torch.sign(out.reshape(-1)) == y).double().mean())

    def metrics(self, out, data):
        return {"toy_score": self.score(out, data.y_test),
                "loss": float(self.loss(out, data.y_test))}


@TASKS.register("toy_signs", headline="toy_score", columns=("toy_score", "toy_score_best_val"),
                default_loss="toy_margin",
                metrics=(Metric("toy_score", "toy score %", "pct", True, "points", 0.01,
                                "fraction"),
                         Metric("toy_score_best_val", "toy @best val %", "pct", True, "points",
                                0.01, "fraction")))
def toy_signs_task() -> Task:
    """Signs of a linear function: the share of signs right."""
    return Signs()


class Margin(nn.Module):
    def forward(self, out, y):
        return nn.functional.softplus(-y.reshape(-1) * out.reshape(-1)).mean()


@LOSSES.register("toy_margin", task="toy_signs")
def toy_margin() -> nn.Module:
    """Soft-margin loss of signs (the toy task's default)."""
    return Margin()


@DATASETS.register("toy_signs", task="toy_signs", input="vector")
def toy_signs(seed: int, /, n_samples: int = 300, n_features: int = 6) -> Data:
    """Gaussian inputs; the target is the sign of a fixed linear function of them."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_samples, n_features, generator=g)
    y = torch.sign(x @ torch.randn(n_features, generator=g) + 1e-6)
    cut = int(0.8 * n_samples)
    return Data(x[:cut], y[:cut], x[:0], y[:0], x[cut:], y[cut:], 0, "toy_signs", "toy_signs")
