import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelopt.results import latency
from modelopt.results import store as results
from modelopt.run import merge, runner
from modelopt.spec.suite import load, parse

REQUIRED_METRICS = ["accuracy", "accuracy_best_val", "f1_macro", "loss", "params",
                    "params_nonzero", "size_bytes", "flops", "train_seconds",
                    "train_samples_s", "machine_probe_ms", "peak_rss_mb"]
TIMED = ["latency_ms_p50", "latency_ms_p90", "latency_ms_batch_p50", "latency_processes"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "modelopt", *args], capture_output=True,
                          text=True)


def test_run_writes_results_in_the_documented_format(tiny_suite_file, tmp_path):
    out = tmp_path / "out"
    r = run_cli("run", str(tiny_suite_file), "--out", str(out), "--jobs", "2")
    assert r.returncode == 0, r.stderr
    # no terminal (a CI log): a line per finished cell, then this run's and the file's totals
    assert "[1/2] ok " in r.stderr and "[2/2] ok " in r.stderr
    # each cell named by the axes that vary, as the report names it
    assert "ok model=linear (" in r.stderr and "ok model=mlp (" in r.stderr
    assert "this run 2 ok; in all 2 ok of 2" in r.stderr
    # how precise the speed-ups came out, said at the end (the last progress line said
    # "one more", not where it stopped)
    stopped = json.loads((out / "timing.json").read_text())["stopped"]
    assert stopped and f"timing: {stopped}" in r.stderr
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 2
    for rec in recs:
        assert set(rec) >= {"suite", "cell_id", "seed", "cell", "status", "error", "metrics",
                            "curves", "env", "started_at", "duration_s"}
        assert rec["status"] == "ok" and rec["error"] is None and rec["suite"] == "tiny"
        for m in REQUIRED_METRICS:
            assert isinstance(rec["metrics"][m], (int, float)), m
        assert 0 <= rec["metrics"]["accuracy"] <= 1
        assert [c["step"] for c in rec["curves"]] == [10, 20, 30]
        assert set(rec["curves"][0]) >= {"step", "train_loss", "val_score"}
        assert set(rec["env"]) >= {"torch", "device", "threads", "cpu", "git_commit"}
        assert rec["task"] == "classification"
    # the timing stage: every ok cell x seed's model, timed side by side, in the loaded table
    df = results.load(out)
    for m in TIMED:
        assert (df[m] > 0).all(), m
    assert (df["latency_processes"] == 3).all()
    # report from the same directory
    rep = run_cli("report", str(out), "--out", str(tmp_path / "rep"), "--csv")
    assert rep.returncode == 0, rep.stderr
    page = (tmp_path / "rep" / "tiny.md").read_text()
    assert "| model" in page and "linear" in page and "mlp" in page
    assert (tmp_path / "rep" / "tiny_accuracy_latency.png").stat().st_size > 5000
    assert (tmp_path / "rep" / "tiny.csv").exists()


def test_same_suite_twice_gives_identical_numbers(tiny_suite_file, tmp_path):
    suite = load(tiny_suite_file)
    for d in ("a", "b"):
        assert not runner.run(suite, tmp_path / d, jobs=1).failed
    a, b = (sorted(results.read(tmp_path / d), key=lambda r: r.cell_id) for d in ("a", "b"))
    for ra, rb in zip(a, b):
        for k in ("accuracy", "loss", "f1_macro", "accuracy_best_val", "params", "flops"):
            assert ra.metrics[k] == rb.metrics[k]
        assert [c["train_loss"] for c in ra.curves] == [c["train_loss"] for c in rb.curves]


FAULTS = """
name: faults
seeds: [0]
timeout_s: 120
defaults:
  dataset: {name: synthetic, n_samples: 200, n_features: 6, n_classes: 3}
  optimizer: {name: sgd, lr: 0.1}
  train: {steps: 20, batch_size: 32, eval_every: 10}
matrix:
  model: [linear, {name: test_crash, how: raise}, {name: test_crash, how: exit},
          {name: test_crash, how: sleep}]
include:
  - {model: {name: mlp, hidden: 4}, optimizer: {name: sgd, lr: 1.0e+30}}
  - {model: {name: test_crash, how: sleep}, train: {timeout_s: 4}}
exclude: []
"""


EXPECTED = """
name: expected
seeds: [0]
defaults:
  dataset: {name: synthetic, n_samples: 200, n_features: 6, n_classes: 3}
  optimizer: {name: sgd, lr: 0.1}
  train: {steps: 10, batch_size: 32, eval_every: 10}
matrix:
  model: [linear, {name: test_crash, how: raise}]
expect_failure:
  - cell: {model: {name: test_crash}}
    reason: the test model raises by design
  - cell: {model: linear}
    reason: a stale entry
"""


def test_a_failure_the_suite_expects_is_recorded_and_does_not_fail_the_run(tmp_path):
    p, out = tmp_path / "expected.yaml", tmp_path / "o"
    p.write_text(EXPECTED)
    r = run_cli("run", str(p), "--out", str(out), "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert "1 failed (expected), 1 ok" in r.stderr and "failed (expected): " in r.stderr
    assert "expects to fail (expect_failure) finished ok" in r.stderr  # the stale entry
    statuses = {x.cell["model"]["name"]: x.status for x in results.read(out)}
    assert statuses == {"linear": "ok", "test_crash": "failed"}  # recorded as it happened
    assert run_cli("report", str(out), "--out", str(tmp_path / "r")).returncode == 0
    page = (tmp_path / "r" / "expected.md").read_text()
    assert "expected, because" in page and "the test model raises by design" in page
    # run again: only the failing cell runs, saving nothing, so the latency stands
    timed = (out / "timing.json").read_bytes()
    r = run_cli("run", str(p), "--out", str(out), "--jobs", "2")
    assert r.returncode == 0 and "this run 1 failed (expected)" in r.stderr, r.stderr
    assert "in all 1 failed (expected), 1 ok of 2" in r.stderr, r.stderr  # was "1 failed"
    assert "nothing new to time" in r.stderr and (out / "timing.json").read_bytes() == timed
    # (without the entries a failure fails the run: test_faulty_cells_get_their_status...)


def test_faulty_cells_get_their_status_and_the_run_goes_on(tmp_path):
    p = tmp_path / "faults.yaml"
    p.write_text(FAULTS)
    r = run_cli("run", str(p), "--out", str(tmp_path / "o"), "--jobs", "2")
    assert r.returncode == 1
    recs = results.read(tmp_path / "o")
    by = {(x.cell["model"]["name"], x.cell["model"].get("how"),
           x.cell["optimizer"]["lr"]): x for x in recs}
    assert by[("linear", None, 0.1)].status == "ok"
    assert by[("mlp", None, 1e30)].status == "diverged"
    assert "NaN" in by[("mlp", None, 1e30)].error
    raised = by[("test_crash", "raise", 0.1)]
    assert raised.status == "failed" and "RuntimeError: deliberate failure" in raised.error
    assert "in forward" in raised.error and "File " in raised.error  # traceback tail
    exited = by[("test_crash", "exit", 0.1)]
    assert exited.status == "failed" and "exited with code 3" in exited.error
    assert by[("test_crash", "sleep", 0.1)].status == "timeout"
    assert "1 ok" in r.stderr and "1 timeout" in r.stderr


def test_resume_skips_ok_cells_and_refuses_a_changed_suite(tiny_suite_file, tmp_path):
    suite = load(tiny_suite_file)
    out = tmp_path / "o"
    runner.run(suite, out, jobs=1)
    timing = out / latency.TIMING_FILE
    first = timing.read_bytes()
    planned = []
    summary = runner.run(suite, out, jobs=1,
                         on_plan=lambda todo, done: planned.append((todo, done)))
    assert planned == [(0, 2)]
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
    # nothing trained: the models keep the latency they were timed with
    assert summary.timing_kept and timing.read_bytes() == first
    # the same cells written in another order: another hash, the same suite (it was refused)
    swapped = parse(tiny_suite_file.read_text().replace(
        "model: [linear, {name: mlp, hidden: 16}]", "model: [{name: mlp, hidden: 16}, linear]"))
    assert swapped.content_hash != suite.content_hash
    assert runner.refusal(out, results.read_meta(out), swapped) is None
    keys = {(r.cell_id, r.seed) for r in results.read(out)}
    model = next((out / latency.MODELS_DIR).glob("*.pt"))
    os.utime(model, (timing.stat().st_mtime + 5,) * 2)  # a model saved after its timing
    assert not latency.timed_already(out, keys, latency.Plan(), None)
    # (a run with --no-timing trained it again): a report shows no latency, not the old one's
    assert latency.stale(out) == 1 and latency.current(out) is None
    assert results.load(out).filter(like="latency").isna().all().all()
    os.utime(model, (timing.stat().st_mtime - 5,) * 2)
    assert latency.timed_already(out, keys, latency.Plan(), None)
    # another timing plan times them again, and so does another baseline (the speed-ups
    # the stage measures until precise), which changes no cell
    summary = runner.run(suite, out, jobs=1, timing_processes=3)
    assert not summary.timing_kept and timing.read_bytes() != first
    assert json.loads(timing.read_text())["plan"]["max_processes"] == 3
    based = parse(tiny_suite_file.read_text() + "baseline: {model: linear}\n")
    summary = runner.run(based, out, jobs=1, timing_processes=3)
    assert not summary.timing_kept and json.loads(timing.read_text())["baseline"]
    assert runner.run(based, out, jobs=1, timing_processes=3).timing_kept
    changed = parse(tiny_suite_file.read_text().replace("seeds: [0]", "seeds: [0, 1]"))
    with pytest.raises(runner.ResumeError, match=r"different content .*: seeds \[0\] → \[0, 1\]\. "):
        runner.run(changed, out, jobs=1)
    runner.run(changed, out, jobs=1, force=True)
    assert len(results.read(out)) == 4
    # a cell edited: the forced run counts as done only the runs of the suite it runs now
    edited = parse(tiny_suite_file.read_text().replace("hidden: 16}]", "hidden: 12}]"))
    with pytest.raises(runner.ResumeError, match=r": 1 cell\(s\) new \(.*hidden=12.*\); 1 cell\(s\) "
                       r"run there no longer in the suite \(.*hidden=16"):
        runner.run(edited, out, jobs=1)
    planned = []
    runner.run(edited, out, jobs=1, force=True, on_plan=lambda *n: planned.append(n))
    assert planned == [(1, 1)]  # linear done; the mlp of 12 to run, the one of 16 not counted


def test_unavailable_backend_is_failed_or_skipped(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    text = ("name: c\nseeds: [0]\ndefaults: {dataset: synthetic, model: linear, optimizer: sgd}\n"
            "matrix: {backend: [cuda]}\n")
    s = parse(text)
    runner.run(s, tmp_path / "a", jobs=1)
    rec = results.read(tmp_path / "a")[0]
    assert rec.status == "failed" and "CUDA is not available" in rec.error
    assert "set skip_unavailable: true" in rec.error
    s = parse(text + "skip_unavailable: true\n")
    runner.run(s, tmp_path / "b", jobs=1)
    rec = results.read(tmp_path / "b")[0]
    assert rec.status == "skipped" and "skip_unavailable" not in rec.error  # it is set


SHARDS = """
name: shards
seeds: [0, 1]
defaults:
  dataset: {name: synthetic, n_samples: 200, n_features: 6, n_classes: 3}
  optimizer: {name: adam, lr: 0.01}
  train: {steps: 10, batch_size: 32, eval_every: 5}
matrix:
  model: [linear, {name: mlp, hidden: 8}, {name: mlp, hidden: 12}]
"""


def test_shards_split_the_runs_evenly_and_keep_a_shared_training_together():
    """A hash of the cell id gave 0 of 4 cells to shard 1/2, and never split seeds."""
    from modelopt.run import dense, shards

    suite = parse(SHARDS)
    split = [shards.keys_of(suite, (i, 4)) for i in (1, 2, 3, 4)]
    assert sorted(map(len, split)) == [1, 1, 2, 2]  # 6 runs, seeds of a cell apart too
    assert set().union(*split) == {(c.cell_id, s) for c, s in suite.runs()}
    assert sum(map(len, split)) == 6  # each run in exactly one shard
    one = parse(SHARDS.replace("seeds: [0, 1]", "seeds: [0, 1, 2, 3]").replace(
        "model: [linear, {name: mlp, hidden: 8}, {name: mlp, hidden: 12}]", "model: [linear]"))
    assert [len(shards.keys_of(one, (i, 2))) for i in (1, 2)] == [2, 2]  # one cell, split
    # cells that differ only after training share a network: never split across shards
    pruned = parse(SHARDS + "  prune: [null, {name: l1_unstructured, amount: 0.5}]\n")
    for i in (1, 2, 3):
        keys = {dense.key(c, s) for c, s in shards.runs_of(pruned, (i, 3))}
        others = {dense.key(c, s) for j in (1, 2, 3) if j != i
                  for c, s in shards.runs_of(pruned, (j, 3))}
        assert keys and not keys & others
    assert "use at most 1 shard(s)" in shards.empty_note(parse(SHARDS.replace(
        "seeds: [0, 1]", "seeds: [0]").replace(
        "model: [linear, {name: mlp, hidden: 8}, {name: mlp, hidden: 12}]", "model: [linear]")),
        (2, 2))


def test_shards_merged_equal_one_unsharded_run(tmp_path):
    suite = parse(SHARDS)
    runner.run(suite, tmp_path / "all", jobs=2)
    plans = []
    for i in (1, 2, 3):  # shard jobs skip the timing stage: the merged directory is timed
        runner.run(suite, tmp_path / f"s{i}", jobs=2, shard=(i, 3), timing_stage=False,
                   on_plan=lambda *n: plans.append(n))
    assert plans == [(2, 0)] * 3 and not (tmp_path / "s1" / "timing.json").exists()
    # a shard run again where another shard ran: it counts its own runs, not the others'
    plans.clear()
    runner.run(suite, tmp_path / "s1", jobs=2, shard=(2, 3), timing_stage=False,
               on_plan=lambda *n: plans.append(n))
    assert plans == [(2, 0)]
    with pytest.raises(runner.ResumeError, match="named twice"):
        merge.merge([tmp_path / "s2", tmp_path / "s2"], tmp_path / "twice")
    n, left, missing = merge.merge([tmp_path / "s2", tmp_path / "s3"], tmp_path / "part")
    assert (n, left, len(missing)) == (4, 0, 2)  # shard 1/3 not merged: its runs named
    assert all(m.startswith("model=") and " seed " in m for m in missing)
    n, left, missing = merge.merge([tmp_path / f"s{i}" for i in (1, 2, 3)], tmp_path / "merged")
    assert (n, left, missing) == (6, 2, [])  # s1 also holds shard 2's runs
    key = lambda r: (r.cell_id, r.seed)  # noqa: E731
    whole = {key(r): r for r in results.read(tmp_path / "all")}
    merged = {key(r): r for r in results.read(tmp_path / "merged")}
    assert whole.keys() == merged.keys()
    for k in whole:
        assert whole[k].metrics["accuracy"] == merged[k].metrics["accuracy"]
    # the shards' models come along, and `modelopt time` times them side by side
    assert len(list((tmp_path / "merged" / "models").glob("*.pt"))) == 6
    r = subprocess.run([sys.executable, "-m", "modelopt", "time", str(tmp_path / "merged")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "timed 6 models (" in r.stderr and " processes" in r.stderr
    assert results.load(tmp_path / "merged")["latency_ms_batch_p50"].gt(0).all()
    # two runs of the whole suite (the advice for `report A B`): each record keeps the
    # models of the run it came from, never a later run's of the same cell and seed
    import shutil

    shutil.copytree(tmp_path / "all", tmp_path / "again")
    for p in (tmp_path / "again" / "models").glob("*.pt"):
        p.write_bytes(b"another run's model")
    # the second run's duplicates are counted as left out, not dropped unsaid
    assert merge.merge([tmp_path / "all", tmp_path / "again"], tmp_path / "both") == (6, 6, [])
    assert all((tmp_path / "both" / "models" / p.name).read_bytes() == p.read_bytes()
               for p in (tmp_path / "all" / "models").glob("*.pt"))
    other = tmp_path / "other"
    runner.run(parse(SHARDS.replace("steps: 10", "steps: 11")), other, jobs=2, shard=(1, 3))
    with pytest.raises(runner.ResumeError, match=r"different suites: .*other against .*s1: "
                       r"3 cell\(s\) new \(model=linear, train=steps=11; .*3 cell\(s\) of .*s1 no longer"):
        merge.merge([tmp_path / "s1", other], tmp_path / "bad")


def test_an_empty_shard_a_missing_one_and_an_untimed_merge_are_said(tmp_path):
    """An empty shard printed "nothing to run" and nothing else; merging one shard of two
    said nothing of the other; the untimed merge's report read "timed side by side (not
    timed)"."""
    p = tmp_path / "one.yaml"
    p.write_text(SHARDS.replace("seeds: [0, 1]", "seeds: [0]").replace(
        "model: [linear, {name: mlp, hidden: 8}, {name: mlp, hidden: 12}]",
        "model: [linear, {name: mlp, hidden: 8}]"))
    o = {name: str(tmp_path / name) for name in ("a", "b", "c", "m", "rep")}
    r = run_cli("run", str(p), "--shard", "3/3", "--out", o["c"], "--no-timing")
    assert r.returncode == 0 and "holds none of the suite's 2 runs" in r.stderr, r.stderr
    assert "use at most 2 shard(s)" in r.stderr and "this run nothing to run" in r.stderr
    with pytest.raises(runner.ResumeError, match="nothing to merge"):
        merge.merge([o["c"]], o["m"])
    r = run_cli("run", str(p), "--shard", "1/3", "--out", o["a"], "--no-timing")
    assert r.returncode == 0 and "in all 1 ok of 1 (shard 1/3)" in r.stderr, r.stderr
    with runner.writer_lock(Path(o["a"])):  # a shard still running: its last records to come
        with pytest.raises(runner.RunLocked, match=r"a.? is being written by a modelopt run "
                                                    r"\(pid \d+"):
            merge.merge([o["a"], o["c"]], o["m"])
    r = run_cli("merge", o["a"], o["c"], "--out", o["m"])
    assert r.returncode == 0 and "1 of the suite's runs have no result" in r.stderr, r.stderr
    assert "model=" in r.stderr.split("no result")[1]  # named by its axes
    r = run_cli("report", o["m"], "--out", o["rep"])
    assert r.returncode == 0 and "not timed: no latency or speed-ups" in r.stderr
    page = (tmp_path / "rep" / "shards.md").read_text()
    assert "latency: not timed (`modelopt time DIR`" in page
    assert not (tmp_path / "rep" / "shards_accuracy_latency.png").exists()  # an empty plot
    assert "**no results here** for 1 of the suite's 2 runs (cell × seed): model=" in page


def test_killed_run_resumes_with_each_cell_once(tmp_path):
    import os
    import signal
    import time

    p = tmp_path / "s.yaml"
    p.write_text(SHARDS.replace("steps: 10", "steps: 400").replace("seeds: [0, 1]",
                                                                    "seeds: [0, 1, 2]"))
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "modelopt", "run", str(p), "--out", str(out),
                             "--jobs", "1", "-q"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    res = out / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if res.exists() and len(res.read_bytes().splitlines()) >= 2:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its cell processes, mid-run
    proc.wait()
    done_before = len(results.read(out))
    assert 2 <= done_before < 9
    r = run_cli("run", str(p), "--out", str(out), "--jobs", "2", "-q")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    lines = [json.loads(x) for x in res.read_text().splitlines()]
    keys = [(x["cell_id"], x["seed"]) for x in lines]
    assert len(keys) == len(set(keys)) == 9  # every cell x seed exactly once
    assert all(x["status"] == "ok" for x in lines)


def test_ctrl_c_ends_the_cells_and_keeps_the_results(tmp_path):
    import os
    import signal
    import time
    import uuid

    import psutil

    p = tmp_path / "s.yaml"
    p.write_text(SHARDS.replace("seeds: [0, 1]", "seeds: [0]").replace(
        "{name: mlp, hidden: 12}]", "{name: test_crash, how: sleep}]"))
    order = [c.as_config()["model"]["name"] for c, _ in load(p).runs()]
    before = order.index("test_crash")  # cells that finish before the sleeper starts
    out, mark = tmp_path / "o", uuid.uuid4().hex
    # started with SIGINT ignored, as a shell's background job is: Ctrl-C still ends a run
    proc = subprocess.Popen([sys.executable, "-m", "modelopt", "run", str(p), "--out", str(out),
                             "--jobs", "1", "-q"], start_new_session=True,
                            env={**os.environ, "MODELOPT_TEST_MARK": mark},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    res = out / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:  # the cells before it are done: the sleeper is training
        if res.exists() and len(res.read_bytes().splitlines()) >= before:
            break
        time.sleep(0.2)
    time.sleep(3.0)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    recs = results.read(out)
    assert [r.status for r in recs] == ["ok"] * before  # the interrupted cell is not recorded
    alive = []
    for q in psutil.process_iter():
        try:
            if q.environ().get("MODELOPT_TEST_MARK") == mark and q.status() != "zombie":
                alive.append(q)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    assert alive == []  # no cell process outlives the run


def test_ray_executor_matches_local_and_records_crashes(tmp_path):
    pytest.importorskip("ray")
    text = SHARDS.replace("  model: [linear, {name: mlp, hidden: 8}, {name: mlp, hidden: 12}]",
                          "  model: [linear, {name: mlp, hidden: 8}, {name: test_crash, how: exit}]"
                          ).replace("seeds: [0, 1]", "seeds: [0]")
    suite = parse(text)
    runner.run(suite, tmp_path / "local", jobs=2)
    try:
        runner.run(suite, tmp_path / "ray", jobs=2, executor="ray")
    finally:
        import ray

        ray.shutdown()
    local = {(r.cell_id, r.seed): r for r in results.read(tmp_path / "local")}
    remote = {(r.cell_id, r.seed): r for r in results.read(tmp_path / "ray")}
    assert local.keys() == remote.keys()
    for k, r in remote.items():
        assert r.status == local[k].status
        if r.status == "ok":
            assert r.metrics["accuracy"] == local[k].metrics["accuracy"]
            assert r.env["executor"] == "ray"
        else:
            assert r.cell["model"]["name"] == "test_crash"


def test_plan_shows_cells_resume_estimate_and_include_merges(tmp_path):
    from modelopt.results.record import Record

    p = tmp_path / "inc.yaml"
    p.write_text("name: inc\nseeds: [0, 1]\ndefaults:\n  dataset: {name: synthetic, n_samples: 200}\n"
                 "  model: mlp\n  train: {steps: 5}\nmatrix:\n  prune: [none, l1_unstructured]\n"
                 "include:\n  - {prune: none, quantize: dynamic_int8}\n")
    suite = load(p)
    assert len(suite.cells) == 2 and "include[0]" in suite.warnings[0]
    first = suite.cells[0].cell_id
    results.append(tmp_path / "o", Record(suite="inc", cell_id=first, seed=0, status="ok",
                                          duration_s=12.0,  # what it read, as a run records
                                          extra=dict(suite.inputs.get(first, {}))))
    r = run_cli("plan", str(p), "--out", str(tmp_path / "o"), "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert "2 cells x 2 seeds = 4 runs" in r.stdout
    assert "include[0] (prune=none, quantize=dynamic_int8) changed 1 existing cell(s)" in r.stdout
    assert "resume: 1 of 4 already ok, 3 to run" in r.stdout
    # pruning acts after training: the two cells train one network (spec/keys.py)
    table = [[c.strip() for c in line.split("|")[1:-1]] for line in r.stdout.splitlines()
             if line.startswith("|") and "---" not in line]
    col = table[0].index("trains with")
    assert [row[col] for row in table[1:]] == ["1", "1"]
    assert "estimate: about 6 s at --jobs 2" in r.stdout  # one seed left of the 12 s cell
    assert "(1 cell(s) with no ok result there: not counted)" in r.stdout  # the other cell
    assert not (tmp_path / "o" / "suite.json").exists()  # nothing ran, nothing written
    dry = run_cli("run", str(p), "--out", str(tmp_path / "o"), "--jobs", "2", "--dry-run")
    assert dry.returncode == 0 and dry.stdout == r.stdout
    # a shard's plan is that shard's runs, as its run would take them: the two cells train
    # one network per seed, so each shard takes one seed of both
    shards = [run_cli("plan", str(p), "--out", str(tmp_path / "o"), "--shard",
                      f"{i}/2").stdout for i in (1, 2)]
    assert all(out.startswith(f"shard {i}/2 of inc: 2 of the 4 runs, of 2 cells and seeds "
                              f"[{i - 1}]") for i, out in zip((1, 2), shards)), shards
    assert sorted(out.count("resume: 1 of 2 already ok") for out in shards) == [0, 1]
    dry = run_cli("run", str(p), "--out", str(tmp_path / "o"), "--dry-run", "--shard", "1/2")
    assert dry.stdout == shards[0]


def test_plan_names_the_cells_this_machine_cannot_run(tmp_path):
    """A DDP group larger than the machine: `plan` says so before the run records it."""
    from modelopt.run import backends
    from modelopt.run.preview import plan

    def ddp_suite(world: int):
        return parse(f"""
name: ddp{world}
seeds: [0]
defaults:
  dataset: {{name: synthetic, n_samples: 200}}
  model: mlp
  train: {{steps: 5, batch_size: {world * 10}}}
matrix:
  backend: [cpu, {{name: ddp, world_size: {world}}}]
""")

    text = plan(ddp_suite(backends.cpu_count() + 1), tmp_path / "o", 1)
    line = next(x for x in text.splitlines() if x.startswith("unavailable here: "))
    assert f"needs {backends.cpu_count() + 1} CPUs" in line and "recorded as failed" in line
    assert text.count("unavailable here") == 1  # the cpu cell runs
    # a group this machine can run, at --jobs 1: it runs oversubscribed, and is said so
    two = ddp_suite(min(2, backends.cpu_count()))
    said = [x for x in plan(two, tmp_path / "o", 1).splitlines() if x.startswith("oversubscribed")]
    assert len(said) == (backends.cpu_count() >= 2) and all(
        "takes 2 cores" in x and "--jobs 2 or more" in x for x in said)
    assert not any(x.startswith("oversubscribed") for x in plan(two, tmp_path / "o", 2).splitlines())


def test_a_gpu_cell_waits_while_another_gpu_cell_runs():
    """Two cells on one GPU would slow each other's training and blur their memory peaks:
    the scheduler starts a GPU cell only when no other runs; CPU cells still go beside it."""
    import dataclasses
    from types import SimpleNamespace

    from modelopt.run import scheduler

    suite = parse(EXPECTED.split("expect_failure:")[0])
    sched = scheduler.Scheduler(suite, 4)
    on_gpu = dataclasses.replace(scheduler.job(suite.cells[0], 0, 4), gpus=1)
    assert not sched._waits(on_gpu)
    sched.active[object()] = SimpleNamespace(job=on_gpu)  # one GPU cell running
    assert sched._waits(dataclasses.replace(on_gpu, seed=1))
    assert not sched._waits(dataclasses.replace(on_gpu, seed=1, gpus=0))


MASK = """
import signal
from multiprocessing import resource_tracker
from modelopt.run.processes import context
from tests.processes import signal_mask

resource_tracker.ensure_running()  # as a DataLoader or a plugin in this process would have
ctx = context()
parent, child = ctx.Pipe()
held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
proc = ctx.Process(target=signal_mask, args=(child,))
proc.start()  # as the scheduler starts a cell: Ctrl-C and SIGTERM held meanwhile
signal.pthread_sigmask(signal.SIG_SETMASK, held)
print(parent.recv())
proc.join()
"""


def test_cells_are_started_hearing_sigterm_and_sigint():
    """The forkserver started lazily inside the scheduler's mask passed it on to every cell,
    rank and timing process: deaf to SIGTERM, a timed-out cell's ranks trained on."""
    r = subprocess.run([sys.executable, "-c", MASK], cwd=Path(__file__).resolve().parents[1],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
