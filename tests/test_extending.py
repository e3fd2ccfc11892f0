"""The README's "Extending" examples: a backend, a metric and a quantizer, each one module in
examples/extending/ loaded as a plugin, with no edit anywhere in modelopt."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modelopt.run.cell import run_cell
from modelopt.spec import plugins
from modelopt.spec.suite import parse

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "extending"
SUITE = """
name: extending
seeds: [0]
defaults:
  dataset: {name: synthetic, n_samples: 400, n_features: 8, n_classes: 3}
  model: {name: mlp, hidden: 32}
  optimizer: {name: adam, lr: 0.01}
  train: {steps: 40, batch_size: 64, eval_every: 20}
matrix:
  backend: [cpu]
"""


@pytest.fixture(autouse=True)
def examples_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


def cell(text: str) -> dict:
    return parse(text).cells[0]


def test_a_compiled_backend_trains_what_the_plain_one_does():
    plugins.load(["compiled_backend"])
    plain = run_cell(cell(SUITE), 0)
    compiled = run_cell(cell(SUITE.replace("backend: [cpu]", "backend: [compiled]")), 0)
    assert compiled.status == "ok" and compiled.env["device"] == "cpu"
    # the same seed, data and steps: compiled kernels reorder float sums, no more
    assert compiled.metrics["accuracy"] == pytest.approx(plain.metrics["accuracy"], abs=0.02)
    assert compiled.metrics["final_step"] == plain.metrics["final_step"] == 40


def test_a_metric_is_computed_and_reported_from_files(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{EXAMPLES}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "MODELOPT_PLUGINS": "calibration_metric"}
    (tmp_path / "s.yaml").write_text(SUITE.replace("matrix:", "  metrics: [{name: ece, bins: 10}]\nmatrix:"))
    run = subprocess.run([sys.executable, "-m", "modelopt", "run", str(tmp_path / "s.yaml"),
                          "--out", str(tmp_path / "r"), "-q"], env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    rec = json.loads((tmp_path / "r" / "results.jsonl").read_text())
    assert 0 <= rec["metrics"]["ece"] < 0.5
    # the report runs without the plugin: the declaration came with the results
    bare = {k: v for k, v in os.environ.items() if k != "MODELOPT_PLUGINS"}
    rep = subprocess.run([sys.executable, "-m", "modelopt", "report", str(tmp_path / "r"),
                          "--out", str(tmp_path / "rep"), "--csv"], env=bare,
                         capture_output=True, text=True)
    assert rep.returncode == 0, rep.stderr
    assert "ece" in (tmp_path / "rep" / "extending.csv").read_text().splitlines()[0]
    figures = (tmp_path / "rep" / "extending.md").read_text().split("## Every figure")[1]
    assert "| ECE " in figures.splitlines()[2] + " "  # the page's table has its column too


def test_a_quantizer_rounds_the_weights_it_ships_and_says_what_that_costs():
    plugins.load(["fake_quant"])
    wide = SUITE.replace("hidden: 32", "hidden: 256")  # weights outweigh the file's framing
    dense = run_cell(cell(wide), 0)
    four = run_cell(cell(wide.replace("matrix:", "  quantize: {name: fake_quant, bits: 4}\n"
                                                 "matrix:")), 0)
    assert four.status == "ok" and four.metrics["quantized_layers"] == 3
    for m in four.models["model"].shipped.modules():
        if isinstance(m, torch.nn.Linear):  # at most 15 values in a row (7 levels each side, 0)
            assert max(len(torch.unique(row)) for row in m.weight) <= 15
    # the same trained network, rounded: close in accuracy, smaller once zipped
    assert four.metrics["accuracy"] == pytest.approx(dense.metrics["accuracy"], abs=0.05)
    assert four.metrics["size_bytes"] == dense.metrics["size_bytes"]
    assert four.metrics["size_bytes_compressed"] < 0.8 * dense.metrics["size_bytes_compressed"]
    with pytest.raises(Exception, match="bits"):
        parse(wide.replace("matrix:", "  quantize: {name: fake_quant, bits: 1}\nmatrix:"))


def test_a_metric_named_where_it_does_not_apply_is_refused_when_the_suite_loads():
    """ece applies to classification: on a regression cell it would record nothing."""
    from modelopt.run.runner import check_figures
    from modelopt.spec.schema import SuiteError

    plugins.load(["calibration_metric"])
    check_figures(parse(SUITE.replace("matrix:", "  metrics: [ece]\nmatrix:")))  # applies
    regression = SUITE.replace("synthetic, n_samples: 400, n_features: 8, n_classes: 3",
                               "diabetes").replace("matrix:", "  metrics: [ece]\nmatrix:")
    with pytest.raises(SuiteError, match="metrics: metric 'ece' applies to classification "
                                         "cells, but cell .* is a regression task"):
        check_figures(parse(regression))


def test_a_measure_cannot_shadow_a_figure_and_says_what_it_returned_wrong():
    """A measure declaring `accuracy` replaced the cell's own under its title (99.9 % in
    bold); a tensor left the cell's process without a word; a NaN vanished unsaid."""
    from modelopt.run.runner import check_figures
    from modelopt.spec.schema import SuiteError

    plugins.load(["tests.plugins"])
    named = SUITE.replace("matrix:", "  metrics: [{name: test_figure, FIGURE}]\nmatrix:")
    for taken in ("accuracy", "perplexity"):  # modelopt's own, and a task's
        with pytest.raises(SuiteError, match=f"declares '{taken}', a figure modelopt records"):
            check_figures(parse(named.replace("FIGURE", f"figure: {taken}")))
    ok = run_cell(cell(named.replace("FIGURE", "returns: number")), 0)
    assert ok.status == "ok" and ok.metrics["test_value"] == 0.5
    assert "test_value" not in run_cell(cell(named.replace("FIGURE", "returns: none")), 0).metrics
    for returns, said in (("tensor", "returned a Tensor for 'test_value'"),
                          ("nan", "returned nan for 'test_value'")):
        with pytest.raises(ValueError, match=said):  # the cell fails with it, the run goes on
            run_cell(cell(named.replace("FIGURE", f"returns: {returns}")), 0)


def test_a_pruning_method_and_a_loss_are_one_module_each():
    """examples/extending/row_pruning.py and focal_loss.py, as write-a-plugin.md shows them:
    weights judged against their neuron's largest, so every neuron keeps its inputs, at the
    layer's exact count (rows of 5 or 40 weights too), fine-tuned with the masks held; focal
    loss at gamma 0 trains as cross-entropy does."""
    plugins.load(["row_pruning", "focal_loss"])
    prune = "  prune: {name: row_magnitude, amount: 0.5, finetune_steps: 10}\nmatrix:"
    pruned = run_cell(cell(SUITE.replace("matrix:", prune)), 0)
    assert pruned.status == "ok" and 0.45 < pruned.metrics["sparsity"] <= 0.5  # biases kept
    for m in pruned.models["model"].shipped.modules():
        if isinstance(m, torch.nn.Linear):
            assert (m.weight != 0).any(1).all()  # no neuron lost every input
    conv = SUITE.replace("synthetic, n_samples: 400, n_features: 8, n_classes: 3", "mnist1d")
    conv = conv.replace("{name: mlp, hidden: 32}", "{name: cnn, channels: 8}")
    assert run_cell(cell(conv.replace("matrix:", prune)), 0).status == "ok"
    plain = run_cell(cell(SUITE), 0)
    focal = run_cell(cell(SUITE.replace("matrix:", "  loss: {name: focal, gamma: 0.0}\n"
                                                   "matrix:")), 0)
    assert focal.status == "ok"
    assert focal.metrics["accuracy"] == pytest.approx(plain.metrics["accuracy"], abs=0.02)


def test_a_plugin_that_returns_the_wrong_thing_is_told_what_it_should_return():
    """A convert returning the bare model failed on tuple unpacking, and an optimizer without
    `return` on `'NoneType' object has no attribute 'zero_grad'`."""
    from modelopt.spec.registries import QUANTIZERS
    from modelopt.techniques.errors import TechniqueError
    from modelopt.techniques.optim import optimizer
    from modelopt.techniques.quantize import Quantizer

    @QUANTIZERS.register("test_bare_convert")
    def bare() -> Quantizer:
        return Quantizer(convert=lambda model, inputs: model)

    @optimizer("test_no_return")
    def no_return(params, /, lr: float = 0.1):
        torch.optim.SGD(params, lr=lr)

    with pytest.raises(TechniqueError, match=r"quantizer 'test_bare_convert': its convert "
                                             r"returned Sequential, not \(model, info\)"):
        run_cell(cell(SUITE.replace("matrix:", "  quantize: test_bare_convert\nmatrix:")), 0)
    with pytest.raises(TypeError, match="optimizer 'test_no_return': no_return returned "
                                        "NoneType, not a torch.optim.Optimizer"):
        run_cell(cell(SUITE.replace("{name: adam, lr: 0.01}", "test_no_return")), 0)


def test_an_optimizer_is_one_module_named_as_a_builtin_is():
    """examples/extending/nadam.py, as write-a-plugin.md shows it: registered by its
    decorator, trained with, and the same entry when named by its import path."""
    plugins.load(["nadam"])
    for name in ("nadam", '"nadam:nadam"'):
        rec = run_cell(cell(SUITE.replace("{name: adam, lr: 0.01}",
                                          f"{{name: {name}, lr: 0.01, weight_decay: 0.001}}")), 0)
        assert rec.status == "ok" and rec.metrics["accuracy"] > 0.5, name
