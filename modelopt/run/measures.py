"""Extra figures a cell computes when its suite names them (`metrics: [ece]`): the
extension point for a new metric.

A measure is registered by name (`METRICS.register`) and returns a `Measure`: the figures it
declares (results.metrics.Metric: title, direction, tolerance) and a function from what the
cell has just evaluated to those figures. The run writes the declarations into its
suite.json, so report, compare and export know them without importing the measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from modelopt.results import metrics as M
from modelopt.spec.cell import chosen
from modelopt.techniques.data import Data


@dataclass(frozen=True)
class Evaluated:
    """What a measure sees: the model that ships, the data, and that model's outputs on the
    test split (logits for classification, predictions for regression; float32, CPU)."""

    model: nn.Module
    data: Data
    outputs: torch.Tensor


@dataclass(frozen=True)
class Measure:
    metrics: tuple[M.Metric, ...]
    compute: Callable[[Evaluated], dict]
    tasks: tuple[str, ...] | None = None  # the tasks (TASKS names) it applies to; None: any


def build(specs: list[dict]) -> list[Measure]:
    """The measures a cell names, built; their figures declared in the metric table."""
    out = []
    for spec in specs:
        measure = chosen("metrics", spec).build()
        for m in measure.metrics:
            M.declare(m)
        out.append(measure)
    return out


def declarations(specs: list[dict]) -> list[dict]:
    """The figures of these measures, as the run writes them into suite.json."""
    return [M.as_dict(m) for measure in build(specs) for m in measure.metrics]


def compute(specs: list[dict], evaluated: Evaluated) -> dict:
    """The named measures that apply to the task; a figure a measure did not declare is an
    error (the report could not say what it is)."""
    figures = {}
    for measure in build(specs):
        if measure.tasks is not None and evaluated.data.task not in measure.tasks:
            continue
        got = measure.compute(evaluated)
        names = {m.name for m in measure.metrics}
        stray = sorted(set(got) - names)
        if stray:
            raise ValueError(f"a measure returned {stray}, which it does not declare "
                             f"(it declares {sorted(names)})")
        figures.update(got)
    return figures
