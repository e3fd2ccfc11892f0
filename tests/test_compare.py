import contextlib
import copy
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from modelopt.cli import main
from modelopt.results import compare, gate_page, latency, resample
from modelopt.results import metrics as M
from modelopt.results import store as results
from modelopt.run import measure, runner, timing
from modelopt.spec import outcomes
from modelopt.spec.suite import parse


def time_artifacts(items, plan, pairs, progress=None):
    """compare's timer, as the command builds it: the test plugins are the user's code."""
    return timing.time_saved(items, timing.UserCode({"modules": ["tests.plugins"], "path": []}),
                             plan, progress=progress, pairs=pairs)


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
    """A copy of the real baseline records with `change(record)` applied to each (a record
    it returns False for is left out). No saved models: latency cannot be re-timed."""
    out = tmp_path / "current"
    for rec in results.read(baseline):
        rec = copy.deepcopy(rec)
        if change(rec) is not False:
            results.append(out, rec)
    return out


def cli(*args, fresh: bool = False):
    """`modelopt compare ARGS`: its exit status and output, from the command's own `main` in
    this process (a process start costs ~2 s a call), or from a fresh process (`fresh`) where
    the test reads what a new interpreter prints once (warnings)."""
    args = [str(a) for a in args]
    if fresh:
        return subprocess.run([sys.executable, "-m", "modelopt", "compare", *args],
                              capture_output=True, text=True)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["compare", *args])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_same_results_compare_clean(baseline):
    cmp = compare.compare(baseline, baseline, timer=time_artifacts)
    assert not cmp.failed and len({r.cell_id for r in cmp.rows}) == 2
    # latency was re-timed side by side: the same models read the same
    assert {r.metric for r in cmp.rows} >= {"latency_ms_p50", "latency_ms_batch_p50"}
    r = cli(baseline, baseline, fresh=True)
    assert r.returncode == 0 and "RuntimeWarning" not in r.stderr


def test_a_run_whose_cells_all_failed_fails_the_gate(baseline, tmp_path):
    def broken(rec):
        rec.status, rec.error, rec.metrics = "failed", "RuntimeError: boom", {}

    r = cli(baseline, current_with(tmp_path, baseline, broken))
    assert r.returncode == 1 and "REGRESSION" in r.stdout and "boom" in r.stdout
    cmp = compare.compare(baseline, current_with(tmp_path / "b", baseline, broken), timer=time_artifacts)
    assert {r.metric for r in cmp.regressions} == {"status"} and len(cmp.regressions) == 2


def test_one_failed_seed_is_a_regression(baseline, tmp_path):
    first = results.read(baseline)[0]

    def diverged(rec):
        if rec.cell_id == first.cell_id and rec.seed == first.seed:
            rec.status, rec.metrics = "diverged", {}
            rec.error = "loss became NaN/inf at train step 7"

    cmp = compare.compare(baseline, current_with(tmp_path, baseline, diverged), timer=None)
    assert [(r.cell_id, r.metric) for r in cmp.regressions] == [(first.cell_id, "status")]
    assert "NaN" in cmp.regressions[0].note


def test_a_seed_ok_again_improves_and_a_new_seed_is_compared_with_nothing(baseline, tmp_path):
    """A seed the baseline never ran is no improvement (it was counted as one): only a seed
    that failed or diverged there and is ok now is."""
    first = results.read(baseline)[0]

    def seeds_0_1(rec):
        if rec.seed == 2:
            return False
        if rec.cell_id == first.cell_id and rec.seed == first.seed:
            rec.status, rec.metrics = "diverged", {}

    cmp = compare.compare(current_with(tmp_path, baseline, seeds_0_1), baseline, timer=None)
    assert [(r.cell_id, r.metric, r.note) for r in cmp.rows if r.verdict == "improved"] == [
        (first.cell_id, "status", f"seeds [{first.seed}] ok now")]
    # seed 2: no pair (seeds paired, or one seed's test samples where seeds cannot test)
    samples = results.read(baseline)[0].metrics["test_samples"]
    assert {r.n for r in cmp.rows if r.metric == "accuracy"} <= {1, 2, samples}


def test_missing_cell_fails_unless_allowed(baseline, tmp_path):
    first = results.read(baseline)[0].cell_id
    out = current_with(tmp_path, baseline, lambda rec: rec.cell_id != first)
    r = cli(baseline, out, "--no-retime")
    assert r.returncode == 1 and "Only in the baseline" in r.stdout
    assert "model=" in r.stdout  # named by the axes that differ, not by a hash
    assert cli(baseline, out, "--no-retime", "--allow-missing").returncode == 0
    # an extra cell in the current run, too
    assert cli(out, baseline, "--no-retime").returncode == 1


def test_accuracy_drop_and_param_change_are_flagged(baseline, tmp_path):
    first = results.read(baseline)[0].cell_id

    def worse(rec):
        if rec.cell_id == first:
            rec.metrics["accuracy"] -= 0.03

    cmp = compare.compare(baseline, current_with(tmp_path / "a", baseline, worse), timer=None)
    assert [(r.cell_id, r.metric) for r in cmp.regressions] == [(first, "accuracy")]

    def one_more_param(rec):
        rec.metrics["params"] += 1

    cmp = compare.compare(baseline, current_with(tmp_path / "p", baseline, one_more_param),
                          timer=None)
    assert [r.metric for r in cmp.regressions] == ["params"] * 2


@pytest.mark.parametrize("lost, kept, verdict", [
    (4, True, "noise"),  # 4 samples of the split: beyond the tolerance, and the split's luck
    (8, True, "regressed"),  # 8 lost, none gained: McNemar's one-sided p = 0.004
    (4, False, "regressed"),  # no outcomes kept: one seed, the tolerance alone decides
])
def test_one_seed_is_tested_on_the_test_samples(baseline, tmp_path, lost, kept, verdict):
    """One seed a side gives no spread over seeds: the runs' answers on the same test
    samples are paired instead, where the records kept them: accuracy by McNemar's test,
    the macro figures (F1, precision, recall) by swapping their choices at random."""
    first = results.read(baseline)[0].cell_id

    def seed_0(rec, worse=False):
        if rec.seed != 0:
            return False
        held = outcomes.Outcomes.read(rec.extra.pop(outcomes.KEY))
        c = held.choices
        chosen = c.predicted.copy()
        if worse and rec.cell_id == first:  # `lost` samples it got right, now a wrong class
            flip = np.flatnonzero(chosen == c.targets)[:lost]
            chosen[flip] = (c.targets[flip] + 1) % c.classes
            rec.metrics["accuracy"] = float((chosen == c.targets).mean())
            macro = resample.macro(outcomes.Choices(chosen, c.targets, c.classes))
            rec.metrics.update(macro)
        if kept:
            rec.extra.update(outcomes.kept(outcomes.PerSample(chosen, held.mean_of, held.decides),
                                           c.targets, c.classes))

    base = current_with(tmp_path / "b", baseline, seed_0)
    cur = current_with(tmp_path / "c", baseline, lambda rec: seed_0(rec, worse=True))
    cmp = compare.compare(base, cur, timer=None)
    rows = {r.metric: r for r in cmp.rows if r.cell_id == first}
    assert rows["accuracy"].verdict == verdict
    assert (f"{lost} right before and wrong now" in rows["accuracy"].note) == kept
    assert lost / results.read(base)[0].metrics["test_samples"] > 0.01  # past the tolerance
    assert rows["f1_macro"].change < -0.01  # past its tolerance too
    assert ("randomization" in rows["f1_macro"].note) == kept
    if kept:  # the comment says how it was tested, and the macro figures agree with it
        assert "McNemar on" in gate_page.markdown(cmp)
        assert {rows[m].verdict for m in resample.MACRO} == {verdict}, [
            (m, rows[m].p_value) for m in resample.MACRO]


def test_seeds_that_tie_by_chance_are_tested_on_their_samples(baseline, tmp_path):
    """Three trained seeds whose accuracies tie on each side (a small split makes that
    common): their differences are all alike, and a t-test over the seeds read that as
    p = 0 (regressed, a zero-width interval). Their answers differ, so the samples are the
    replicates, each sample's share of right answers averaged over the seeds: 10 lost and
    6 gained per seed, within noise."""
    first = results.read(baseline)[0].cell_id
    rights = min(int(r.metrics["accuracy"] * r.metrics["test_samples"] + 0.5)
                 for r in results.read(baseline) if r.cell_id == first)

    def tie(rec, lost=0, gained=0):
        if rec.cell_id != first:
            return False
        held = outcomes.Outcomes.read(rec.extra.pop(outcomes.KEY))
        c = held.choices
        chosen = c.predicted.copy()
        ok = np.flatnonzero(chosen == c.targets)
        chosen[ok[rights:]] = (c.targets[ok[rights:]] + 1) % c.classes  # as many right
        ok, wrong = np.flatnonzero(chosen == c.targets), np.flatnonzero(chosen != c.targets)
        chosen[ok[:lost]] = (c.targets[ok[:lost]] + 1) % c.classes
        chosen[wrong[:gained]] = c.targets[wrong[:gained]]
        rec.metrics["accuracy"] = float((chosen == c.targets).mean())
        rec.metrics.update(resample.macro(outcomes.Choices(chosen, c.targets, c.classes)))
        rec.extra.update(outcomes.kept(outcomes.PerSample(chosen, held.mean_of, held.decides),
                                       c.targets, c.classes))

    base = current_with(tmp_path / "b", baseline, tie)
    cur = current_with(tmp_path / "c", baseline, lambda rec: tie(rec, lost=10, gained=6))
    row = next(r for r in compare.compare(base, cur, timer=None).rows if r.metric == "accuracy")
    assert row.n == 300 and row.change < -0.01  # the samples; past the tolerance
    assert row.verdict == "noise" and "each averaged over 3 seeds" in row.note, row


def test_a_change_comes_with_its_interval_over_the_seeds():
    """Paired over seeds: the mean difference ± t(0.95, n-1) sd / sqrt(n) (the 90 % interval,
    whose end clears 0 exactly when the one-sided test is significant), in the change's
    units (points for accuracy), shown beside it; none with one seed, none for a count."""
    acc = M.TABLE["accuracy"]
    v, change, p, ci = compare.verdict(acc, [0.90, 0.92, 0.91], [0.87, 0.90, 0.86])
    assert change == pytest.approx(-0.1 / 3)
    assert ci == pytest.approx((-0.1 / 3 - 0.025752, -0.1 / 3 + 0.025752), abs=1e-5)
    assert v == "regressed" and p < 0.05  # worse on every seed, beyond the tolerance
    row = compare.Row("c", "accuracy", 0.91, 0.877, change, v, p, ci, n=3)
    assert gate_page._fmt_change(row, acc) == "-3.33 pt [-5.91, -0.76]"
    # one seed better, two worse: the interval crosses 0, within noise
    v, _, p, ci = compare.verdict(acc, [0.90, 0.92, 0.91], [0.87, 0.93, 0.86])
    assert v == "noise" and p > 0.05 and ci[0] < 0 < ci[1]
    assert compare.verdict(acc, [0.9], [0.8])[3] is None
    assert compare.verdict(M.TABLE["params"], [10, 10], [11, 11])[3] is None
    # a step count falls by 100 % at most: two seeds' wide interval is cut there, not -460 %
    v, change, p, ci = compare.verdict(M.TABLE["steps_to_target"], [100, 400], [10, 20])
    assert ci[0] == -1.0 and ci[1] > 0 and v == "ok" and change == pytest.approx(-0.94)


def test_two_seeds_that_agree_on_a_large_drop_regress_and_the_page_says_what_two_can_tell():
    """-26 and -34 points: a two-sided test at one degree of freedom called this noise (p
    0.079), though one seed alone is judged by the tolerance and would have failed."""
    acc = M.TABLE["accuracy"]
    v, change, p, ci = compare.verdict(acc, [0.7375, 0.8125], [0.475, 0.475])
    assert v == "regressed" and p < 0.05 and ci[1] < 0
    # seeds that disagree as much as they move: within noise
    assert compare.verdict(acc, [0.80, 0.80], [0.70, 0.78])[0] == "noise"
    row = compare.Row("c", "accuracy", 0.775, 0.475, change, v, p, ci, n=2)
    text = gate_page.markdown(compare.Comparison([row], [], [], {}, False, "not gated", 1, {}, ""))
    assert "one degree of freedom" in text and "90 % interval" in text


SPEED = {0: 1000.0, 1: 1060.0, 2: 970.0}  # samples/s per seed: a spread, set by hand


def test_training_speed_is_judged_per_machine_speed(baseline, tmp_path):
    """The decision rule on figures set by hand (the benchmark measures it on real reruns)."""
    first = results.read(baseline)[0].cell_id

    def with_speed(factor: float, probe: float, only_first: bool = False):
        def change(rec):
            scale = factor if rec.cell_id == first or not only_first else 1.0
            # over enough measured work to be judged (compare.MIN_TRAIN_S)
            rec.metrics.update(train_samples_s=SPEED[rec.seed] * scale,
                               machine_probe_ms=probe, train_seconds=5.0)
        return change

    base = current_with(tmp_path / "b", baseline, with_speed(1.0, 20.0))
    slower_code = current_with(tmp_path / "c", baseline, with_speed(0.75, 20.0, True))
    cmp = compare.compare(base, slower_code, timer=time_artifacts)
    assert [(r.cell_id, r.metric) for r in cmp.regressions] == [(first, "train_samples_s")]
    # every cell's probe took longer by as much: the machine was slower, not the code
    slower_machine = current_with(tmp_path / "m", baseline, with_speed(0.75, 20.0 / 0.75))
    assert not compare.compare(base, slower_machine, timer=time_artifacts).failed
    # within the tolerance (15 %): no regression
    assert not compare.compare(base, current_with(tmp_path / "t", baseline,
                                                  with_speed(0.9, 20.0)), timer=time_artifacts).failed


def test_latency_slowdown_of_a_saved_model_is_flagged_on_re_timing(baseline, tmp_path):
    """One cell's saved models made 1.3x slower for real: re-timed side by side with the
    baseline's, it regresses; the other cell does not."""
    import shutil

    cur = tmp_path / "cur"
    shutil.copytree(baseline, cur)
    first = results.read(baseline)[0].cell_id
    (cur / "results.jsonl").unlink()
    for rec in results.read(baseline):
        if rec.cell_id == first:  # rebuilt with a deploy format of the test's plugins
            rec.cell["deploy"] = {"name": "test_slowed", "factor": 1.3}
        results.append(cur, rec)
    cmp = compare.compare(baseline, cur, timer=time_artifacts)
    flagged = {(r.cell_id, r.metric) for r in cmp.regressions}
    assert flagged == {(first, "latency_ms_p50"), (first, "latency_ms_batch_p50")}
    row = next(r for r in cmp.rows if r.metric == "latency_ms_batch_p50" and r.cell_id == first)
    # at least the 30 % spun (the wrapper adds its own call on a ~20 µs model)
    assert row.change > 0.2 and row.ci[0] > 0 and 3 <= row.n <= latency.Plan().max_processes
    r = cli(baseline, cur)
    assert r.returncode == 1 and "re-timed side by side" in r.stdout
    # an interval needs replicates: fewer than 3 timing processes is refused
    assert cli(baseline, cur, "--timing-processes", "2").returncode == 2


def test_without_saved_models_latency_is_not_gated(baseline, tmp_path):
    def slower(rec):
        rec.metrics["latency_ms_p50"] = 10.0  # whatever a separate run measured

    cmp = compare.compare(baseline, current_with(tmp_path, baseline, slower), timer=time_artifacts)
    assert not cmp.failed and not any(r.metric.startswith("latency") for r in cmp.rows)
    assert "not gated" in gate_page.markdown(cmp) and "with their saved models" in cmp.latency
    assert "--no-retime" in compare.compare(baseline, baseline, timer=None).latency


def test_thresholds_from_the_command_line(baseline, tmp_path):
    first = results.read(baseline)[0].cell_id

    def worse(rec):
        if rec.cell_id == first:
            rec.metrics["accuracy"] -= 0.03

    cur = current_with(tmp_path, baseline, worse)
    assert cli(baseline, cur, "--no-retime").returncode == 1
    assert cli(baseline, cur, "--no-retime", "--fail-on", "accuracy:5").returncode == 0
    assert cli(baseline, cur, "--no-retime", "--fail-on", "accuracy:1%").returncode == 1
    assert cli(baseline, cur, "--fail-on", "nonsense").returncode == 2
    # latency is a ratio of re-timed models: a bare number would be misread
    assert cli(baseline, cur, "--fail-on", "latency_ms_p50:0.5").returncode == 2
    assert cli(baseline, cur, "--fail-on", "train_seconds:5%").returncode == 2  # not gated
    # the suites' own tolerance, read from beside the results whichever way they are named;
    # the current suite alone cannot loosen its gate (the baseline's has the default)
    import shutil

    meta = json.loads((baseline / "suite.json").read_text())
    (cur / "suite.json").write_text(json.dumps({**meta, "thresholds": {"accuracy": "5"}}))
    assert cli(baseline, cur, "--no-retime").returncode == 1
    base = tmp_path / "base"
    shutil.copytree(baseline, base, ignore=shutil.ignore_patterns("models", "dense"))
    (base / "suite.json").write_text(json.dumps({**meta, "thresholds": {"accuracy": "5"}}))
    assert cli(base, cur, "--no-retime").returncode == 0
    assert cli(base / "results.jsonl", cur / "results.jsonl").returncode == 0


def test_corrupt_baseline_exits_2_with_file_and_line(baseline, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    lines = (baseline / "results.jsonl").read_text().splitlines()
    (bad / "results.jsonl").write_text(lines[0] + "\n{oops\n" + lines[1] + "\n")
    r = cli(bad, baseline)
    assert r.returncode == 2 and "results.jsonl:2" in r.stderr
    # with --out (a pull request's comment), the reason is written there too
    r = cli(tmp_path / "none", baseline, "--out", tmp_path / "c.md")
    assert r.returncode == 2 and "could not compare" in (tmp_path / "c.md").read_text()


def test_pytest_benchmark_json_input(baseline, tmp_path):
    benches = [{"name": f"test_cell[{r.cell_id}]", "group": "cmp: x",
                "extra_info": {"cell_id": r.cell_id, "seed": r.seed, "status": "ok",
                               **r.metrics}, "stats": {}}
               for r in results.read(baseline)]
    p = tmp_path / "b.json"
    p.write_text(json.dumps({"benchmarks": benches}))
    assert not compare.compare(p, baseline, timer=time_artifacts).regressions
    # the figures and thresholds the run declared travel in the file (benchmarks/conftest.py)
    worse = copy.deepcopy(benches)
    for b in worse:
        b["extra_info"]["toy_figure"] = b["extra_info"]["accuracy"] - 0.5
    block = {"suite": "cmp", "tasks": {}, "thresholds": {"toy_figure": "10%"}, "metrics": [
        {"name": "toy_figure", "title": "toy", "fmt": "g3", "higher_is_better": True,
         "kind": "relative", "tolerance": 0.01, "unit": "", "timing": False}]}
    for b in benches:
        b["extra_info"]["toy_figure"] = b["extra_info"]["accuracy"]
    (tmp_path / "base.json").write_text(json.dumps({"benchmarks": benches, "modelopt": block}))
    (tmp_path / "head.json").write_text(json.dumps({"benchmarks": worse, "modelopt": block}))
    r = cli(tmp_path / "base.json", tmp_path / "head.json")
    assert r.returncode == 1 and "toy_figure" in r.stdout, r.stdout + r.stderr
    r = cli(tmp_path / "base.json", tmp_path / "head.json", "--fail-on", "toy_figure:90%")
    assert r.returncode == 0, r.stdout + r.stderr
    # a block from elsewhere whose thresholds are not a mapping: exit 2, said
    (tmp_path / "odd.json").write_text(json.dumps(
        {"benchmarks": benches, "modelopt": {**block, "thresholds": ["toy_figure"]}}))
    r = cli(tmp_path / "base.json", tmp_path / "odd.json")
    assert r.returncode == 2 and "thresholds are not a mapping" in r.stderr, r.stderr
    # its benchmarks are checked as results.jsonl's records are: the file and benchmark named
    for change, said in ((lambda e: e.update(accuracy=float("nan")), "accuracy"),
                         (lambda e: e.update(cell_id="../x"), "cell_id")):
        odd = copy.deepcopy(benches)
        change(odd[1]["extra_info"])
        (tmp_path / "odd.json").write_text(json.dumps({"benchmarks": odd, "modelopt": block}))
        r = cli(tmp_path / "base.json", tmp_path / "odd.json")
        assert r.returncode == 2 and "odd.json: benchmark 1" in r.stderr and said in r.stderr, \
            r.stderr


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
    # the machine's speed is no series of the model's
    assert not any(e["name"].endswith("machine_probe_ms") for e in bigger + smaller)
    # exported beside another suite, every series keeps its name: the dashboard's key
    other = tmp_path / "other"
    assert not runner.run(parse(SUITE.replace("name: cmp", "name: other").replace(
        "model: [linear, {name: mlp, hidden: 16}]", "model: [linear]\n  optimizer.lr: [0.01, 0.02]").replace(
        "seeds: [0, 1, 2]", "seeds: [0]").replace("steps: 60", "steps: 5")), other,
        jobs=2).failed
    both = tmp_path / "both"
    r = subprocess.run([sys.executable, "-m", "modelopt", "export", str(baseline), str(other),
                        "--out", str(both)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    names = {e["name"] for e in json.loads((both / "bigger_is_better.json").read_text())}
    assert {e["name"] for e in bigger} <= names
    assert any(n.startswith("other [optimizer=") for n in names) and "nan" not in str(names)
    one_seed = [e for e in json.loads((both / "bigger_is_better.json").read_text())
                if e["name"].startswith("other [")]
    assert one_seed and all("range" not in e and "n=1 seed;" in e["extra"] for e in one_seed)


def test_a_baseline_from_another_cpu_is_flagged(baseline, tmp_path):
    """Records carry the CPU and the int8-relevant instruction sets; compare says when the
    two sides were made on different ones."""
    rec = results.read(baseline)[0]
    assert "cpu_flags" in rec.env and rec.env["cpu"]
    assert rec.env["cpu_flags_checked"] == " ".join(measure.CPU_FLAGS)
    assert compare.compare(baseline, baseline, timer=None).machines == ""

    def elsewhere(rec):
        rec.env = {**rec.env, "cpu": "AMD EPYC 7B13", "cpu_flags": "avx2"}

    cmp = compare.compare(baseline, current_with(tmp_path, baseline, elsewhere), timer=None)
    assert "another CPU" in cmp.machines and "AMD EPYC 7B13 (avx2)" in cmp.machines
    assert cmp.machines in gate_page.markdown(cmp)

    def other_stack(rec):
        rec.env = {**rec.env, "torch": "2.9.0+cpu", "cpu_count": 16}

    cmp = compare.compare(baseline, current_with(tmp_path / "s", baseline, other_stack),
                          timer=None)
    assert "another CPU" not in cmp.machines
    assert f"torch {rec.env['torch']} → 2.9.0+cpu" in cmp.machines
    assert f"cores {rec.env['cpu_count']} → 16" in cmp.machines


def test_flags_a_baseline_did_not_look_for_are_unknown_not_absent(baseline, tmp_path):
    """Records name the flags they looked for; a baseline written when the list was shorter
    (no cpu_flags_checked) is the same CPU unless a flag both looked for differs."""
    def on(cpu: str, flags: str, checked: str | None):
        def change(rec):
            rec.env = {k: v for k, v in rec.env.items() if k != "cpu_flags_checked"}
            rec.env.update(cpu=cpu, cpu_flags=flags)
            if checked:
                rec.env["cpu_flags_checked"] = checked
        return current_with(tmp_path / f"{cpu}-{flags}-{checked}", baseline, change)

    def machines(a, b) -> str:
        return compare.compare(a, b, timer=None).machines

    every = " ".join(measure.CPU_FLAGS)
    now = "avx2 avx512f avx512_vnni amx_int8 avx512_bf16 amx_bf16 avx512_fp16"
    earlier = on("Xeon", "avx2 avx512f avx512_vnni amx_int8 amx_bf16", None)
    recent = on("Xeon", now, every)
    assert machines(earlier, recent) == ""
    # a flag both sides looked for tells them apart: amx_int8 against the earlier list, and
    # one the list gained (avx512_bf16) between two recent records
    no_amx = on("Xeon", "avx2 avx512f avx512_vnni avx512_bf16", every)
    assert "another CPU" in machines(earlier, no_amx) and "another CPU" in machines(recent, no_amx)
    no_bf16 = on("Xeon", now.replace(" avx512_bf16", ""), every)
    assert "avx512_bf16" in machines(recent, no_bf16)
    # named by the flags compared alone: the earlier list knows nothing of avx512_fp16
    assert "avx512_fp16" not in machines(earlier, no_amx)

    def unflagged(rec):  # written before records had flags at all
        rec.env = {k: v for k, v in rec.env.items() if not k.startswith("cpu_flags")}
        rec.env["cpu"] = "Xeon"
    assert machines(current_with(tmp_path / "unflagged", baseline, unflagged), recent) == ""


@pytest.mark.parametrize("thresholds, error", [
    ("{acuracy: 0.5}", "thresholds.acuracy: threshold 'acuracy:0.5': 'acuracy' is not a figure "
                       "the gate judges (did you mean 'accuracy'?)"),
    ("{accuracy: abc}", "thresholds.accuracy: threshold 'accuracy:abc': expected METRIC:NUMBER"),
    ("{latency_ms_p50: 0.5}", "thresholds.latency_ms_p50: threshold 'latency_ms_p50:0.5': "
                              "latency is judged as a ratio"),
    ("{accuracy: 0.00005, latency_ms_p50: 15%}", None),
])
def test_suite_thresholds_are_checked_before_anything_runs(tmp_path, thresholds, error):
    path = tmp_path / "t.yaml"
    path.write_text(SUITE + f"thresholds: {thresholds}\n")
    r = subprocess.run([sys.executable, "-m", "modelopt", "plan", str(path), "--out",
                        str(tmp_path / "out")], capture_output=True, text=True)
    if error is None:  # a YAML number, read as the gate's text (not as 5e-05)
        assert r.returncode == 0, r.stderr
        from modelopt.spec.suite import load

        assert load(path).spec.thresholds == {"accuracy": "0.00005", "latency_ms_p50": "15%"}
    else:
        assert r.returncode == 2 and error in r.stderr, r.stderr
        assert not (tmp_path / "out").exists()


def test_the_stricter_suites_tolerance_judges_and_a_difference_is_said():
    """A change can tighten its gate, never loosen it; a bad tolerance names whose it is."""
    rules, note = compare.tolerances({"accuracy": "1"}, {"accuracy": "5", "f1_macro": "0.5",
                                                         "r2": "0.5"}, [])
    assert rules["accuracy"].tolerance == 0.01 and rules["f1_macro"].tolerance == 0.005
    assert rules["r2"].tolerance == M.TABLE["r2"].tolerance  # 0.5 is looser than the default
    assert "accuracy: baseline 1, current 5, judged by the baseline's" in note
    assert "f1_macro: baseline default, current 0.5, judged by the current's" in note
    rules, _ = compare.tolerances({"accuracy": "1"}, {"accuracy": "0.5%"}, [])
    assert rules["accuracy"].kind == "points"  # other kinds: the baseline's
    rules, note = compare.tolerances({"accuracy": "1"}, {"accuracy": "5"}, ["accuracy:2"])
    assert rules["accuracy"].tolerance == 0.02 and note == ""  # --fail-on: both sides'
    with pytest.raises(compare.CompareError, match=r"the baseline's suite: threshold "
                                                   r"'accuracy:abc'"):
        compare.tolerances({"accuracy": "abc"}, {}, [])
    # a figure an older baseline named that this gate no longer judges: left out, said
    rules, note = compare.tolerances({"retired_figure": "5"}, {}, [])
    assert "retired_figure" not in rules and "retired_figure: the baseline's suite sets" in note


def test_a_clear_drop_within_its_tolerance_is_shown_and_passes(baseline, tmp_path):
    first = results.read(baseline)[0].cell_id

    def worse(rec):
        if rec.cell_id == first:  # 3 points down on every seed, give or take 0.1
            rec.metrics["accuracy"] -= 0.03 + 0.001 * (rec.seed - 1)

    cur = current_with(tmp_path, baseline, worse)
    r = cli(baseline, cur, "--no-retime", "--fail-on", "accuracy:5")
    assert r.returncode == 0, r.stdout
    assert "↘ worse, within tolerance" in r.stdout and "1 worse within tolerance" in r.stderr
    assert cli(baseline, cur, "--no-retime", "--fail-on", "accuracy:2").returncode == 1


def test_allow_missing_never_covers_a_cell_the_current_suite_lists_and_did_not_run(
        baseline, tmp_path):
    first = results.read(baseline)[0].cell_id
    out = current_with(tmp_path, baseline, lambda rec: rec.cell_id != first)
    (out / "suite.json").write_text((baseline / "suite.json").read_text())  # it lists `first`
    r = cli(baseline, out, "--no-retime", "--allow-missing")
    assert r.returncode == 1 and "not run: the current run's suite lists this cell" in r.stdout
    assert "Only in the baseline" not in r.stdout
    assert "0 regressed" in r.stderr and "1 not run, though the current suite lists them" in r.stderr
    # a shard's run lists the suite's cells and holds a share of them: what it did not run
    # is another shard's, allowed as a cell on one side only
    meta = json.loads((baseline / "suite.json").read_text())
    (out / "suite.json").write_text(json.dumps({**meta, "shard": "1/2"}))
    r = cli(baseline, out, "--no-retime", "--allow-missing")
    assert r.returncode == 0 and "Only in the baseline (allowed" in r.stdout, r.stdout


def test_a_cell_whose_code_differs_is_judged_on_each_runs_own_timing(baseline, tmp_path):
    """Re-timing would rebuild both models with this checkout's code; a forward made 40x
    slower shows in the runs' own timings, and the gate judges those."""
    import shutil

    first = results.read(baseline)[0].cell_id
    sides = {}
    for side, slower in (("base", 1.0), ("cur", 40.0)):
        d = tmp_path / side
        shutil.copytree(baseline, d)
        (d / "results.jsonl").unlink()
        for rec in results.read(baseline):
            if rec.cell_id == first:
                rec.extra["code"] = f"code-of-{side}"
            results.append(d, rec)
        doc = json.loads((baseline / "timing.json").read_text())
        for row in doc["rows"]:
            if row["cell_id"] == first:
                for k in ("ms_batch1", "p90_ms_batch1", "ms_batch"):
                    row[k] *= slower
        (d / "timing.json").write_text(json.dumps(doc))
        sides[side] = d
    cmp = compare.compare(sides["base"], sides["cur"], timer=time_artifacts)
    own = [r for r in cmp.rows if "each run's own timing" in r.note]
    assert {r.cell_id for r in own} == {first} and own
    assert {(r.metric, r.verdict) for r in own} >= {("latency_ms_p50", "regressed")}
    assert all(r.change > 10 for r in own if r.metric.startswith("latency_ms"))
    # the other cell is still re-timed side by side
    assert any(r.note == "re-timed side by side" and r.cell_id != first for r in cmp.rows)
    assert "judged on each run's own timing" in cmp.latency
    # without a timing of its own on one side, the cell is not gated on latency, and the
    # summary line says so
    (sides["cur"] / "timing.json").unlink()
    cmp = compare.compare(sides["base"], sides["cur"], timer=time_artifacts)
    assert first in cmp.not_retimed and "latency of 1 cell(s) not gated" in gate_page.summary(cmp)


def test_export_says_what_it_leaves_out(baseline, tmp_path):
    """A cell with no seed ok exports nothing, and saved models trained again since their
    timing export no latency: both are said, not dropped unseen."""
    import os
    import shutil

    first = results.read(baseline)[0].cell_id
    cur = tmp_path / "cur"
    shutil.copytree(baseline, cur)
    (cur / "results.jsonl").unlink()
    for rec in results.read(baseline):
        if rec.cell_id == first:
            rec.status, rec.error, rec.metrics = "diverged", "loss nan", {"diverged_at_step": 3}
        results.append(cur, rec)
    model = next((cur / "models").glob("*.pt"))
    os.utime(model, (model.stat().st_mtime + 60,) * 2)  # saved after its timing
    r = subprocess.run([sys.executable, "-m", "modelopt", "export", str(cur), "--out",
                        str(tmp_path / "ex")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "1 cell(s) with no seed ok export nothing" in r.stderr and "diverged 3" in r.stderr
    assert "not timed since they were saved again" in r.stderr
