"""Each cell x seed trains in its own process (outside the timed region); the benchmark
fixture then times batch-1 inference of the trained model, and every modelopt metric goes
into extra_info, so `--benchmark-json` carries accuracy next to time. The models are saved
beside the results, so `modelopt time DIR` can time them side by side for `modelopt report`
and `modelopt compare`."""

from __future__ import annotations

import warnings

import pytest
import torch

from modelopt.results import latency
from modelopt.results import metrics as M
from modelopt.results import store as results
from modelopt.results.labels import axis_labels
from modelopt.results.record import ERRORS
from modelopt.run import rebuild, runner, scheduler
from modelopt.spec import outcomes


def test_cell(benchmark, suite, cell_run, results_dir, untimed):
    cell, seed = cell_run
    labels = axis_labels([c.as_config() for c in suite.cells])
    row = labels.iloc[list(suite.cells).index(cell)]
    benchmark.group = f"{suite.name}: " + ", ".join(f"{k[5:]}={v}" for k, v in row.items())
    model_dir = results_dir / latency.MODELS_DIR
    records = []
    sched = scheduler.Scheduler(suite, 1, on_record=records.append, model_dir=str(model_dir),
                                commit=runner.git_commit())  # the report names the commit
    if sched.run([scheduler.job(cell, seed, 1)]).interrupted:
        # Ctrl-C (or SIGTERM, see conftest) ended the cell's process: end the session as
        # pytest's own Ctrl-C does; the results of finished cells are already on disk
        raise KeyboardInterrupt
    rec = records[0]
    results.append(results.results_path(results_dir), rec)
    undeclared = M.undeclared(rec.figures())
    if undeclared:  # every figure is in the metric table, or this is a bug of ours
        pytest.fail(f"metrics missing from modelopt/results/metrics.py: {undeclared}")
    # what it read besides its config (data files' prints, your code's hash), as records keep
    # them, and which test samples it got right (compare's test of one seed's accuracy)
    inputs = {k: rec.extra[k] for k in ("data_files", "code", outcomes.KEY) if k in rec.extra}
    benchmark.extra_info.update({"cell_id": cell.cell_id, "seed": seed,
                                 "status": rec.status, "error": rec.error, "extra": inputs,
                                 "cell": rec.cell,  # compare names the cell by its axes
                                 **{k: v for k, v in rec.metrics.items()
                                    if M.TABLE[k].fmt != "none"},
                                 # the other models' figures, by model (slimmed)
                                 "models": rec.models})
    if rec.status != "ok":  # never benchmarked: the JSON keeps its status (conftest.UNTIMED)
        untimed.append({"cell_id": cell.cell_id, "seed": seed, "status": rec.status,
                        "error": rec.error, "cell": rec.cell, "extra": inputs})
    if rec.status == "diverged":  # a finding about the setting, as `modelopt run` counts it
        pytest.skip(f"diverged, recorded: {rec.error} (nothing to time)")
    if rec.status != "ok":
        expected = suite.expected_failure(cell.cell_id)
        if expected and rec.status in ERRORS:  # the suite's expect_failure: xfail, not fail
            pytest.xfail(f"{expected} ({rec.status}: {rec.error})")
        pytest.fail(f"{rec.status}: {rec.error}")
    # the saved model rebuilt as the timing stage rebuilds it (run/rebuild.py)
    with warnings.catch_warnings():  # int8 tensors' deprecation, once per layer (README)
        warnings.simplefilter("ignore", UserWarning)
        model, example, _ = rebuild.load(
            latency.artifact_path(model_dir, cell.cell_id, seed, "model"),
            rebuild.Recipe.of(cell))
    torch.set_num_threads(1)  # as the timing stage times
    with torch.inference_mode():
        benchmark.pedantic(model, args=(example,), warmup_rounds=20, rounds=200, iterations=10)
