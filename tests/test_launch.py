"""`modelopt run` under torchrun: real torchrun processes, gloo on the CPU."""

import os
import socket
import subprocess
import sys
import uuid
from datetime import timedelta

import pytest

from modelopt.results import store as results
from modelopt.run import launch, runner
from modelopt.spec.suite import parse
from tests.processes import leftovers

SUITE = """
name: launched
seeds: [0]
defaults:
  dataset: {name: synthetic, n_samples: 400, n_features: 10, n_classes: 3}
  model: {name: mlp, hidden: 16}
  optimizer: {name: sgd, lr: 0.1}
  train: {steps: 20, batch_size: 64, eval_every: 10}
matrix:
  backend: [cpu, {name: ddp, world_size: 2, dist_backend: gloo}]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], mark: str, nodes: int = 1) -> list[subprocess.CompletedProcess]:
    """`torchrun ... -m modelopt run ...`: `nodes` agents of one rank each meeting at a c10d
    rendezvous (two "machines" on this one), or one agent of two ranks."""
    env = {**os.environ, "MODELOPT_TEST_MARK": mark}
    if nodes == 1:
        head = ["--standalone", "--nproc-per-node", "2"]
    else:
        head = ["--nnodes", str(nodes), "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", mark]
    cmd = [sys.executable, "-m", "torch.distributed.run", *head, "-m", "modelopt", "run", *args]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(nodes)]
    out = []
    for p in procs:
        text, _ = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(cmd, p.returncode, text))
    return out


def test_two_nodes_train_the_ddp_cell_as_the_spawned_ranks_do(tmp_path):
    (tmp_path / "s.yaml").write_text(SUITE)
    mark = uuid.uuid4().hex
    runs = torchrun([str(tmp_path / "s.yaml"), "--out", str(tmp_path / "launched")], mark, 2)
    assert all(r.returncode == 0 for r in runs), "\n".join(r.stdout[-3000:] for r in runs)
    recs = {r.cell["backend"]["name"]: r for r in results.read(tmp_path / "launched")}
    ddp, cpu = recs["ddp"], recs["cpu"]
    assert ddp.status == "ok" and cpu.status == "ok", (ddp.error, cpu.error)
    assert ddp.cell["backend"]["world_size"] == 2 and ddp.metrics["ddp_world_size"] == 2
    assert ddp.env["launcher"] == "torchrun" and ddp.env["world_size"] == 2
    assert ddp.metrics["train_samples_s"] > 0
    assert results.load(tmp_path / "launched")["latency_ms_p50"].gt(0).all()  # timed on rank 0

    # the same cell with 2 spawned ranks: the same data, shards and all-reduce, the same loss
    spawned = subprocess.run([sys.executable, "-m", "modelopt", "run", str(tmp_path / "s.yaml"),
                              "--out", str(tmp_path / "spawned"), "-q"],
                             env={**os.environ, "MODELOPT_TEST_MARK": mark},
                             capture_output=True, text=True, timeout=300)
    assert spawned.returncode == 0, spawned.stderr[-3000:]
    (ref,) = [r for r in results.read(tmp_path / "spawned") if r.cell["backend"]["name"] == "ddp"]
    assert ref.cell_id == ddp.cell_id and "launcher" not in ref.env
    for metric in ("loss", "accuracy", "f1_macro"):
        assert ref.metrics[metric] == ddp.metrics[metric], metric
    assert leftovers(mark) == []


def test_a_rank_that_raises_fails_only_its_cell(tmp_path):
    suite = SUITE.replace("backend: [cpu, {name: ddp, world_size: 2, dist_backend: gloo}]", """\
backend: [{name: ddp, dist_backend: gloo}]
  model: [{name: test_crash, how: raise, rank: 1}, {name: mlp, hidden: 16}]""")
    (tmp_path / "s.yaml").write_text(suite)
    mark = uuid.uuid4().hex
    (run,) = torchrun([str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"), "--no-timing"],
                      mark)
    assert run.returncode == 1, run.stdout[-3000:]  # a failed cell: exit 1, after the rest ran
    assert not (tmp_path / "o" / "timing.json").exists()  # --no-timing holds under torchrun
    recs = {r.cell["model"]["name"]: r for r in results.read(tmp_path / "o")}
    assert recs["test_crash"].status == "failed"
    # the cell's error is rank 1's own, not rank 0's broken connection
    assert recs["test_crash"].error.startswith("rank 1: RuntimeError: deliberate failure")
    assert recs["mlp"].status == "ok"  # the next cell ran in a fresh process group
    assert leftovers(mark) == []


def test_a_launched_run_holds_its_results_directory_as_a_plain_run_does(tmp_path):
    """Rank 0 wrote into a directory another run was writing: the lock was a plain run's."""
    (tmp_path / "s.yaml").write_text(SUITE)
    with runner.writer_lock(tmp_path / "o"):
        (run,) = torchrun([str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o")],
                          uuid.uuid4().hex)
    assert run.returncode != 0 and "is being written by another modelopt run" in run.stdout, \
        run.stdout[-3000:]
    assert not (tmp_path / "o" / "results.jsonl").exists()
    # without torchrun's agent to end them, the other ranks hear why rank 0 stopped (they
    # waited 24 hours for a store that never came)
    with runner.writer_lock(tmp_path / "o"):
        procs = env_ranks(tmp_path / "s.yaml", tmp_path / "o", uuid.uuid4().hex)
        (_, rank1), (_, rank0) = (p.communicate(timeout=120) for p in procs)
    assert [p.returncode for p in procs] == [2, 2], (rank1, rank0)
    assert "is being written by another modelopt run" in rank0
    assert "rank 0 on " in rank1 and "stopped before any cell" in rank1, rank1


def env_ranks(suite, out, mark: str, other=None) -> list[subprocess.Popen]:
    """Ranks 1 and 0 of `modelopt run` as a launcher other than torchrun starts them (rank 1
    with the `other` suite where given)."""
    port, procs = free_port(), []
    for rank in (1, 0):  # rank 1 first: it waits for rank 0's store to appear
        env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHELASTIC")}
        env.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), MODELOPT_TEST_MARK=mark)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "modelopt", "run", str(other if rank and other else suite),
             "--out", str(out), "-q"],
            env=env, stderr=subprocess.PIPE, text=True))
    return procs


def test_ranks_started_by_another_launcher(tmp_path):
    """No torchrun agent: rank 0 serves the store itself, and stays until rank 1 is done."""
    (tmp_path / "s.yaml").write_text(SUITE.replace("backend: [cpu, ", "backend: ["))
    mark = uuid.uuid4().hex
    procs = env_ranks(tmp_path / "s.yaml", tmp_path / "o", mark)
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    (rec,) = results.read(tmp_path / "o")
    assert rec.status == "ok" and rec.env["world_size"] == 2
    assert rec.env["launcher"] == "env"
    assert leftovers(mark) == []


@pytest.mark.parametrize("change, said", [
    (("steps: 20", "steps: 21"), "loaded a different suite than rank 0"),
    (("seeds: [0]", "seeds: [0]\nplugins: [not_on_this_node]"), "not_on_this_node"),
])
def test_a_rank_whose_suite_differs_or_fails_to_load_fails_the_ranked_cells_at_once(
        tmp_path, change, said):
    """Rank 1 refused rank 0's plan (or could not load the suite) and left; rank 0 waited in
    the cell's process group for it until the group's timeout (30 minutes by default)."""
    (tmp_path / "s.yaml").write_text(SUITE)
    (tmp_path / "t.yaml").write_text(SUITE.replace(*change))
    mark = uuid.uuid4().hex
    procs = env_ranks(tmp_path / "s.yaml", tmp_path / "o", mark, other=tmp_path / "t.yaml")
    (_, rank1), (_, rank0) = (p.communicate(timeout=240) for p in procs)
    assert [p.returncode for p in procs] == [2, 1], (rank1, rank0)
    assert said in rank1, rank1
    recs = {r.cell["backend"]["name"]: r for r in results.read(tmp_path / "o")}
    assert recs["cpu"].status == "ok"  # the rest of the suite ran on rank 0
    assert recs["ddp"].status == "failed" and "rank 1 on " in recs["ddp"].error
    assert said in recs["ddp"].error, recs["ddp"].error
    assert leftovers(mark) == []


def test_a_rank_that_reaches_no_store_says_so():
    """A rank started after rank 0 had stopped tried to connect for 24 hours."""
    lone = launch.Launch(1, 2, 1, 2, "127.0.0.1", free_port(), 0)
    with pytest.raises(launch.LaunchError, match=r"rank 1: nothing answered at 127.0.0.1:\d+ "
                                                 r"within 1 s: rank 0 serves the run's store"):
        launch.connect(lone, launch.WAIT, reach=timedelta(seconds=1))
    with socket.socket() as taken:  # rank 0 serving on a port another holds
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        host = launch.Launch(0, 2, 0, 2, "127.0.0.1", taken.getsockname()[1], 0)
        with pytest.raises(launch.LaunchError, match=r"rank 0 cannot serve the run's store at "
                                                     r"127.0.0.1:\d+ .*another port"):
            launch.connect(host, launch.WAIT, host=True, reach=timedelta(seconds=1))


def test_the_launched_world_is_every_ddp_cells_world_size():
    plain = parse(SUITE)
    launched = parse(SUITE, launched_world=4)
    worlds = [c.as_config()["backend"].get("world_size") for c in launched.cells]
    assert worlds == [None, 4]  # the cpu cell is untouched
    assert plain.cells[0].cell_id == launched.cells[0].cell_id
    assert plain.cells[1].cell_id != launched.cells[1].cell_id  # a 4-rank result is its own cell
    assert plain.content_hash != launched.content_hash


def test_launcher_environment_is_read_and_checked():
    assert launch.from_env({}) is None
    env = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}
    got = launch.from_env(env)
    assert (got.rank, got.world, got.local_rank, got.local_world, got.addr, got.port) == (
        1, 4, 1, 2, "node0", 29500)
    with pytest.raises(launch.LaunchError, match="MASTER_ADDR"):
        launch.from_env({k: v for k, v in env.items() if k != "MASTER_ADDR"})
    with pytest.raises(launch.LaunchError, match="outside"):
        launch.from_env({**env, "RANK": "4"})
