"""Extra figures a cell computes when its suite names them (`metrics: [ece]`): the
extension point for a new metric.

A measure is registered by name (`METRICS.register`) and returns a `Measure`: the figures it
declares (results.metrics.Metric: title, direction, tolerance) and a function from what the
cell has just evaluated to those figures. The run writes the declarations into its
suite.json, so report, compare and export know them without importing the measure.
"""

from __future__ import annotations

import math
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
    """The measures a cell names, built; their figures declared in the metric table. A
    figure modelopt or a task records itself (accuracy, perplexity) is refused: a measure
    of that name would replace the cell's own figure under its title."""
    out, reserved = [], _reserved()
    for spec in specs:
        choice = chosen("metrics", spec)
        measure = choice.build()
        for m in measure.metrics:
            if m.name in reserved:
                raise ValueError(f"metric '{choice.name}' declares '{m.name}', a figure "
                                 "modelopt records itself; give yours another name")
            M.declare(m)
        out.append(measure)
    return out


def _reserved() -> frozenset[str]:
    from modelopt.spec.registries import TASKS

    return M.BUILTIN | {m.name for e in TASKS.entries() for m in e.info.metrics}


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
        figures.update({k: _number(k, v) for k, v in got.items() if v is not None})
    return figures


def _number(name: str, value) -> float | int | bool:
    """A figure as a record holds it: a finite plain number. A tensor or NaN is the measure's
    mistake, said here (a tensor could not be sent back; a NaN would vanish unsaid)."""
    if isinstance(value, (bool, int)):
        return value
    if isinstance(value, float) or type(value).__module__ == "numpy" and hasattr(value, "item"):
        number = float(value)
        if math.isfinite(number):
            return number
        raise ValueError(f"a measure returned {number} for '{name}': a figure is a finite "
                         "number (return None where it has none)")
    raise ValueError(f"a measure returned a {type(value).__name__} for '{name}': a figure is a "
                     "number (float(tensor) for a tensor of one value)")
