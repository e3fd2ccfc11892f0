import os
import subprocess
import sys
import time
import uuid

import psutil
import pytest
import torch

from modelopt.run import backends, ddp
from modelopt.run.plan import load_data, train_here
from modelopt.spec.suite import SuiteError, parse
from tests.processes import leftovers

SUITE = """
name: b
seeds: [0]
defaults:
  dataset: {name: synthetic, n_samples: 400, n_features: 10, n_classes: 3}
  model: {name: mlp, hidden: 16}
  optimizer: {name: sgd, lr: 0.1}
  train: {steps: 20, batch_size: 64, eval_every: 10}
matrix:
  backend: [cpu, {name: ddp, world_size: 2, dist_backend: gloo}]
"""


def ranks_alive():
    """Spawned rank processes still running (multiprocessing's resource tracker is not one)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "spawn_main" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def test_ddp_two_ranks_matches_single_process_weights():
    cells = parse(SUITE).cells
    cpu_cfg, ddp_cfg = cells
    cpu_cfg.backend.build().prepare(1)
    alone = train_here(cpu_cfg.backend.build(), cpu_cfg, 0)
    single = alone.net
    ranked = ddp_cfg.backend.build().train(ddp_cfg, 0, load_data(ddp_cfg, 0))
    state, outcome = ranked.net.state_dict(), ranked.outcome
    assert ranked.info["ddp_startup_s"] > 0 and ranked.info["ddp_world_size"] == 2
    assert outcome.samples == 20 * 64  # the global rate counts both ranks
    for name, w in single.state_dict().items():
        # same global batch, same initial weights: only the summation order differs
        # (two half-batch means averaged by all-reduce vs one mean)
        assert torch.allclose(w, state[name], atol=1e-5), name
    # the curves' training loss is the global batch's, as one process reads it (it was rank
    # 0's half of the batch)
    pairs = [(a["train_loss"], b["train_loss"]) for a, b in zip(alone.outcome.curves,
                                                                outcome.curves)]
    assert len(pairs) == 2 and all(abs(a - b) < 1e-5 for a, b in pairs), pairs
    assert ranks_alive() == []


def test_each_rank_draws_its_own_augmentation_and_dropout(tmp_path, monkeypatch):
    """With one seed everywhere, rank 1 drew the very noise rank 0 drew for its half of
    the batch (and the same dropout masks): half the independent draws of one process."""
    monkeypatch.setenv("MODELOPT_TEST_DRAWS", str(tmp_path))
    cfg = parse(SUITE.replace("train:", "augment: [test_draws]\n  train:")).cells[1]
    cfg.backend.build().train(cfg, 0, load_data(cfg, 0))
    draws = [p.read_text() for p in tmp_path.iterdir()]
    assert len(draws) == 2 and draws[0] != draws[1], draws
    assert ranks_alive() == []


def test_a_batch_that_does_not_divide_among_the_ranks_is_refused_at_load():
    with pytest.raises(SuiteError, match=r"train.batch_size 65 does not divide among backend "
                       r"ddp's world_size 2 ranks: give a multiple of 2"):
        parse(SUITE.replace("batch_size: 64", "batch_size: 65"))
    # a full-batch optimizer takes no batch_size: nothing to divide
    assert parse(SUITE.replace("batch_size: 64", "batch_size: 65").replace(
        "{name: sgd, lr: 0.1}", "{name: gd, lr: 0.1}")).cells


def test_a_ranks_seed_is_its_own_for_any_seed_the_suite_takes():
    """SeedSequence refused a negative seed: a ddp cell with seed -3 failed on rank 1."""
    from modelopt.run.train import rank_seed

    assert rank_seed(-3, None) == rank_seed(-3, (0, 2)) == -3
    others = {rank_seed(s, (r, 4)) for s in (-3, 0, 5) for r in (1, 2, 3)}
    assert len(others) == 9 and all(0 <= v < 2**31 for v in others)


def test_a_rank_that_raises_fails_the_cell_and_leaves_no_process():
    cfg = parse(SUITE.replace("model: {name: mlp, hidden: 16}",
                              "model: {name: test_crash, how: raise}")).cells[1]
    with pytest.raises(ddp.RankFailed, match="rank [01]: RuntimeError: deliberate"):
        cfg.backend.build().train(cfg, 0, load_data(cfg, 0))
    assert ranks_alive() == []


def test_a_rank_that_dies_is_named_not_its_peers_broken_collective():
    cfg = parse(SUITE.replace("model: {name: mlp, hidden: 16}",
                              "model: {name: test_crash, how: exit, rank: 1}")).cells[1]
    with pytest.raises(ddp.RankFailed, match="rank 1: process 1 terminated with exit code 3"):
        cfg.backend.build().train(cfg, 0, load_data(cfg, 0))
    assert ranks_alive() == []


def test_ddp_larger_than_the_machine_is_refused():
    with pytest.raises(backends.BackendUnavailable, match="CPUs"):
        backends.build({"name": "ddp", "world_size": 64, "dist_backend": "gloo",
                        "threads": 1, "device": "cpu"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_cell_with_amp_runs_and_reports_gpu_memory():
    from modelopt.run.cell import run_cell

    cfg = parse(SUITE.replace("backend: [cpu, {name: ddp, world_size: 2, dist_backend: gloo}]",
                              "backend: [{name: cuda, amp: true}]")).cells[0]
    out = run_cell(cfg, 0)
    assert out.status == "ok" and out.metrics["peak_cuda_mb"] > 0
    assert out.env["device"].startswith("cuda") and out.metrics["train_samples_s"] > 0


def cuda_cell(backend: str, **extra):
    cfg = parse(SUITE.replace("backend: [cpu, {name: ddp, world_size: 2, dist_backend: gloo}]",
                              f"backend: [{backend}]")).cells[0]
    return cfg.replaced(**extra)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp_dtype", ["fp16", "bf16"])
def test_cuda_amp_learns_as_float32_does(amp_dtype):
    from modelopt.run.cell import run_cell

    fp32 = run_cell(cuda_cell("{name: cuda}"), 0)
    amp = run_cell(cuda_cell(f"{{name: cuda, amp: true, amp_dtype: {amp_dtype}}}"), 0)
    assert fp32.status == amp.status == "ok"
    # fp16 goes through the GradScaler; both must train, not just run
    assert amp.metrics["accuracy"] > 0.5
    assert abs(amp.metrics["accuracy"] - fp32.metrics["accuracy"]) < 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_structured_pruning_slims_and_int8_ships_where_its_kernels_run():
    from modelopt.run.cell import run_cell
    from modelopt.run.rebuild import device_of

    pruned = run_cell(cuda_cell("{name: cuda}", prune={
        "name": "l1_structured", "amount": 0.5, "finetune_steps": 10}), 0)
    assert pruned.status == "ok", pruned.error
    assert pruned.figures_of["slimmed"]["max_abs_diff"] < 1e-4
    assert "slimmed" in pruned.models and pruned.figures_of["slimmed"]["params"] > 0
    slim = pruned.models["slimmed"].shipped  # shipped where its baseline runs: on the GPU
    assert device_of(slim, slim).type == "cuda"
    for name, runs_on in (("dynamic_int8", "cuda"), ("int8_weight_only", "cuda"),
                          ("int8_static", "cpu")):  # torchao's int8 tensors; x86 kernels
        q = run_cell(cuda_cell("{name: cuda}", quantize={"name": name}), 0)
        assert q.status == "ok", (name, q.error)
        assert q.metrics["accuracy"] > 0.4 and q.env["device"].startswith("cuda")
        shipped = q.models["model"].shipped
        assert device_of(shipped, shipped).type == runs_on, name


def test_losses_read_a_step_late_are_the_losses_read_at_once():
    """On CUDA the loop reads each loss after queueing the next step (run/train.py); the
    numbers, their steps and the step that diverged must be those read at once."""
    from modelopt.run.train import _StepLosses

    values = [2.0, 1.5, float("nan"), 1.0]
    at_once, late = _StepLosses(lag=False, shard=None), _StepLosses(lag=True, shard=None)
    read_now, read_late = [], []
    for step, v in enumerate(values, 1):
        for losses, got in ((at_once, read_now), (late, read_late)):
            losses.add(step, torch.tensor(v))
            got += losses.read(everything=step == 2)
    # step 1 waits for step 2, read at once (an evaluation); step 3 waits for step 4
    assert [s for s, *_ in read_late] == [1, 2, 3]
    read_late += late.read(everything=True)
    assert [(s, f) for s, _, f in read_now] == [(s, f) for s, _, f in read_late] == [
        (1, True), (2, True), (3, False), (4, True)]
    assert [v for _, v, _ in read_late][:2] == [2.0, 1.5]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_diverging_cuda_cell_stops_at_the_step_the_cpu_cell_does():
    from modelopt.run.cell import run_cell

    out = {b: run_cell(cuda_cell(b, optimizer={"name": "sgd", "lr": 1e30}), 0)
           for b in ("cpu", "{name: cuda}")}
    assert {o.status for o in out.values()} == {"diverged"}
    assert out["cpu"].error == out["{name: cuda}"].error  # "NaN/inf at train step N"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_ddp_nccl_two_gpus_matches_one_gpu():
    cuda_cfg = cuda_cell("{name: cuda}")
    ddp_cfg = cuda_cell("{name: ddp, world_size: 2, dist_backend: nccl, device: cuda}")
    single = train_here(backends.build(cuda_cfg["backend"]), cuda_cfg, 0).net
    ranked = backends.build(ddp_cfg["backend"]).train(ddp_cfg, 0, load_data(ddp_cfg, 0))
    state, outcome = ranked.net.state_dict(), ranked.outcome
    assert outcome.samples == 20 * 64
    for name, w in single.state_dict().items():
        assert torch.allclose(w.cpu(), state[name], atol=1e-4), name
    assert ranks_alive() == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_unavailable_message():
    with pytest.raises(backends.BackendUnavailable, match="CUDA is not available here"):
        backends.build({"name": "cuda", "device": 0, "amp": False, "amp_dtype": "bf16"})


def test_a_gpu_index_the_process_cannot_see_says_why(monkeypatch):
    """Ray shows a task only the GPU it gave it, as cuda:0 (CUDA_VISIBLE_DEVICES); a cell
    asking for device 1 there is told so. (No GPU here: torch is made to report one.)"""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(backends.BackendUnavailable, match=r"needs 2 CUDA device\(s\); this "
                       r"process sees 1 \(CUDA_VISIBLE_DEVICES=3: .*write device: 0\)"):
        backends.build({"name": "cuda", "device": 1, "amp": False, "amp_dtype": "bf16"})
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with pytest.raises(backends.BackendUnavailable, match=r"this process sees 1$"):
        backends.build({"name": "cuda", "device": 1, "amp": False, "amp_dtype": "bf16"})


def test_ddp_cell_through_the_runner(tmp_path):
    from modelopt.results import store as results
    from modelopt.run import runner

    suite = parse(SUITE.replace("backend: [cpu, ", "backend: ["))
    runner.run(suite, tmp_path, jobs=2)
    (rec,) = results.read(tmp_path)
    assert rec.status == "ok", rec.error
    assert rec.metrics["ddp_startup_s"] > 0 and rec.metrics["accuracy"] > 0.4


PRELOAD_PROBE = """
import json, torch
seen = []
def record(name, result=None):
    def call(*args, **kwargs):
        seen.append(name)
        return result
    return call
torch.cuda._device_count_nvml = lambda: 1  # NVML sees a GPU, as on a GPU machine
torch._C._cuda_getDeviceCount = record("cudaGetDeviceCount (cuInit)", 1)
# torch.accelerator.current_accelerator is left as it is: it reads what torch was built with
# ("does NOT poison fork", torch's docs), and torch 2.11's benchmark timer asks it on import
torch.accelerator.current_stream = record("current_stream (a CUDA context)")
torch.cuda._lazy_init = record("_lazy_init (a CUDA context)")
import modelopt.run.preload
print(json.dumps(seen))
"""


def test_the_forkserver_keeps_what_it_holds_out_of_the_cells_collections():
    """A cell collects garbage before its memory window: over the server's half a million
    objects that took 0.35 s a cell and copied their shared pages. Frozen, the collection
    sees only the cell's own."""
    import subprocess
    import sys

    probe = "import gc, modelopt.run.preload\nprint(gc.get_freeze_count())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=300, check=True)
    assert int(out.stdout.split()[-1]) > 100_000  # the imports and warm-up: torch, sklearn, ...


def test_the_forkserver_never_touches_the_cuda_driver():
    """Every cell and timing process forks from the forkserver (run/preload.py): had it
    called cuInit, none of them could use CUDA on a GPU machine. Its imports and warm-up,
    with torch's ways into the driver recorded instead of called."""
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_NVML_BASED_CUDA_CHECK"}
    out = subprocess.run([sys.executable, "-c", PRELOAD_PROBE], capture_output=True, text=True,
                         timeout=300, env=env, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_cell_trains_and_is_timed_in_processes_forked_from_the_forkserver(tmp_path):
    from modelopt.results import latency
    from modelopt.results import store as results
    from modelopt.run import runner

    suite = parse(SUITE.replace("backend: [cpu, {name: ddp, world_size: 2, dist_backend: gloo}]",
                                "backend: [{name: cuda}]"))
    runner.run(suite, tmp_path, jobs=1, timing_processes=2)  # the lease is short
    (rec,) = results.read(tmp_path)
    assert rec.status == "ok", rec.error
    assert rec.metrics["peak_cuda_mb"] > 0
    assert {r["device"] for r in latency.read(tmp_path)["rows"]} == {"cuda:0"}


def test_gd_with_epochs_takes_the_same_steps_on_cpu_and_ddp():
    """One planning path: a full-batch optimizer's epoch is one step under ddp too (the ranks
    once planned their own steps and trained ceil(n / batch) per epoch)."""
    cells = parse(SUITE.replace("optimizer: {name: sgd, lr: 0.1}", "optimizer: {name: gd, lr: 0.1}")
                  .replace("train: {steps: 20,", "train: {epochs: 3,")).cells
    cpu_cfg, ddp_cfg = cells
    single = train_here(cpu_cfg.backend.build(), cpu_cfg, 0).outcome
    ranked = ddp_cfg.backend.build().train(ddp_cfg, 0, load_data(ddp_cfg, 0)).outcome
    assert single.steps == ranked.steps == 3
    assert ranked.samples == single.samples  # each step the whole training split, globally


def test_a_diverging_ddp_cell_is_diverged_not_failed():
    """Every rank sees the non-finite loss at the same step (all-reduced): a result."""
    from modelopt.run.cell import run_cell

    cfg = parse(SUITE.replace("optimizer: {name: sgd, lr: 0.1}", "optimizer: {name: sgd, lr: 1e30}")
                ).cells[1]
    out = run_cell(cfg, 0)
    assert out.status == "diverged" and "NaN/inf at train step" in out.error
    assert ranks_alive() == []


def test_a_ddp_cell_ended_at_its_timeout_leaves_no_rank_and_no_folder(tmp_path):
    """The scheduler's SIGTERM killed the cell's process at once: its ranks were left to
    torch's parent-death signal and its rendezvous folder stayed."""
    mark, scratch = uuid.uuid4().hex, tmp_path / "tmp"
    scratch.mkdir()
    (tmp_path / "s.yaml").write_text(SUITE.replace("model: {name: mlp, hidden: 16}",
                                                   "model: {name: test_crash, how: sleep}")
                                     .replace("eval_every: 10}", "eval_every: 10, timeout_s: 8}")
                                     .replace("backend: [cpu, ", "backend: ["))
    env = {**os.environ, "MODELOPT_TEST_MARK": mark, "TMPDIR": str(scratch)}
    r = subprocess.run([sys.executable, "-m", "modelopt", "run", str(tmp_path / "s.yaml"),
                        "--out", str(tmp_path / "o"), "--jobs", "2"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert "1 timeout" in r.stderr, r.stderr
    deadline = time.monotonic() + 10
    while leftovers(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [" ".join(p.cmdline())[:200] for p in leftovers(mark)] == []
    # torch keeps its compile cache there; the cell's own folder (tempfile's tmp*) is gone
    assert [p.name for p in scratch.iterdir() if p.name.startswith("tmp")] == []


def test_a_full_batch_under_ranks_is_the_same_samples_every_step():
    """Cut to a multiple of the world size, a full batch dropped another sample each epoch:
    the objective changed from step to step, no longer gradient descent."""
    import numpy as np

    from modelopt.run.train import _memory_batches
    from modelopt.techniques.data import to_data

    x = np.arange(14, dtype=np.float32).reshape(7, 2)  # column 0 names the sample
    data = to_data("t", x, np.arange(7) % 2, x[:2], np.arange(2), 2)
    gens = [_memory_batches(data, 6, 0, (r, 2), "cpu", whole=True) for r in (0, 1)]
    steps = [sorted(v for g in gens for v in next(g)[0][:, 0].tolist()) for _ in range(4)]
    assert steps == [[0.0, 2.0, 4.0, 6.0, 8.0, 10.0]] * 4, steps
