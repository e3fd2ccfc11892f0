import re
import subprocess
import sys

import pytest

from modelopt.spec.suite import SuiteError, cell_id, expand, load, parse

BASE = """
name: s
seeds: [0]
defaults:
  dataset: mnist1d
  model: cnn
  optimizer: {name: adam, lr: 0.01}
"""


def err(text: str) -> SuiteError:
    with pytest.raises(SuiteError) as e:
        parse(text, "suite.yaml")
    return e.value


def test_unknown_top_level_key_names_it():
    e = err(BASE + "matrx:\n  model: [mlp]\n")
    assert e.where == "matrx" and "did you mean 'matrix'" in e.message


def test_a_misspelt_key_is_named_before_the_key_it_leaves_missing():
    """`cv: {fold: 3}` said only `cv.folds: Field required`; `train.match_budget` did not
    say where the key belongs."""
    e = err(BASE + "cv: {fold: 3}\nmatrix:\n  optimizer: [adam, sgd]\n")
    assert e.where == "cv.fold" and "did you mean 'folds'" in e.message
    e = err(BASE.replace("lr: 0.01}", "lr: 0.01}\n  train: {match_budget: true}")
            + "matrix:\n  optimizer: [adam, sgd]\n")
    assert e.where == "defaults.train.match_budget", e.where
    assert "`match_budget` is a key of the suite's top level" in e.message
    assert "steps, epochs" in e.message and "fold" not in e.message  # cv's, not the suite's


def test_unknown_name_lists_choices_and_closest():
    e = err(BASE + "matrix:\n  optimizer: [adma]\n")
    assert e.where == "matrix.optimizer[0]"
    assert "did you mean 'adam'" in e.message and "sgd" in e.message
    # a name in the wrong case is the closest of all, though difflib alone would not say so
    assert "did you mean 'bf16'" in err(BASE + "matrix:\n  quantize: [BF16]\n").message
    # two letters swapped in a short name is that name; a weak match of another length is
    # none (`widht` was "did you mean 'weights'?" of a model taking `hidden`)
    assert "did you mean 'mlp'" in err(BASE + "matrix:\n  model: [mpl]\n").message
    from modelopt.spec.registry import closest

    assert "did you mean 'width'" in err(BASE + "matrix:\n  model: [{name: mlp, widht: 32}]\n"
                                         ).message
    assert closest("widht", ["hidden", "weights"]) == ""  # a plugin's net taking `hidden`


def test_unknown_parameter_names_what_is_accepted():
    e = err(BASE + "matrix:\n  optimizer: [{name: adam, momentum: 0.9}]\n")
    assert e.where == "matrix.optimizer[0]"
    assert "has no parameter 'momentum'" in e.message and "betas" in e.message


def test_wrong_type():
    e = err(BASE + "matrix:\n  model: [{name: mlp, hidden: many}]\n")
    assert "hidden" in e.message and "many" in e.message


def test_no_matrix_is_one_cell_and_an_empty_axis_is_an_error():
    assert len(parse(BASE).cells) == 1
    assert err(BASE + "matrix:\n  model: []\n").where == "matrix.model"


def test_train_field_error_names_field():
    e = err(BASE + "matrix:\n  model: [mlp]\n  train: [{steps: -1}]\n")
    assert "train" in e.where and "steps" in e.where


def test_unknown_cell_key():
    e = err(BASE + "matrix:\n  modle: [mlp]\n")
    assert e.where == "matrix.modle[0]" and "did you mean 'model'" in e.message


def test_model_dataset_mismatch_is_caught_before_running():
    e = err(BASE + "matrix:\n  model: [cnn2d]\n")
    assert "cnn2d" in e.message and "mnist1d" in e.message
    assert e.where == "cell [model=cnn2d]"
    # a key left at what it implies is named as the tables name it: eager, not none
    assert err(BASE + "matrix:\n  model: [cnn2d]\n  deploy: [eager]\n").where == \
        "cell [model=cnn2d, deploy=eager]"
    # without a matrix the one cell is the defaults, and named so (not "cell []")
    assert err(BASE.replace("model: cnn", "model: cnn2d")).where == "defaults"


def test_not_yaml_and_not_mapping():
    assert "YAML" in err("a: [").message
    assert "mapping" in err("- 1\n- 2").message


def test_cli_exit_2_without_traceback(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(BASE + "matrix:\n  optimizer: [adma]\n")
    r = subprocess.run([sys.executable, "-m", "modelopt", "run", str(p), "--out",
                        str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 2
    assert "matrix.optimizer[0]" in r.stderr and str(p) in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "results.jsonl").exists()


# ---------------------------------------------------------------- matrix semantics

def test_expand_product_exclude_include_like_github():
    matrix = {"fruit": ["apple", "pear"], "animal": ["cat", "dog"]}
    include = [{"color": "green"}, {"color": "pink", "animal": "cat"},
               {"fruit": "apple", "shape": "circle"}, {"fruit": "banana"},
               {"fruit": "banana", "animal": "cat"}]
    combos = expand(matrix, include, [])
    # the worked example in GitHub's documentation for jobs.<id>.strategy.matrix.include
    assert combos == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]
    assert expand(matrix, [], [{"fruit": "apple", "animal": "cat"}]) == [
        {"fruit": "apple", "animal": "dog"}, {"fruit": "pear", "animal": "cat"},
        {"fruit": "pear", "animal": "dog"}]
    assert len(expand(matrix, [], [{"fruit": "apple"}])) == 2  # partial match excludes


def test_parse_resolves_cells_and_merges_defaults():
    s = parse(BASE + """
matrix:
  model: [mlp, cnn]
  optimizer: [sgd, {name: adam, lr: 0.003}]
exclude:
  - {model: mlp, optimizer: sgd}
include:
  - {model: linear, optimizer: sgd}
""")
    cfgs = [c.as_config() for c in s.cells]
    assert len(cfgs) == 4
    names = [(c["model"]["name"], c["optimizer"]["name"], c["optimizer"]["lr"]) for c in cfgs]
    assert ("mlp", "adam", 0.003) in names and ("mlp", "sgd", 0.01) not in names
    sgd = next(c for c in cfgs if c["optimizer"]["name"] == "sgd")
    assert sgd["optimizer"]["lr"] == 0.01  # sgd's own default, not adam's lr from defaults
    assert all(c["model"].get("hidden", 100) == 100 for c in cfgs if c["model"]["name"] == "mlp")
    assert sorted(c.cell_id for c, _ in s.runs()) == sorted(c.cell_id for c in s.cells)


def test_runs_come_in_shuffled_passes_one_per_seed():
    s = parse(BASE.replace("seeds: [0]", "seeds: [0, 1, 2]")
              + "matrix:\n  model: [mlp]\n  model.hidden: [2, 3, 4, 5, 6, 7, 8, 9]\n")
    runs = s.runs()
    passes = [runs[i * 8:(i + 1) * 8] for i in range(3)]
    for seed, p in zip((0, 1, 2), passes):
        assert {c.cell_id for c, _ in p} == {c.cell_id for c in s.cells}
        assert {sd for _, sd in p} == {seed}
    orders = [[c.cell_id for c, _ in p] for p in passes]
    assert len({tuple(o) for o in orders}) == 3  # each pass in its own order
    assert s.runs() == runs  # and the same order every time


def test_dotted_keys_set_parameters():
    s = parse(BASE + "matrix:\n  model: [mlp]\n  model.hidden: [8, 16]\n  train.steps: [5]\n")
    assert sorted(c.as_config()["model"]["hidden"] for c in s.cells) == [8, 16]
    assert all(c.as_config()["train"]["steps"] == 5 for c in s.cells)


def test_cell_id_is_stable_and_seed_free():
    a = parse(BASE + "matrix:\n  model: [mlp]\n")
    b = parse(BASE.replace("seeds: [0]", "seeds: [0, 1, 2]") + "matrix:\n  model: [mlp]\n")
    assert a.cells[0].cell_id == b.cells[0].cell_id == cell_id(a.cells[0].as_config())
    c = parse(BASE + "matrix:\n  model: [{name: mlp, hidden: 99}]\n")
    assert c.cells[0].cell_id != a.cells[0].cell_id


def test_shipped_suites_are_valid(tmp_path, monkeypatch):
    from pathlib import Path

    from modelopt.spec.suite import load
    from modelopt.techniques.images import write_digits

    suites = sorted((Path(__file__).parent.parent / "suites").glob("*.yaml"))
    assert suites
    monkeypatch.chdir(tmp_path)  # the vision suite reads data/digits32, as `make vision` writes
    write_digits(tmp_path / "data" / "digits32", 8)
    import shutil  # the text suite reads suites/data/docstrings.csv, from the repository root

    shutil.copytree(Path(__file__).parent.parent / "suites" / "data", tmp_path / "suites" / "data")
    for p in suites:
        assert load(p).cells


def test_files_a_dataset_needs_are_checked_when_the_suite_loads(tmp_path):
    """Not once per seed inside each cell: before anything runs, naming the key."""
    base = "name: f\ndefaults:\n  model: mlp\n  dataset: DATA\n"
    with pytest.raises(SuiteError, match=r"defaults.dataset: mnist: files not found under .*"
                                         r"modelopt never downloads"):
        parse(base.replace("DATA", f"{{name: mnist, root: {tmp_path}}}"))
    with pytest.raises(SuiteError, match=r"defaults.dataset: csv: no file at"):
        parse(base.replace("DATA", f"{{name: csv, path: {tmp_path}/x.csv, target: y}}"))
    (tmp_path / "t.csv").write_text("a,b,label\n1,2,cat\n")
    with pytest.raises(SuiteError, match=r"has no column 'y'; columns: a, b, label"):
        parse(base.replace("DATA", f"{{name: csv, path: {tmp_path}/t.csv, target: y}}"))


def test_defaults_alone_are_one_cell_with_the_default_optimizer():
    suite = parse("name: one\ndefaults:\n  dataset: {name: synthetic}\n  model: mlp\n")
    (cell,) = suite.cells
    assert cell.as_config()["optimizer"] == {"name": "adam", "lr": 0.001, "betas": [0.9, 0.999],
                                        "eps": 1e-8, "weight_decay": 0.0, "decay_all": False}
    assert cell.as_config()["backend"] == {"name": "cpu", "threads": 1} and "metrics" not in cell.as_config()


def test_what_names_no_optimizer_gets_the_default_one_too():
    """An `optimizer.lr` axis, and a teacher, without an optimizer named: Adam, as a cell."""
    base = "name: o\ndefaults:\n  dataset: {name: synthetic}\n  model: mlp\n"
    s = parse(base + "matrix:\n  optimizer.lr: [0.01, 0.1]\n")
    assert sorted((c.as_config()["optimizer"]["name"], c.as_config()["optimizer"]["lr"])
                  for c in s.cells) == [("adam", 0.01), ("adam", 0.1)]
    # with the technique an axis of its own too, in either order: every pair a cell
    for axes in ("optimizer.lr: [0.01, 0.1]\n  optimizer: [sgd, adam]",
                 "optimizer: [sgd, adam]\n  optimizer.lr: [0.01, 0.1]"):
        s = parse(base + f"matrix:\n  {axes}\n")
        assert sorted((c.as_config()["optimizer"]["name"], c.as_config()["optimizer"]["lr"])
                      for c in s.cells) == [("adam", 0.01), ("adam", 0.1), ("sgd", 0.01),
                                            ("sgd", 0.1)]
    s = parse(base + "  distill: {name: kd, teacher: {model: {name: mlp, hidden: 64}, "
                     "train: {steps: 0}}}\n")
    teacher = s.cells[0].as_config()["distill"]["teacher"]
    assert teacher["optimizer"] == s.cells[0].as_config()["optimizer"]  # Adam's defaults
    assert teacher["train"]["steps"] == 0


def test_a_teacher_is_checked_as_a_cell_and_its_mistakes_named_where_written():
    base = ("name: t\ndefaults: {dataset: mnist1d, model: mlp, train: {steps: 5}}\n"
            "matrix:\n  distill: [none, {name: kd, teacher: %s}]\n")
    parse(base % "{model: cnn}")  # loads
    for teacher, where, said in (
            ("{train: {steps: 200}}", "teacher.model", "a teacher needs a model"),
            ("{model: mlp, train: {stepz: 3}}", "teacher.train.stepz", "did you mean 'steps'"),
            ("{model: {name: cnn, chanels: 3}}", "teacher.model", "did you mean 'channels'"),
            ("{model: gpt}", "", "teacher's model 'gpt' takes tokens inputs but dataset "
                                 "'mnist1d' gives signal")):
        with pytest.raises(SuiteError, match=re.escape(where) + ".*" + re.escape(said)):
            parse(base % teacher)


def test_suite_file_mistakes_have_their_own_messages(tmp_path):
    with pytest.raises(SuiteError, match="is a directory"):
        load(tmp_path)
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(SuiteError, match="empty.yaml: the file is empty"):
        load(tmp_path / "empty.yaml")
    (tmp_path / "broken.yaml").write_text("name: x\nmatrix: [a\n")
    with pytest.raises(SuiteError, match=r"broken.yaml: not valid YAML: line 3, column 1"):
        load(tmp_path / "broken.yaml")
    with pytest.raises(SuiteError, match=r"defaults.train.step: unknown key 'step' \(did you "
                                         r"mean 'steps'\?\)"):
        parse("name: s\ndefaults:\n  dataset: synthetic\n  model: mlp\n  train: {step: 50}\n")
    # a cell's key written at the top level: said where it goes (was "unknown key; allowed:
    # name, description, seeds, ...", the top level's keys only)
    with pytest.raises(SuiteError, match=r"preprocess: unknown key at the top level: "
                                         r"`preprocess` is a cell's key, set under `defaults:`"):
        parse("name: s\npreprocess: [standardize]\ndefaults: {dataset: synthetic, model: mlp}\n")
    with pytest.raises(SuiteError, match=r"baselin: unknown key \(did you mean 'baseline'"):
        parse("name: s\nbaselin: {model: mlp}\ndefaults: {dataset: synthetic, model: mlp}\n")


def test_a_factory_named_by_import_path_is_checked_and_trains(tmp_path):
    from modelopt.results import store
    from modelopt.run import runner

    text = ("name: own\nseeds: [0]\ndefaults:\n  dataset: {name: synthetic, n_samples: 200}\n"
            "  train: {steps: 10, eval_every: 10}\n  model: MODEL\n")
    with pytest.raises(SuiteError, match=r"model 'tests.plugins:tiny_net' has no parameter "
                                         r"'widht' \(did you mean 'width'\?\)"):
        parse(text.replace("MODEL", '{name: "tests.plugins:tiny_net", widht: 4}'))
    with pytest.raises(SuiteError, match=r"defaults.model: .*cannot import module 'no_such_pkg.nets'"):
        parse(text.replace("MODEL", '"no_such_pkg.nets:net"'))
    with pytest.raises(SuiteError, match=r"module 'tests.plugins' has no function 'tiny'"):
        parse(text.replace("MODEL", '"tests.plugins:tiny"'))
    # on a corpus (token ids) the error says how to declare a model of yours for them
    with pytest.raises(SuiteError, match=r"gives tokens inputs; models for it: .*register it "
                                         r"in a plugin with MODELS.register\('tiny_net', "
                                         r"accepts=\('tokens',\)\)"):
        parse(text.replace("MODEL", '"tests.plugins:tiny_net"').replace(
            "{name: synthetic, n_samples: 200}", "corpus"))
    suite = parse(text.replace("MODEL", '{name: "tests.plugins:tiny_net", width: 4}'))
    assert not runner.run(suite, tmp_path, jobs=1).failed  # the cell's process imports it too
    (rec,) = store.read(tmp_path)
    assert rec.ok and rec.metrics["params"] == 20 * 4 + 4 + 4 * 4 + 4


PLUGIN = '''
import torch
from torch import nn
from modelopt.spec.registries import DATASETS, MODELS
from modelopt.techniques.data import Data


@DATASETS.register("waves", task="classification", input="vector")
def waves(seed: int, /, n: int = 120) -> Data:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long()
    e = torch.zeros(0, 6)
    return Data(x[:90], y[:90], e, y[:0], x[90:], y[90:], 2, name="waves")


class Wide(nn.Module):  # a class of the plugin's own: the timing process must unpickle it
    def __init__(self, n_in, n_out):
        super().__init__()
        self.fc = nn.Linear(n_in, n_out)

    def forward(self, x):
        return self.fc(x)


@MODELS.register("wide", accepts=("vector",))
def wide(input_shape: tuple, num_outputs: int, /) -> nn.Module:
    return Wide(input_shape[0], num_outputs)
'''


def test_a_suites_plugins_are_imported_recorded_and_found_by_every_process(tmp_path):
    from modelopt.results import store
    from modelopt.run import runner

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "my_waves.py").write_text(PLUGIN)
    suite_file = folder / "s.yaml"
    suite_file.write_text("name: own\nseeds: [0]\nplugins: [my_waves]\ndefaults:\n"
                          "  dataset: waves\n  model: wide\n  train: {steps: 6, eval_every: 3}\n")
    suite = load(suite_file)
    (cell,) = suite.cells
    assert cell.as_config()["plugins"] == {"modules": ["my_waves"], "path": [str(folder)]}
    assert not runner.run(suite, tmp_path / "out", jobs=1).failed  # timing unpickles Wide
    (rec,) = store.read(tmp_path / "out")
    assert rec.ok and rec.cell["plugins"]["modules"] == ["my_waves"]
    (row,) = store.load(tmp_path / "out").to_dict("records")
    assert row["latency_ms_p50"] > 0  # the timing process loaded the plugin's own class
    # where the code was found is not part of the cell's identity
    moved = {**cell.as_config(), "plugins": {"modules": ["my_waves"], "path": ["/elsewhere"]}}
    assert cell_id(moved) == cell.cell_id


PLUGIN_BASE = "name: own\ndefaults: {dataset: synthetic, model: mlp}\n"
PLUGIN_MISTAKES = {  # module, its source, what the suite's defaults add, what the error says
    # the module itself raised while importing
    "raises": ("broken", "raise RuntimeError('half-written')\n", "",
               r"plugins\[0\]: importing 'broken' raised RuntimeError: half-written \(at "
               r".*broken\.py:1\)"),
    # raised inside a library its code calls: the plugin's own line is the one named
    "raises_within": ("calls_badly", "import json\n\nCONFIG = json.loads('{')\n", "",
                      r"importing 'calls_badly' raised JSONDecodeError: .* \(at "
                      r".*calls_badly\.py:3\)"),
    # or inside modelopt's own registry (an editable install is no library path)
    "registers_badly": ("regs_badly", "from modelopt.spec.registries import LOSSES\n\n"
                        "@LOSSES.register('regs_badly_x', bogus=True)\ndef f():\n    pass\n",
                        "", r"unexpected keyword argument 'bogus' \(at .*regs_badly\.py:3\)"),
    # found beside the suite, but what it imports is not installed: said so, not "put it
    # beside the suite file"
    "dependency": ("needs_more", "import no_such_dependency_pkg\n", "",
                   r"plugin module 'needs_more' imports 'no_such_dependency_pkg', which cannot "
                   r"be imported"),
    # imported, but registers nothing under the name the suite uses: said so
    "unregistered": ("forgot", "def forgotten_loss():\n    pass\n", ", loss: forgotten_loss",
                     r"unknown loss 'forgotten_loss'.*the suite's plugins forgot imported, and "
                     r"none registered that name"),
    # named as a module of Python's own: that one is imported, and registers nothing
    "shadowed": ("profile", "X = 1\n", "",
                 r"plugins\[0\]: plugin module 'profile': .*profile.py is shadowed by .*; "
                 r"rename yours"),
}


def test_an_unimportable_plugin_is_an_error_at_its_key():
    with pytest.raises(SuiteError, match=r"plugins\[1\]: cannot import plugin module "
                                         r"'no_such_nets'"):
        parse(PLUGIN_BASE + "plugins: [tests.plugins, no_such_nets]\n")


@pytest.mark.parametrize("mistake", sorted(PLUGIN_MISTAKES))
def test_a_plugin_authors_mistake_is_an_error_naming_it(tmp_path, mistake):
    module, source, adds, said = PLUGIN_MISTAKES[mistake]
    (tmp_path / f"{module}.py").write_text(source)
    f = tmp_path / "s.yaml"
    f.write_text(PLUGIN_BASE.replace("model: mlp", f"model: mlp{adds}")
                 + f"plugins: [{module}]\n")
    with pytest.raises(SuiteError, match=said):
        load(f)


def test_expect_failure_names_cells_by_their_settings_and_refuses_what_matches_none():
    two = BASE + "matrix:\n  model: [cnn, mlp]\n  train.batch_size: [32, 64]\n"
    suite = parse(two + "expect_failure:\n  - cell: {model: mlp, train.batch_size: 64}\n"
                  "    reason: too wide here\n", "suite.yaml")
    [(cid, why)] = suite.expected_failures
    cell = next(c for c in suite.cells if c.cell_id == cid).as_config()
    assert (cell["model"]["name"], cell["train"]["batch_size"], why) == ("mlp", 64, "too wide here")
    assert suite.expected_failure(cid) == "too wide here"
    assert parse(two, "suite.yaml").content_hash == suite.content_hash  # the same cells
    from pathlib import Path

    from modelopt.run.preview import plan
    said = plan(suite, Path("/nonexistent/out"), jobs=1)  # named by its axes, not its hash
    assert "expected to fail: mlp · batch_size=64 (too wide here)" in said, said
    e = err(two + "expect_failure:\n  - cell: {model: gru}\n    reason: x\n")
    assert e.where == "expect_failure[0].cell" and "matches no cell" in e.message
    e = err(two + "expect_failure:\n  - cell: {modle: mlp}\n    reason: x\n")
    assert e.where == "expect_failure[0].cell.modle" and "did you mean 'model'" in e.message
    assert err(two + "expect_failure:\n  - cell: {model: mlp}\n").where == "expect_failure.0.reason"


def test_expect_failure_matches_lists_and_left_off_techniques_and_names_typos():
    two = BASE + "matrix:\n  regularization: [[], [l2]]\n"

    def matched(entry: str) -> int:
        return len(parse(two + "expect_failure:\n" + entry, "suite.yaml").expected_failures)

    assert matched("  - cell: {regularization: l2}\n    reason: x\n") == 1  # its weight free
    assert matched("  - cell: {deploy: eager, optimizer.lr: 1e-2}\n    reason: x\n") == 2
    e = err(two + "expect_failure:\n  - cell: {quantize: int9}\n    reason: x\n")
    assert e.where == "expect_failure[0].cell.quantize" and "unknown quantize 'int9'" in e.message
    e = err(two + "expect_failure:\n  - cell: {train.bach_size: 100}\n    reason: x\n")
    assert "no cell has a setting train.bach_size (did you mean 'batch_size'?)" in e.message
    e = err(two + "expect_failure:\n  - cell: {model: mlp}\n    reason: x\n")
    assert "no cell has model=mlp; the cells have cnn" in e.message
    e = err(two + "expect_failure:\n  - cell: {model: cnn}\n    reason: x\n    why: y\n")
    assert e.where == "expect_failure.0.why" and e.message.endswith("allowed: cell, reason")


TRAINING = """
name: tr
seeds: [0]
defaults:
  dataset: {name: synthetic, n_samples: 200}
  model: mlp
  SETTINGS
"""


@pytest.mark.parametrize("settings, said", [
    ("schedule: plateau\n  train: {steps: 50, val_fraction: 0}",
     "schedule 'plateau' steps on the validation score"),
    ("train: {steps: 50, val_fraction: 0, target: 0.5}",
     "train.target is a validation score, and val_fraction: 0"),
    ("prune: {name: l1_unstructured, finetune_steps: 10}\n"
     "  train: {steps: 50, val_fraction: 0, finetune_schedule: plateau}",
     "train.finetune_schedule 'plateau' steps on the validation score"),
])
def test_training_that_would_read_a_validation_split_it_lacks_is_refused(settings, said):
    with pytest.raises(SuiteError, match=said):
        parse(TRAINING.replace("SETTINGS", settings))
    # with a validation split (or folds) they stand
    assert parse(TRAINING.replace("SETTINGS", settings.replace("val_fraction: 0", "val_fraction: 0.2")))


@pytest.mark.parametrize("settings, said", [
    ("schedule: {name: warmup_cosine, warmup_steps: 100}\n  train: {steps: 50}",
     "warmup_steps (100) is not below the 50 training steps"),
    ("schedule: step\n  train: {steps: 500}", "step_size (1000) is not below the 500"),
    ("train: {steps: 50, target: 80}", "train.target 80 is above 1"),
])
def test_training_that_would_quietly_undo_a_technique_is_warned(settings, said):
    suite = parse(TRAINING.replace("SETTINGS", settings))
    assert any(said in w and "1 cell(s) (defaults)" in w for w in suite.warnings), suite.warnings
    assert not parse(TRAINING.replace("SETTINGS", "train: {steps: 50}")).warnings
    # cells of a matrix are named as it wrote them, not by their ids
    two = parse(TRAINING.replace("SETTINGS", settings) + "matrix:\n  model: [mlp, linear]\n")
    assert any("2 cell(s) (model=mlp; model=linear)" in w for w in two.warnings), two.warnings


def test_a_factory_by_import_path_shadowed_by_another_module_is_refused_at_load(
        tmp_path, monkeypatch):
    """`python -m modelopt` puts the working directory first: its my_cnn.py, not the suite
    folder's, built every cell, said only after all had run (and blamed on Ray)."""
    factory = ("import torch.nn as nn\n\ndef net(input_shape, num_outputs, /, width: int = {w}):\n"
               "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_outputs))\n")
    (tmp_path / "cwd").mkdir()
    (tmp_path / "suite").mkdir()
    (tmp_path / "cwd" / "shadow_fac_mod.py").write_text(factory.format(w=1))
    (tmp_path / "suite" / "shadow_fac_mod.py").write_text(factory.format(w=2))
    (tmp_path / "suite" / "s.yaml").write_text(
        "name: shadow\ndefaults: {dataset: mnist1d, model: 'shadow_fac_mod:net'}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "cwd"))
    monkeypatch.delitem(sys.modules, "shadow_fac_mod", raising=False)
    with pytest.raises(SuiteError, match=r"shadow_fac_mod.py is shadowed by .*cwd"):
        load(str(tmp_path / "suite" / "s.yaml"))


def test_exclude_names_a_technique_as_baseline_does_and_a_refused_baseline_says_why():
    """`exclude: [{prune: l1_structured}]` removed nothing where the matrix gave the method
    parameters (the plan shows it by name); a baseline that an include emptied was refused
    as `deploy=none` (written: eager) without the include that did it."""
    s = parse("name: ex\ndefaults: {dataset: mnist1d, model: mlp}\nmatrix:\n"
              "  prune: [none, {name: l1_structured, amount: 0.5}]\n"
              "exclude: [{prune: l1_structured}]\n")
    assert len(s.cells) == 1 and not s.warnings
    with pytest.raises(SuiteError) as refused:
        parse("name: ex\ndefaults: {dataset: mnist1d, model: mlp}\n"
              "baseline: {quantize: none, deploy: eager}\nmatrix:\n  quantize: [none]\n"
              "include: [{quantize: none, deploy: onnxruntime}]\n")
    said = str(refused.value)
    assert "no cell has deploy=eager; the cells have onnxruntime" in said
    assert "include[0] (quantize=none, deploy=onnxruntime) changed 1 existing cell" in said
    assert "`deploy: [eager]`" in said


def test_a_baseline_that_matches_two_cells_alike_is_refused_when_the_suite_loads():
    """`baseline: {model: cnn}` over two widths left the int8 rows with no baseline, said
    on the page only after the whole run; named with the parameter that picks one."""
    text = ("name: b\ndefaults: {dataset: mnist1d}\nbaseline: BASE\nmatrix:\n"
            "  model: [{name: cnn, channels: 8}, {name: cnn, channels: 16}]\n"
            "  quantize: [none, int8_dynamic]\n")
    with pytest.raises(SuiteError) as refused:
        parse(text.replace("BASE", "{model: cnn}"))
    said = str(refused.value)
    assert ("baseline: matches two cells alike (model: {name: cnn, channels: 8} and {name: "
            "cnn, channels: 16}): each cell is compared") in said, said
    assert "pick one cell for all (model: {name: cnn, channels: 8})" in said
    assert len(parse(text.replace("BASE", "{quantize: none}")).cells) == 4
    assert len(parse(text.replace("BASE", "{model: {name: cnn, channels: 8}}")).cells) == 4


@pytest.mark.parametrize("part", ["exclude", "include"])
@pytest.mark.parametrize("entry, said", [
    ("{optimizer: rmsprp}", "[0].optimizer: unknown optimizer 'rmsprp' (did you mean 'rmsprop'?)"),
    ("{optimizer: {name: sgd, lrr: 0.5}}", "[0].optimizer"),
])
def test_exclude_and_include_entries_name_techniques_as_baseline_does(part, entry, said):
    """A typo in exclude removed nothing, said only as a warning, and one in include was
    named by the cell it made; names and parameters are checked where they are written, as
    baseline's are (exit 2 at the command)."""
    said = part + said
    with pytest.raises(SuiteError) as refused:
        parse("name: ex\ndefaults: {dataset: mnist1d, model: mlp}\n"
              f"matrix:\n  optimizer: [sgd, adam]\n{part}: [{entry}]\n")
    assert said in str(refused.value), str(refused.value)
    assert "lrr" in str(refused.value) or "rmsprp" in str(refused.value)


def test_a_joined_include_suggests_a_matrix_value_that_works():
    """The warning's fix for a setting is the value the joined cells had (`none` is no
    batch size: following the hint gave an invalid suite); taken, it adds the cell."""
    text = ("name: inc\ndefaults: {dataset: mnist1d, model: mlp, train: {batch_size: 100}}\n"
            "matrix:\n  optimizer: [sgd, adam]\n{more}"
            "include: [{optimizer: sgd, train.batch_size: 50}, {optimizer: adam, optimizer.lr: 0.01}]\n")
    said = " ".join(parse(text.replace("{more}", "")).warnings)
    assert "`train.batch_size: [100]`" in said and "`optimizer.lr: [0.001]`" in said, said
    fixed = parse(text.replace("{more}", "  train.batch_size: [100]\n  optimizer.lr: [0.001]\n"))
    assert len(fixed.cells) == 4 and not fixed.warnings


def test_a_teacher_optimised_otherwise_than_the_suites_defaults_is_warned():
    """A teacher takes only the keys it names: the suite's AdamW does not reach it, and the
    page's teacher (trained with Adam) read worse than the student, unexplained."""
    text = """
name: kd
seeds: [0]
defaults:
  dataset: {name: synthetic, n_samples: 200}
  model: linear
  optimizer: {name: adamw, lr: 0.003}
  train: {steps: 10}
matrix:
  distill: [none, {name: kd, teacher: {model: {name: mlp, hidden: 8}TEACHER}}]
"""
    said = [w for w in parse(text.replace("TEACHER", "")).warnings if "distill teacher" in w]
    assert len(said) == 1 and "trains with optimizer adam(" in said[0]
    assert "the suite's defaults with adamw(lr=0.003" in said[0] and "distill=kd" in said[0]
    named = text.replace("TEACHER", ", optimizer: {name: adamw, lr: 0.003}")
    assert not [w for w in parse(named).warnings if "distill teacher" in w]


def test_a_key_given_twice_is_refused_and_a_merge_key_is_not():
    """PyYAML keeps the last of two equal keys: a matrix axis written twice vanished."""
    head = "name: m\nseeds: [0]\ndefaults: {dataset: {name: synthetic, n_samples: 300}, model: mlp}\n"
    with pytest.raises(SuiteError, match=r"not valid YAML: line 6, column 3: the key 'optimizer' "
                                         r"is given twice in one mapping"):
        parse(head + "matrix:\n  optimizer: [sgd, adam]\n  optimizer: [adamw]\n")
    merged = parse(head + "matrix:\n  optimizer:\n    - &a {name: sgd, lr: 0.1}\n"
                   "    - {<<: *a, lr: 0.2}\n")  # a merge key's keys given again, on purpose
    assert sorted(c.as_config()["optimizer"]["lr"] for c in merged.cells) == [0.1, 0.2]
    # `quantize: no` is YAML's false: said so, with what to write
    with pytest.raises(SuiteError, match=r"got False \(YAML reads yes/no/on/off as true/false"):
        parse(head.replace("model: mlp}", "model: mlp, quantize: no}"))



def test_two_matrix_values_of_one_cell_are_warned_of():
    text = ("name: m\nseeds: [0]\ndefaults: {dataset: {name: synthetic, n_samples: 300}, "
            "model: mlp}\nmatrix:\n  optimizer: [adam, {name: adam, lr: 0.001}]\n")
    suite = parse(text)
    assert len(suite.cells) == 1
    assert any("1 combination(s) are a cell another one names" in w
               and "optimizer=adam(lr=0.001) is optimizer=adam" in w for w in suite.warnings)
    assert not [w for w in parse(text.replace("0.001", "0.002")).warnings if "combination" in w]
