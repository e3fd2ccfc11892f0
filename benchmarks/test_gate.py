"""Is the regression gate right in both directions? Measured, not asserted.

False alarms: one small suite run RUNS times on the same code (some runs beside two busy
processes that share both cores), and every pair compared in both directions, re-timing
the saved models side by side (beside the busy processes too when either run had them):
every flagged figure is a false alarm (target: 0).
Power: on a quiet pair and a busy pair, one cell of the current run gets a 30 % slower
model (a real slowdown: the saved model spins), a 25 % lower training throughput or a
3-point lower accuracy (applied to its recorded figures); each must be flagged.

Run with `pytest benchmarks/test_gate.py --benchmark-only --harness -s` (about 10 minutes on 2
cores); the figures go to extra_info and stdout.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import shutil
import subprocess
import sys

import pytest

from modelopt.results import compare
from modelopt.results import store as results
from modelopt.run import runner, timing
from modelopt.spec.suite import parse

pytestmark = pytest.mark.harness

SMALL = """
name: gate
seeds: [0, 1, 2]
defaults:
  dataset: mnist1d
  optimizer: {name: adam, lr: 0.01}
  train: {steps: 400, batch_size: 100, eval_every: 200, val_fraction: 0.05}
matrix:
  model: [linear, mlp, {name: cnn, channels: 32}]
"""
RUNS = [("quiet", False), ("quiet", False), ("quiet", False), ("busy", True), ("busy", True)]


@contextlib.contextmanager
def busy(on: bool, n: int = 2):
    """`n` processes spinning on the cores beside whatever runs in the block."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n if on else 0)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def flagged(cmp) -> list[str]:
    return [f"{cmp.labels.get(r.cell_id, r.cell_id)}:{r.metric}" for r in cmp.regressions] + (
        ["missing cells"] if cmp.only_baseline or cmp.only_current else [])


def copy_with(src, dst, cell_id: str, change) -> None:
    """A copy of a run whose records of `cell_id` get `change(metrics)`."""
    shutil.copytree(src, dst)
    (dst / "results.jsonl").unlink()
    for rec in results.read(src):
        rec = copy.deepcopy(rec)
        if rec.cell_id == cell_id:
            change(rec.metrics)
        results.append(dst, rec)


def slow_models(run_dir, cell_id: str, factor: float) -> None:
    """The cell's models rebuilt slower for real: its records ship it in tests.plugins'
    spinning deploy format (the timer is given those plugins, as --plugins would)."""
    recs = results.read(run_dir)
    (run_dir / "results.jsonl").unlink()
    for rec in recs:
        if rec.cell_id == cell_id:
            rec.cell["deploy"] = {"name": "test_slowed", "factor": factor}
        results.append(run_dir, rec)


def time_artifacts(items, plan, pairs, progress=None):
    return timing.time_saved(items, timing.UserCode({"modules": ["tests.plugins"], "path": []}),
                             plan, progress=progress, pairs=pairs)


@pytest.mark.benchmark(group="gate: false alarms and power")
def test_gate_false_alarms_and_power(benchmark, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # tests.plugins (the spinning model) must import here and in the timing processes
    sys.path.insert(0, root)
    os.environ["PYTHONPATH"] = root + os.pathsep + os.environ.get("PYTHONPATH", "")
    suite = parse(SMALL)
    dirs = []
    out: dict = {}

    def measure():
        for i, (kind, load) in enumerate(RUNS):
            d = tmp_path / f"run{i}-{kind}"
            with busy(load):
                runner.run(suite, d, jobs=1, resume=False)
            dirs.append((d, load))
        alarms, figures, compares = [], 0, 0
        for (a, la), (b, lb) in itertools.permutations(dirs, 2):
            with busy(la or lb):
                cmp = compare.compare(a, b, timer=time_artifacts)
            compares += 1
            figures += len(cmp.rows)
            alarms += [f"{a.name}->{b.name} {f}" for f in flagged(cmp)]
        out.update(alarms=alarms, figures=figures, compares=compares)
        target = next(r.cell_id for r in results.read(dirs[0][0])
                      if r.cell["model"]["name"] == "cnn")
        power = {}
        for name, (base, load), cur in (("quiet", dirs[0], dirs[1][0]),
                                         ("busy", dirs[3], dirs[4][0])):
            injections = {
                "latency_x1.3": (lambda d: slow_models(d, target, 1.3), "latency_ms_batch_p50"),
                "train_throughput_x0.75": (None, "train_samples_s"),
                "accuracy_-3pt": (None, "accuracy")}
            for what, (models, metric) in injections.items():
                d = tmp_path / f"power-{name}-{what}"
                if models:
                    shutil.copytree(cur, d)
                    models(d)
                else:
                    scale = {"train_samples_s": lambda m: m.update(
                                 train_samples_s=m["train_samples_s"] * 0.75),
                             "accuracy": lambda m: m.update(accuracy=m["accuracy"] - 0.03)}
                    copy_with(cur, d, target, scale[metric])
                with busy(load):
                    cmp = compare.compare(base, d, timer=time_artifacts)
                power[f"{name} {what}"] = any(r.cell_id == target and r.metric == metric
                                              for r in cmp.regressions)
        out["power"] = power

    benchmark.pedantic(measure, rounds=1, iterations=1)
    figures = {"runs": len(RUNS), "busy_runs": sum(load for _, load in RUNS),
               "compares": out["compares"], "figures_compared": out["figures"],
               "false_alarms": len(out["alarms"]), "target_false_alarms": 0,
               **{f"flagged: {k}": v for k, v in out["power"].items()}}
    benchmark.extra_info.update(figures)
    print("\n" + "\n".join(f"{k}: {v}" for k, v in figures.items()))
    print("false alarms:", "; ".join(out["alarms"]) or "none")
