"""Every figure a cell records is declared once in the metric table (modelopt/results/metrics.py)."""

import pytest
import yaml

from modelopt.results import latency
from modelopt.results import metrics as M
from modelopt.run.cell import run_cell
from modelopt.spec.suite import parse

BASE = {"dataset": {"name": "synthetic", "n_samples": 300, "n_features": 12, "n_classes": 3},
        "optimizer": {"name": "adam", "lr": 0.01},
        "train": {"steps": 20, "batch_size": 32, "eval_every": 10}}
CELLS = {
    "pruned": {"model": {"name": "mlp", "hidden": 16},
               "prune": {"name": "l1_structured", "amount": 0.5, "finetune_steps": 5}},
    "int8": {"model": {"name": "mlp", "hidden": 16}, "quantize": "dynamic_int8"},
    "distilled": {"model": {"name": "mlp", "hidden": 8},
                  "distill": {"name": "kd", "teacher": {"model": {"name": "mlp", "hidden": 16},
                                                        "optimizer": "adam",
                                                        "train": {"steps": 10}}}},
    "target_and_preprocessing": {
        "model": "linear", "train": {**BASE["train"], "target": 0.1},
        "preprocess": [{"name": "subsample", "fraction": 0.5}, "dedupe", "sparse"]},
    "regression": {"model": "linear",
                   "dataset": {"name": "synthetic_regression", "n_samples": 200}},
}


@pytest.mark.parametrize("kind", list(CELLS))
def test_every_recorded_metric_is_declared(kind):
    spec = {"name": "m", "seeds": [0], "defaults": {**BASE, **CELLS[kind]},
            "matrix": {"model": [CELLS[kind]["model"]]}}
    out = run_cell(parse(yaml.safe_dump(spec)).cells[0], 0)
    assert out.status == "ok", out.error
    assert M.undeclared(out.metrics) == []


def test_timing_and_report_figures_are_declared():
    names = [n for pair in M.LATENCY_FIGURES.values() for n in pair]
    doc = {"rows": [{"cell_id": "a", "seed": 0, "kind": kind, "process": 0, "ms_batch1": 1.0,
                     "p90_ms_batch1": 1.2, "ms_batch": 2.0} for kind in M.LATENCY_FIGURES]}
    names += list(latency.figures(doc)[("a", 0)])
    names += list(latency.speedups(doc, {"a": ("a", "slimmed")})["a"])
    assert M.undeclared(names) == []


def test_every_gated_metric_has_a_direction_and_a_tolerance():
    for m in M.gated():
        assert m.higher_is_better is not None, m.name
        assert m.kind == "exact" or m.tolerance > 0, m.name


def test_a_title_is_a_markdown_table_header():
    """Report tables are GitHub markdown, which tabulate does not escape: a pipe in a title
    ('|w| > 1e-3') split its column and shifted every figure after it."""
    assert [m.name for m in M.TABLE.values() if "|" in m.title] == []
