"""A metric: expected calibration error of the shipped model, on every classification cell.

Declared once (title, direction, tolerance); the run writes the declaration beside its
results, so report, compare and export know `ece` without importing this module.
"""

import torch

from modelopt.results.metrics import Metric
from modelopt.run.measures import Evaluated, Measure
from modelopt.spec.registries import METRICS
from modelopt.spec.registry import PositiveInt


def expected_calibration_error(logits: torch.Tensor, y: torch.Tensor, bins: int) -> float:
    """Guo et al. (2017): the confidence-weighted gap between confidence and accuracy."""
    conf, pred = torch.softmax(logits, 1).max(1)
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            gap = (pred[inside] == y[inside]).float().mean() - conf[inside].mean()
            ece += float(inside.float().mean() * gap.abs())
    return ece


@METRICS.register("ece")
def ece(*, bins: PositiveInt = 15) -> Measure:
    """Expected calibration error (15 equal-width confidence bins) of the model that ships."""
    def compute(e: Evaluated) -> dict:
        return {"ece": expected_calibration_error(e.outputs, e.data.y_test, bins)}

    return Measure((Metric("ece", "ECE", "f3", False, "absolute", 0.01, "fraction"),), compute,
                   tasks=("classification",))
