import copy
import json
import subprocess
import sys

import pytest

from modelopt import compare, results, runner
from modelopt.suite import parse

SUITE = """
name: cmp
seeds: [0, 1, 2]
defaults:
  dataset: {name: synthetic, n_samples: 1200, n_features: 8, n_classes: 3}
  optimizer: {name: adam, lr: 0.01}
  train: {steps: 60, batch_size: 64, eval_every: 30}
matrix:
  model: [linear, {name: mlp, hidden: 16}]
"""


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline")
    assert not runner.run(parse(SUITE), out, jobs=2).failed
    return out


def current_with(tmp_path, baseline, change):
    """A copy of the real baseline records with `change(record)` applied to each."""
    out = tmp_path / "current"
    for rec in results.read(baseline):
        rec = copy.deepcopy(rec)
        change(rec)
        if rec is not None:
            results.append(out, rec)
    return out


def cli(*args):
    return subprocess.run([sys.executable, "-m", "modelopt", "compare", *map(str, args)],
                          capture_output=True, text=True)


def test_same_results_compare_clean(baseline):
    cmp = compare.compare(baseline, baseline)
    assert not cmp.regressions and len({r.cell_id for r in cmp.rows}) == 2
    assert cli(baseline, baseline).returncode == 0


def test_latency_slowdown_is_flagged_and_jitter_is_not(baseline, tmp_path):
    cur = current_with(tmp_path, baseline, slower(1.3))
    r = cli(baseline, cur)
    assert r.returncode == 1 and "latency_ms_p50" in r.stdout and "regressed" in r.stdout
    jitter = current_with(tmp_path / "j", baseline, slower(1.02))
    assert cli(baseline, jitter).returncode == 0


def slower(factor):
    """What a slower model looks like in a result: every timed block and the median."""
    def change(rec):
        rec["metrics"]["latency_ms_p50"] *= factor
        rec["extra"]["latency_blocks_ms"] = [t * factor for t in rec["extra"]["latency_blocks_ms"]]
    return change


def test_accuracy_drop_and_param_change_are_flagged(baseline, tmp_path):
    def worse(rec):
        rec["metrics"]["accuracy"] -= 0.03

    cmp = compare.compare(baseline, current_with(tmp_path / "a", baseline, worse))
    assert {r.metric for r in cmp.regressions} == {"accuracy"}

    def one_more_param(rec):
        rec["metrics"]["params"] += 1

    cmp = compare.compare(baseline, current_with(tmp_path / "p", baseline, one_more_param))
    assert [r.metric for r in cmp.regressions] == ["params"] * 2


def test_thresholds_from_the_command_line(baseline, tmp_path):
    cur = current_with(tmp_path, baseline, slower(1.3))
    assert cli(baseline, cur, "--fail-on", "latency_ms_p50:50%").returncode == 0
    bad = cli(baseline, cur, "--fail-on", "latency_ms_p50:10.5")
    assert bad.returncode == 0  # an absolute 10.5 ms: far above the change
    assert cli(baseline, cur, "--fail-on", "nonsense").returncode == 2


def test_missing_cell_is_reported(baseline, tmp_path):
    first = results.read(baseline)[0]["cell_id"]
    out = tmp_path / "cur"
    for rec in results.read(baseline):
        if rec["cell_id"] != first:
            results.append(out, rec)
    r = cli(baseline, out)
    assert "Only in the baseline" in r.stdout and first[:8] in r.stdout


def test_corrupt_baseline_exits_2_with_file_and_line(baseline, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    lines = (baseline / "results.jsonl").read_text().splitlines()
    (bad / "results.jsonl").write_text(lines[0] + "\n{oops\n" + lines[1] + "\n")
    r = cli(bad, baseline)
    assert r.returncode == 2 and "results.jsonl:2" in r.stderr


def test_pytest_benchmark_json_input(baseline, tmp_path):
    benches = [{"name": f"test_cell[{r['cell_id']}]", "group": "cmp: x",
                "extra_info": {"cell_id": r["cell_id"], "seed": r["seed"], "status": "ok",
                               **r["metrics"]}, "stats": {}}
               for r in results.read(baseline)]
    p = tmp_path / "b.json"
    p.write_text(json.dumps({"benchmarks": benches}))
    assert not compare.compare(p, baseline).regressions


def test_export_github_action_benchmark(baseline, tmp_path):
    r = subprocess.run([sys.executable, "-m", "modelopt", "export", str(baseline), "--out",
                        str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    bigger = json.loads((tmp_path / "bigger_is_better.json").read_text())
    smaller = json.loads((tmp_path / "smaller_is_better.json").read_text())
    assert any("accuracy" in e["name"] for e in bigger)
    assert any("latency_ms_p50" in e["name"] for e in smaller)
    for e in bigger + smaller:
        assert set(e) == {"name", "unit", "value", "range", "extra"}
        assert isinstance(e["value"], float)
