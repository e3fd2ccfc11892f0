"""The typed cell: built once by spec/, read by attribute in run/; keys that declare their
stage; ids of what a cell sets."""

import ast
import inspect
import re
from pathlib import Path

import pytest

from modelopt.spec import keys as K
from modelopt.spec.cell import Cell, Choice, canonical
from modelopt.spec.registries import DEPLOYERS, MODELS, PRUNERS
from modelopt.spec.suite import parse

RUN = Path(__file__).resolve().parents[1] / "modelopt" / "run"

SUITE = """
name: c
seeds: [0]
defaults:
  dataset: {name: synthetic, n_samples: 200, n_features: 8, n_classes: 3}
  model: {name: mlp, hidden: 8}
  train: {steps: 5}
matrix:
  prune: [none, {name: l1_unstructured, amount: 0.5}]
"""


def test_run_reads_the_typed_cell_never_a_dict_config():
    """No `config["train"]["eval_batch_size"]` in run/: the cell's parts are attributes. A
    recorded config read from a results file is turned into typed choices by spec/."""
    pattern = re.compile(r"""\bconfig\s*\[|\bconfig\.get\(|\.config\b|\bspec\[["']|"""
                         r"""\bspec\.get\(""")
    bad = [f"{p.name}:{i}: {line.strip()}" for p in sorted(RUN.glob("*.py"))
           for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not bad, "\n".join(bad)


def test_the_run_functions_take_the_typed_cell():
    from modelopt.run import cell, dense, plan, ship

    for fn in (cell.run_cell, cell.compress, ship.deploy, plan.train_here, plan.make_plan,
               plan.load_data, plan.build_net, dense.key, dense.training_config):
        params = inspect.signature(fn).parameters
        assert params["cell"].annotation in ("Cell", Cell), fn.__name__


def test_a_cell_is_frozen_and_typed():
    cell = parse(SUITE).cells[1]
    assert isinstance(cell.model, Choice) and cell.model.params["hidden"] == 8
    assert cell.compress.prune.name == "l1_unstructured" and cell.compress.quantize is None
    assert cell.train.settings.steps == 5 and cell.train.optimizer.name == "adam"
    assert cell.data.dataset.params["n_features"] == 8 and cell.task == "classification"
    with pytest.raises(AttributeError):
        cell.model = None
    # the record's form is plain data, and building the cell again from it gives the cell
    again = Cell.of(cell.as_config())
    assert again.as_config() == cell.as_config() and again.cell_id == cell.cell_id


def test_a_field_a_cell_does_not_set_never_enters_its_id(monkeypatch):
    """Naming a parameter at its default is the same cell; a parameter a later version adds
    with a default leaves every id as it was."""
    plain = parse(SUITE).cells[0]
    named = parse(SUITE.replace("train: {steps: 5}",
                                "train: {steps: 5, batch_size: 100}\n  optimizer: "
                                "{name: adam, lr: 0.001}")).cells[0]
    assert plain.cell_id == named.cell_id
    changed = parse(SUITE.replace("hidden: 8", "hidden: 9")).cells[0]
    assert changed.cell_id != plain.cell_id

    entry = MODELS.get("mlp")
    from modelopt.spec.registry import Param

    later = Param("later_knob", int, 3, "later_knob")
    monkeypatch.setattr(MODELS, "_entries", {**MODELS._entries, "mlp": type(entry)(
        entry.name, lambda *a, later_knob=3, **k: entry.fn(*a, **k),
        entry.params + (later,), entry.info, entry.doc)})
    again = parse(SUITE).cells[0]
    assert again.model.params["later_knob"] == 3  # filled in, as every default
    assert again.cell_id == plain.cell_id and "later_knob" not in str(canonical(
        again.as_config()))


def test_a_key_is_placed_by_its_declaration_alone():
    """Which keys change the trained network, what a teacher takes and what the report calls
    compression all follow from one declaration: a new key needs nothing else."""
    new = (*K.KEYS, K.Key("sparsify", "compress", PRUNERS),
           K.Key("tokenizer", "data", MODELS), K.Key("runtime", "deploy", DEPLOYERS))
    assert "tokenizer" in K.training_keys(new) and "sparsify" not in K.training_keys(new)
    assert "runtime" not in K.training_keys(new)
    assert "tokenizer" in K.teacher_keys("student", new)  # the student's data
    assert "sparsify" in K.teacher_keys("none", new) and "runtime" in K.teacher_keys("none", new)
    assert "sparsify" in K.compression_keys(new) and "runtime" not in K.compression_keys(new)
    # and the declarations of today, as the code uses them
    assert set(K.training_keys()) == {"dataset", "preprocess", "augment", "model", "optimizer",
                                      "schedule", "regularization", "loss", "distill",
                                      "backend", "train"}
    assert set(K.teacher_keys("own")) == {"model", "optimizer", "schedule", "regularization",
                                          "loss", "train"}
    assert set(K.compression_keys()) == {"prune", "quantize", "distill"}


def test_every_declared_key_is_a_field_of_its_cell():
    """The typed cell holds every declared key (and the declaration every field)."""
    cell = parse(SUITE).cells[0]
    for key in K.KEYS:
        if key.name != "train":
            cell.choice(key.name)  # raises KeyError for a key the cell has no field for


def test_training_shares_follow_the_declaration():
    """Cells that differ only after training (pruning) share a trained network; a quantizer
    that acts in training (declared trains=True) does not."""
    from modelopt.run import dense

    a, b = parse(SUITE).cells
    assert dense.key(a, 0) == dense.key(b, 0)
    clip = parse(SUITE.replace("prune: [none, {name: l1_unstructured, amount: 0.5}]",
                               "quantize: [none, weight_clip, dynamic_int8]")).cells
    keys = [dense.key(c, 0) for c in clip]
    assert keys[0] == keys[2] != keys[1]


def test_a_teacher_is_derived_from_the_declarations():
    cell = parse(SUITE.replace("  train: {steps: 5}", """  train: {steps: 5, val_fraction: 0.2}
  augment: [{name: noise, sigma: 0.1}]
  distill: {name: kd, teacher: {model: {name: mlp, hidden: 32}, optimizer: sgd}}""")).cells[1]
    teacher = cell.teacher()
    assert teacher.model.params["hidden"] == 32 and teacher.train.optimizer.name == "sgd"
    assert teacher.data.dataset == cell.data.dataset and teacher.backend == cell.backend
    assert teacher.data.augment == () and teacher.train.distill is None
    assert teacher.compress.prune is None and teacher.data.val_fraction == 0.2
    assert teacher.train.settings.steps != 5  # its own training, the default length


def test_ast_of_the_scan_can_fail(tmp_path):
    """The scan above sees a dict read (it can fail)."""
    src = 'def f(config):\n    return config["train"]["batch_size"]\n'
    assert re.search(r"\bconfig\s*\[", src) and ast.parse(src)
