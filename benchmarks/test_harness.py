"""How fast is the harness itself, and are its figures the model's and not the harness's?

Each benchmark measures modelopt against the limit in the same run and records the ratio
in extra_info (and prints it). Targets are stated, not asserted: these machines are noisy.
Run alone with `pytest benchmarks/test_harness.py --benchmark-only -s`.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from modelopt import backends, results, runner
from modelopt.cell import load_data, setup, train_model
from modelopt.models import build
from modelopt.suite import parse

CNN = """
name: harness
seeds: [0]
defaults:
  dataset: mnist1d
  model: cnn
  optimizer: {name: adam, lr: 0.01}
  train: {steps: STEPS, batch_size: 100, eval_every: STEPS, val_fraction: 0.1}
matrix:
  model: [cnn]
"""


def report(benchmark, **figures):
    benchmark.extra_info.update(figures)
    print("\n" + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in figures.items()))


def hand_loop(data, steps: int, batch: int) -> float:
    """The minimal loop: in-memory tensors, a seeded permutation sliced per step."""
    torch.manual_seed(0)
    model = build({"name": "cnn"}, data.input_shape, 10)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y, n = data.x_train, data.y_train, len(data.x_train)
    order, pos = torch.randperm(n), 0
    t0 = time.perf_counter()
    for _ in range(steps):
        if pos + batch > n:
            order, pos = torch.randperm(n), 0
        idx = order[pos:pos + batch]
        pos += batch
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def dataloader_loop(data, steps: int, batch: int) -> float:
    """What users usually write: DataLoader over a TensorDataset."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = build({"name": "cnn"}, data.input_shape, 10)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=batch,
                        shuffle=True, drop_last=True)
    done, t0 = 0, time.perf_counter()
    while done < steps:
        for xb, yb in loader:
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return steps * batch / (time.perf_counter() - t0)


@pytest.mark.benchmark(group="harness: training throughput")
def test_training_loop_overhead(benchmark):
    """modelopt's loop vs a hand-written one vs DataLoader, one thread each, same process."""
    cfg = parse(CNN.replace("STEPS", "2000")).cells[0].config
    backend = backends.build(cfg["backend"])
    setup(backend, 1)
    data = load_data(cfg, 0)
    rates = {"hand": [], "dataloader": [], "modelopt": []}

    def once():
        rates["hand"].append(hand_loop(data, 2000, 100))
        rates["dataloader"].append(dataloader_loop(data, 2000, 100))
        _, _, outcome = train_model(cfg, 0, backend, data)
        rates["modelopt"].append(outcome.samples / outcome.train_seconds)

    benchmark.pedantic(once, rounds=3, iterations=1)
    med = {k: statistics.median(v) for k, v in rates.items()}
    report(benchmark, hand_samples_s=med["hand"], dataloader_samples_s=med["dataloader"],
           modelopt_samples_s=med["modelopt"], modelopt_over_hand=med["modelopt"] / med["hand"],
           dataloader_over_hand=med["dataloader"] / med["hand"], target_modelopt_over_hand=0.95)


QUICK_SHORT = """
name: quick_short
seeds: [0, 1, 2]
defaults:
  dataset: mnist1d
  optimizer: {name: adam, lr: 0.01}
  train: {steps: 1000, batch_size: 100, eval_every: 500, val_fraction: 0.05}
matrix:
  model: [linear, mlp, cnn, gru]
"""


@pytest.mark.benchmark(group="harness: suite throughput")
def test_parallel_cells(benchmark, tmp_path):
    """The quick suite's cells (1,000 steps instead of 6,000) with --jobs 1 (cells one after
    another, 2 threads each) vs --jobs 2 (two 1-thread cells side by side). Accuracy, loss
    and params must not depend on it; the wall time should."""
    one = parse(QUICK_SHORT.replace("train: {", "backend: {name: cpu, threads: 2}\n  train: {"))
    two = parse(QUICK_SHORT)
    wall = {}

    def run_both():
        for name, suite, jobs in (("jobs1", one, 1), ("jobs2", two, 2)):
            t0 = time.perf_counter()
            runner.run(suite, tmp_path / name, jobs=jobs, resume=False)
            wall[name] = time.perf_counter() - t0

    benchmark.pedantic(run_both, rounds=1, iterations=1)
    n = len(two.runs())
    by = {d: {(r["cell"]["model"]["name"], r["seed"]): r for r in results.read(tmp_path / d)}
          for d in ("jobs1", "jobs2")}
    phases: dict[str, float] = {}
    for r in by["jobs2"].values():
        for k, v in r["extra"].get("phase_seconds", {}).items():
            phases[k] = phases.get(k, 0.0) + v
    overhead = sum(r["duration_s"] for r in by["jobs2"].values()) - sum(phases.values())
    same_1thread = parse(QUICK_SHORT)
    runner.run(same_1thread, tmp_path / "jobs1_1thread", jobs=1, resume=False)
    serial = {(r["cell"]["model"]["name"], r["seed"]): r
              for r in results.read(tmp_path / "jobs1_1thread")}
    identical = all(serial[k]["metrics"][m] == by["jobs2"][k]["metrics"][m]
                    for k in serial for m in ("accuracy", "loss", "params"))
    report(benchmark, runs=n, wall_jobs1_s=wall["jobs1"], wall_jobs2_s=wall["jobs2"],
           runs_per_min_jobs1=60 * n / wall["jobs1"], runs_per_min_jobs2=60 * n / wall["jobs2"],
           speedup=wall["jobs1"] / wall["jobs2"], target_speedup=1.8,
           identical_results_jobs1_vs_jobs2=identical,
           **{f"cell_{k}_s": v for k, v in phases.items()},
           cell_process_and_waiting_s=overhead)
    assert identical  # parallelism changes speed, never results


@pytest.mark.benchmark(group="harness: latency stability")
def test_latency_repeatability(benchmark, tmp_path):
    """The same cell three times: coefficient of variation of latency_ms_p50 (target <= 5 %)."""
    suite = parse(CNN.replace("STEPS", "300"))
    p50 = []

    def three():
        for i in range(3):
            runner.run(suite, tmp_path / str(i), jobs=1, resume=False)
            p50.append(results.read(tmp_path / str(i))[0]["metrics"]["latency_ms_p50"])

    benchmark.pedantic(three, rounds=1, iterations=1)
    cv = statistics.stdev(p50) / statistics.mean(p50)
    report(benchmark, latency_ms_p50=statistics.mean(p50), cv=cv, target_cv=0.05)


BARE = textwrap.dedent("""
    import json, sys, torch
    from modelopt.cell import load_data
    from modelopt.models import build
    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(1)
    data = load_data(cfg, 0)
    torch.manual_seed(0)
    model = build(cfg["model"], data.input_shape, 10)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for step in range(cfg["train"]["steps"]):
        idx = torch.randint(0, len(data.x_train), (100,))
        loss = torch.nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad(); loss.backward(); opt.step()
    print(json.dumps({"peak_mb": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024}))
""")


@pytest.mark.benchmark(group="harness: memory")
def test_peak_memory_vs_bare_script(benchmark, tmp_path):
    """Peak RSS of a cell vs the same training in a bare script (target <= 1.1x)."""
    suite = parse(CNN.replace("STEPS", "500"))
    out = {}

    def both():
        runner.run(suite, tmp_path, jobs=1, resume=False)
        rec = results.read(tmp_path)[0]
        bare = subprocess.run([sys.executable, "-c", BARE, json.dumps(suite.cells[0].config)],
                              capture_output=True, text=True, check=True)
        out["cell"] = rec["metrics"]["peak_rss_mb"]
        out["baseline"] = rec["metrics"]["baseline_rss_mb"]
        out["bare"] = json.loads(bare.stdout.strip().splitlines()[-1])["peak_mb"]

    benchmark.pedantic(both, rounds=1, iterations=1)
    report(benchmark, cell_peak_mb=out["cell"], cell_baseline_mb=out["baseline"],
           bare_peak_mb=out["bare"], ratio=out["cell"] / out["bare"], target_ratio=1.1)


@pytest.mark.benchmark(group="harness: false alarms")
def test_false_alarm_rate(benchmark, tmp_path):
    """The same suite twice on the same commit, compared: every flagged regression is a
    false alarm (target: none)."""
    from modelopt import compare

    suite = parse(QUICK_SHORT)
    out = {}

    def twice():
        for name in ("a", "b"):
            runner.run(suite, tmp_path / name, jobs=2, resume=False)
        out["cmp"] = compare.compare(tmp_path / "a", tmp_path / "b")

    benchmark.pedantic(twice, rounds=1, iterations=1)
    cmp = out["cmp"]
    flagged = [f"{r.label}:{r.metric}" for r in cmp.regressions]
    noise = sum(r.verdict == "noise" for r in cmp.rows)
    report(benchmark, figures_compared=len(cmp.rows), false_alarms=len(flagged),
           beyond_tolerance_but_within_noise=noise, flagged=";".join(flagged) or "none")
