import json

import pytest

from modelopt.results import store as results
from modelopt.results.record import Record


def rec(cell, seed, acc, status="ok"):
    return Record(suite="s", cell_id=cell, seed=seed, status=status,
                  cell={"model": {"name": "mlp"}}, metrics={"accuracy": acc})


def test_append_read_and_latest_wins(tmp_path):
    results.append(tmp_path, rec("a", 0, 0.5, "failed"))
    results.append(tmp_path, rec("a", 0, 0.9))
    results.append(tmp_path, rec("b", 0, float("nan")))
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(x) for x in lines)
    got = results.read(tmp_path)
    assert [(r.cell_id, r.status) for r in got] == [("a", "ok"), ("b", "ok")]
    assert "accuracy" not in got[1].metrics  # a cell's NaN is absent: valid JSON, no figure
    df = results.load(tmp_path)
    assert list(df["accuracy"].fillna(-1)) == [0.9, -1]


def test_truncated_last_line_is_ignored_with_warning(tmp_path):
    results.append(tmp_path, rec("a", 0, 0.5))
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"suite": "s", "cell_id": "b", "se')
    with pytest.warns(UserWarning, match="truncated"):
        assert len(results.read(tmp_path)) == 1
    with pytest.warns(UserWarning, match=r"results.jsonl:2: cut a truncated last line \(34 bytes"):
        results.repair(tmp_path)  # before a run appends: said, not done silently
    results.append(tmp_path, rec("c", 0, 0.5))
    assert [r.cell_id for r in results.read(tmp_path)] == ["a", "c"]


def test_the_command_says_a_truncated_line_as_its_other_warnings(tmp_path):
    """`modelopt: warning: ...`, not Python's `path:line: UserWarning` with a source line."""
    import subprocess
    import sys

    results.append(tmp_path, rec("a", 0, 0.5))
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"suite": "s", "cell_id": "b", "se')
    r = subprocess.run([sys.executable, "-m", "modelopt", "export", str(tmp_path), "--out",
                        str(tmp_path / "x.csv")], capture_output=True, text=True)
    said = [line for line in r.stderr.splitlines() if "truncated" in line]
    assert said == [f"modelopt: warning: {tmp_path / 'results.jsonl'}:2: ignoring a truncated "
                    "last line (a run was killed while writing it)"], r.stderr
    assert "UserWarning" not in r.stderr


def test_malformed_line_names_file_and_line(tmp_path):
    results.append(tmp_path, rec("a", 0, 0.5))
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write("not json\n")
    results.append(tmp_path, rec("b", 0, 0.5))
    with pytest.raises(results.ResultsError, match=r"results.jsonl:2"):
        results.read(tmp_path)


def test_results_of_unregistered_models_and_datasets_report_without_their_code(tmp_path):
    """A plugin's dataset and model are names in the records only: report, export and
    compare read the files and never look them up."""
    from modelopt.results import compare, export
    from modelopt.results import page as pages

    for seed, acc in ((0, 0.8), (1, 0.7)):
        results.append(tmp_path, Record(
            suite="mine", cell_id="c1", seed=seed, status="ok", task="classification",
            cell={"dataset": {"name": "sines"}, "model": {"name": "my_pkg.nets:small_resnet"}},
            metrics={"accuracy": acc, "params": 10}))
    df = results.load(tmp_path)
    assert "sines" in pages.suite_page(df, "mine")
    assert export.github_action_benchmark(export.per_suite(df))["bigger"]
    assert not compare.compare(tmp_path, tmp_path).failed


def test_figures_belong_to_a_model_and_old_records_still_read(tmp_path):
    """A record keeps the slimmed model's figures as that model's (`models.slimmed.params`);
    a line written before, with them prefixed among the cell's (`slimmed_params`), reads into
    the same structure, and both load into the same table columns."""
    new = Record(suite="s", cell_id="c", seed=0, status="ok",
                 metrics={"accuracy": 0.9, "params": 100},
                 models={"slimmed": {"params": 40, "latency_ms_batch_p50": 1.5,
                                     "max_abs_diff": 1e-6}})
    old = {"suite": "s", "cell_id": "c", "seed": 1, "status": "ok",
           "metrics": {"accuracy": 0.8, "params": 100, "slimmed_params": 40,
                       "slimmed_max_abs_diff": 2e-6, "slimmed_compile_seconds": 3.0}}
    read = Record.model_validate(old, context={"from_file": True})
    assert read.metrics == {"accuracy": 0.8, "params": 100}
    assert read.models == {"slimmed": {"params": 40, "max_abs_diff": 2e-6,
                                       "compile_seconds": 3.0}}
    results.append(tmp_path, new)
    with open(results.results_path(tmp_path), "a") as f:
        f.write(json.dumps(old) + "\n")
    df = results.load(tmp_path).set_index("seed")
    assert list(df["slimmed_params"]) == [40, 40] and df.loc[1, "slimmed_compile_seconds"] == 3.0
    assert df.loc[0, "slimmed_max_abs_diff"] == 1e-6
    with pytest.raises(ValueError, match="unknown_kind' is no model"):
        Record.model_validate({**old, "models": {"unknown_kind": {}}})
    with pytest.raises(ValueError, match="models.slimmed: figure 'params' is 'many'"):
        Record.model_validate({**old, "models": {"slimmed": {"params": "many"}}},
                              context={"from_file": True})
