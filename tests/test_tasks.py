"""Tasks are registered entries: a third one (tests/toy_task.py) runs through a cell, the
report and compare with no edit in modelopt, and no module outside the task entries
switches on a task's name."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelopt.results import tasks as result_tasks
from modelopt.results.files import ResultsError
from modelopt.results.record import Record
from modelopt.spec.suite import SuiteError, parse
from modelopt.spec.tasks import BUILTIN

ROOT = Path(__file__).resolve().parents[1] / "modelopt"
# where a task's name may be a key or compared: the task entries themselves
ENTRIES = {"techniques/tasks.py", "spec/tasks.py"}
SUITE = """
name: toy
seeds: [0]
plugins: [tests.toy_task]
defaults:
  dataset: {name: toy_signs, n_samples: 300}
  model: {name: mlp, hidden: 16}
  optimizer: {name: adam, lr: 0.02}
  train: {steps: 60, batch_size: 32, eval_every: 20}
matrix:
  deploy: [eager, {name: test_slowed, factor: 1.0}]
thresholds: {toy_score: 0.5}   # a figure of the task's own: the gate reads it from the run
"""


def modelopt(*args, env=None):
    return subprocess.run([sys.executable, "-m", "modelopt", *map(str, args)],
                          capture_output=True, text=True, env=env)


def test_a_third_task_runs_through_a_cell_report_and_compare(tmp_path):
    (tmp_path / "s.yaml").write_text(SUITE)
    run = modelopt("run", tmp_path / "s.yaml", "--out", tmp_path / "r", "-q")
    assert run.returncode == 0, run.stderr
    recs = [json.loads(line) for line in (tmp_path / "r" / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs)
    for rec in recs:
        m = rec["metrics"]
        assert rec["task"] == "toy_signs" and 0.5 < m["toy_score"] <= 1
        assert 0 <= m["toy_score_best_val"] <= 1 and m["loss"] > 0
        assert not {"accuracy", "r2", "f1_macro", "rmse"} & set(m)  # no other task's figures
    # the artifact's outputs were checked by the task's own check, and agreed
    assert any(r["metrics"].get("deploy_max_abs_diff") == 0.0 for r in recs)
    meta = json.loads((tmp_path / "r" / "suite.json").read_text())
    assert meta["tasks"]["toy_signs"]["headline"] == "toy_score"
    assert {"toy_score", "toy_score_best_val"} <= {m["name"] for m in meta["metrics"]}

    # report and compare read the task from the results, without its code
    bare = {k: v for k, v in os.environ.items() if k != "MODELOPT_PLUGINS"}
    rep = modelopt("report", tmp_path / "r", "--out", tmp_path / "rep", "--csv", env=bare)
    assert rep.returncode == 0, rep.stderr
    page = (tmp_path / "rep" / "toy.md").read_text()
    assert "toy score %" in page and "## Toy score vs latency" in page
    assert "toy_score" in (tmp_path / "rep" / "toy.csv").read_text().splitlines()[0]
    cmp = modelopt("compare", tmp_path / "r", tmp_path / "r", "--no-retime", "--all", env=bare)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert "toy_score" in cmp.stdout


def test_the_task_says_what_suits_it():
    import tests.toy_task  # noqa: F401  (registers the toy task here too)

    base = ("name: t\nplugins: [tests.toy_task]\ndefaults: {dataset: toy_signs, model: mlp}\n"
            "matrix: {model: [mlp]}\n")
    with pytest.raises(SuiteError, match="mse"):
        parse(base.replace("model: mlp}", "model: mlp, loss: mse}"))
    with pytest.raises(SuiteError, match=r"distill 'kd' .*toy_signs"):  # soft targets need classes
        parse(base.replace("model: mlp}", "model: mlp, distill: {name: kd, teacher: "
                                          "{model: {name: mlp, hidden: 32}, optimizer: adam}}}"))


def test_old_records_and_runs_read_with_the_built_in_facts():
    old = Record(suite="s", cell_id="c", seed=0, status="ok", metrics={"r2": 0.5})
    assert old.task_or_guess() == "regression"
    assert Record(suite="s", cell_id="c", seed=0, status="failed").task_or_guess() == \
        "classification"  # a failed cell has no figure to tell it by: the first task
    assert result_tasks.headline("classification") == "accuracy"
    with pytest.raises(ResultsError, match="does not declare"):
        result_tasks.headline("never_declared")


def test_builtin_facts_are_those_the_entries_are_registered_with():
    from modelopt.spec import plugins
    from modelopt.spec.registries import TASKS

    plugins.load()
    for name, facts in BUILTIN.items():
        assert TASKS.info(name) == facts


# ---------------------------------------------------------------- no task-name switches

def _task_names_used_as_switches(tree: ast.AST, names: set[str]) -> list[int]:
    """Lines where a task's name is compared, a dict's key, a subscript, or a default
    (of a function's argument or a class's field): where code switches on a task."""
    def named(node) -> bool:
        return isinstance(node, ast.Constant) and node.value in names

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            hits = [node.left, *node.comparators]
            hits += [e for c in node.comparators if isinstance(c, (ast.Tuple, ast.List, ast.Set))
                     for e in c.elts]
        elif isinstance(node, ast.Dict):
            hits = [k for k in node.keys if k is not None]
        elif isinstance(node, ast.Subscript):
            s = node.slice
            hits = [s, *(s.elts if isinstance(s, ast.Tuple) else [])]
        elif isinstance(node, ast.arguments):
            hits = [*node.defaults, *(d for d in node.kw_defaults if d is not None)]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            v = node.value
            hits = [v, *(v.elts if isinstance(v, (ast.Tuple, ast.List)) else [])]
        else:
            continue
        lines += [h.lineno for h in hits if named(h)]
    return lines


def test_no_module_outside_the_task_entries_switches_on_a_task_name():
    bad = [f"{p.relative_to(ROOT)}:{line}" for p in sorted(ROOT.rglob("*.py"))
           if str(p.relative_to(ROOT)) not in ENTRIES
           for line in _task_names_used_as_switches(ast.parse(p.read_text()), set(BUILTIN))]
    assert not bad, "a task's name switched on outside its entry:\n" + "\n".join(bad)


@pytest.mark.parametrize("code", [
    'if task == "classification": pass',
    'x = "regression" if data.task in ("regression",) else 1',
    'DEFAULT = {"classification": "cross_entropy"}',
    'loss = DEFAULT["regression"]',
    'def f(task="classification"): pass',
    'class A:\n    tasks: tuple = ("classification",)',
    'T = Literal["classification", "regression"]',
])
def test_the_switch_finder_finds_switches(code):
    assert _task_names_used_as_switches(ast.parse(code), set(BUILTIN))


def test_the_switch_finder_lets_entries_name_their_task():
    code = ('@DATASETS.register("digits", task="classification")\ndef f(): pass\n'
            '"""a docstring naming classification"""\n'
            'load(spec, "regression")\n')
    assert not _task_names_used_as_switches(ast.parse(code), set(BUILTIN))
