"""`modelopt run` under torchrun (or any launcher that sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT): the launched processes train each ddp cell together.

A launched process (a "rank parent") stays light. For each ddp cell it starts one child
process that joins a process group made for that cell alone, so a cell that raises, hangs or
runs past its time limit is ended like any other cell and the next one starts clean. The rank
parents agree on the plan and on the end of each cell through the launcher's key-value store
(the TCPStore at MASTER_ADDR:MASTER_PORT). Rank 0 measures, writes the results and then runs
the suite's cells of other backends on its own machine, as a plain run would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import wait
from pathlib import Path
from typing import Callable

from modelopt import results, runner, timing
from modelopt.suite import Suite

# How long a rank waits for the others (for rank 0's plan, or for rank 0 to finish measuring
# a cell) before giving up: generous, since rank 0 may run long cells meanwhile.
WAIT = timedelta(hours=24)
# A process group's collectives give up after this when a cell has no timeout_s.
GROUP_TIMEOUT = timedelta(minutes=30)
# A rank whose collective failed waits this long for the rank that caused it to say why.
PEER_GRACE_S = 10.0


class LaunchError(RuntimeError):
    """The launcher's environment is incomplete, or the ranks disagree about the suite."""


@dataclass(frozen=True)
class Launch:
    rank: int
    world: int
    local_rank: int
    local_world: int
    addr: str
    port: int
    attempt: int  # torchrun's restart count: keys of an earlier attempt are not ours

    @property
    def prefix(self) -> str:
        return f"modelopt/attempt_{self.attempt}/"


def from_env(environ=None) -> Launch | None:
    """The launch this process belongs to, or None when it was not started by a launcher."""
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    missing = [k for k in ("LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
    if missing:
        raise LaunchError(f"RANK and WORLD_SIZE are set but {', '.join(missing)} not: start "
                          "`modelopt run` with torchrun, or set all of RANK, WORLD_SIZE, "
                          "LOCAL_RANK, MASTER_ADDR and MASTER_PORT")
    try:
        launch = Launch(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"]),
                        int(env.get("LOCAL_WORLD_SIZE", 1)), env["MASTER_ADDR"],
                        int(env["MASTER_PORT"]), int(env.get("TORCHELASTIC_RESTART_COUNT", 0)))
    except ValueError as exc:
        raise LaunchError(f"a launcher variable is not a number: {exc}") from None
    if not 0 <= launch.rank < launch.world:
        raise LaunchError(f"RANK={launch.rank} is outside WORLD_SIZE={launch.world}")
    return launch


def connect(launch: Launch, timeout: timedelta, host: bool = False):
    """A client of the launcher's store; `host`: serve it (rank 0's parent does so when the
    launcher does not, as torch's own env:// rendezvous decides)."""
    import torch.distributed as dist

    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(launch.addr, launch.port, launch.world if host and not agent else None,
                          is_master=host and not agent, timeout=timeout,
                          wait_for_workers=False)
    return dist.PrefixStore(launch.prefix, store)


# ---------------------------------------------------------------- one rank of one cell

def _child_main(conn, config: dict, cell_id: str, seed: int, launch: Launch, key: str,
                model_dir: str, timeout_s: float | None) -> None:
    """One rank of one ddp cell, in a fresh process: joins the cell's process group, trains
    its share; rank 0 then evaluates and measures like any cell."""
    import torch
    import torch.distributed as dist

    from modelopt import backends, distributed
    from modelopt.cell import run_cell, setup
    from modelopt.suite import registries

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    # the parents end a cell at timeout_s; the group's own limit only catches what they miss
    timeout = max(GROUP_TIMEOUT, timedelta(seconds=(timeout_s or 0) + 60))
    try:
        try:
            registries()
            backend = backends.launched(config["backend"], launch.local_rank, launch.local_world)
            threads = setup(backend, backend.threads or 1)
            if backend.is_cuda:
                torch.cuda.set_device(backend.device)
            store = dist.PrefixStore(f"{key}/group/", connect(launch, timeout))
            dist.init_process_group(backend.dist_backend, store=store, rank=launch.rank,
                                     world_size=launch.world, timeout=timeout)
            if launch.rank == 0:
                out = run_cell(config, seed, threads, backend=backend)
                runner.save_models(out, model_dir, cell_id, seed)
                launcher = "torchrun" if "TORCHELASTIC_RUN_ID" in os.environ else "env"
                out.env.update({"launcher": launcher, "world_size": launch.world,
                                "local_world_size": launch.local_world})
                result = {"status": out.status, "error": out.error, "metrics": out.metrics,
                          "curves": out.curves, "env": out.env, "extra": out.extra}
            else:
                distributed.train_rank(config, seed, backend)
                result = {"status": "ok"}
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a recorded status
            tb = traceback.format_exc().strip().splitlines()
            result = {"status": "failed", "peer": _is_peer_error(exc),
                      "error": f"rank {launch.rank}: {type(exc).__name__}: {exc}",
                      "traceback": "\n".join(tb[-12:])}
            # let the parent post this error before the other ranks see this one leave
            # (they would then fail with a mere "connection closed")
            with contextlib.suppress(OSError, EOFError):
                conn.send(("result", result))
                if conn.poll(PEER_GRACE_S):
                    conn.recv()
            return
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
        with contextlib.suppress(OSError):  # the parent may have ended the cell meanwhile
            conn.send(("result", result))
    finally:
        conn.close()


def _is_peer_error(exc: BaseException) -> bool:
    """A failed collective: another rank is usually the cause."""
    import torch.distributed as dist

    text = str(exc)
    return isinstance(exc, dist.DistError) or any(
        s in text for s in ("Connection closed by peer", "Connection reset", "gloo", "NCCL"))


def run_rank(launch: Launch, store, key: str, job: runner.Job, model_dir: str) -> dict:
    """Run this rank's share of one cell in a child process; its result payload.

    A failure anywhere is posted under `key/abort` (the first one wins), and every rank then
    ends its child: a process group cannot go on without one of its ranks."""
    ctx = runner.context()
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child_main, daemon=False,
                       args=(child, job.cell.config, job.cell.cell_id, job.seed, launch, key,
                             model_dir, job.timeout_s))
    proc.start()
    child.close()
    abort = f"{key}/abort"
    deadline = time.monotonic() + job.timeout_s if job.timeout_s else None
    payload = None
    try:
        while payload is None:
            if wait([parent], timeout=1.0):
                try:
                    _, payload = parent.recv()
                except (EOFError, OSError):  # died without a word
                    proc.join(timeout=5)
                    payload = {"status": "failed", "error": f"rank {launch.rank}: "
                               + runner._exit_reason(proc.exitcode)}
            elif store.check([abort]):  # another rank failed or ran out of time
                payload = json.loads(store.get(abort))
            elif deadline is not None and time.monotonic() > deadline:
                payload = {"status": "timeout", "error": f"exceeded timeout_s={job.timeout_s:g} "
                           f"(on rank {launch.rank}); every rank's process was ended"}
        if payload["status"] in ("failed", "timeout"):
            payload = _first_failure(store, abort, payload)
            with contextlib.suppress(OSError):
                parent.send("posted")
    finally:
        parent.close()
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    return payload


def _first_failure(store, abort: str, payload: dict) -> dict:
    """The cell's status and error: those of the first rank to fail. A rank whose collective
    broke gives the rank that caused it a moment to post its own reason first."""
    if payload.get("peer"):
        end = time.monotonic() + PEER_GRACE_S
        while time.monotonic() < end and not store.check([abort]):
            time.sleep(0.1)
    own = json.dumps({k: payload.get(k) for k in ("status", "error", "traceback")})
    return json.loads(store.compare_set(abort, "", own))


# ---------------------------------------------------------------- the whole run

def _interrupt(signum, frame):
    # torchrun ends its workers with SIGTERM: leave through `finally`, ending our children
    raise KeyboardInterrupt

def run(suite: Suite, out_dir: str | Path, launch: Launch, *, jobs: int, resume: bool = True,
        force: bool = False, fail_fast: bool = False,
        on_record: Callable[[dict], None] | None = None,
        on_plan: Callable[[int, int], None] | None = None,
        timing_processes: int | None = None) -> runner.Summary:
    """This rank's part of a launched run. Every rank must load the same suite."""
    signal.signal(signal.SIGTERM, _interrupt)
    store = connect(launch, WAIT, host=launch.rank == 0)
    summary = runner.Summary()
    if launch.rank == 0:
        out = Path(out_dir)
        done = runner.check_resume(out, suite, force) if resume else set()
        if not resume and results.results_path(out).exists():
            runner.check_resume(out, suite, True)
        todo = runner.plan_jobs(suite, jobs, None, done)
        summary.skipped_done = len(done)
        ddp = [j for j in todo if j.cell.config["backend"]["name"] == "ddp"]
        store.set("plan", json.dumps({"hash": suite.content_hash, "host": socket.gethostname(),
                                      "jobs": [[j.cell.cell_id, j.seed] for j in ddp]}))
        if on_plan:
            on_plan(len(todo), len(done))
        path, commit = results.results_path(out), runner.git_commit()
    else:
        store.wait(["plan"], WAIT)
        plan = json.loads(store.get("plan"))
        if plan["hash"] != suite.content_hash:
            raise LaunchError(f"rank {launch.rank} loaded a different suite than rank 0 on "
                              f"{plan['host']} (content hash {suite.content_hash} vs "
                              f"{plan['hash']}): every node needs the same suite file")
        cells = {c.cell_id: c for c in suite.cells}
        ddp = [runner.Job(cells[cid], seed, 1, cells[cid].config["train"].get("timeout_s"))
               for cid, seed in plan["jobs"]]

    stopped = False
    try:
        for k, job in enumerate(ddp):
            key = f"cell/{k}"
            started_at, t0 = runner._now(), time.monotonic()
            payload = run_rank(launch, store, key, job, str(Path(out_dir) / timing.MODELS_DIR))
            if launch.rank != 0:
                store.wait([f"{key}/done"], WAIT)
                if store.get(f"{key}/done").decode() == "stop":
                    break
                continue
            rec = runner.make_record(suite, job, started_at, time.monotonic() - t0, payload,
                                     commit)
            results.append(path, rec)
            summary.counts[rec["status"]] = summary.counts.get(rec["status"], 0) + 1
            if on_record:
                on_record(rec)
            stopped = bool(fail_fast and summary.failed)
            store.set(f"{key}/done", "stop" if stopped else rec["status"])
            if stopped:
                break
    except KeyboardInterrupt:
        summary.interrupted = True
        return summary
    if launch.rank != 0:
        store.add("left", 1)
        return summary

    # the rest of the suite runs here, on rank 0's machine, as in a plain run
    rest = [j for j in todo if j.cell.config["backend"]["name"] != "ddp"]
    if rest and not stopped:
        def record(rec: dict) -> None:
            results.append(path, rec)
            if on_record:
                on_record(rec)

        sub = runner.Scheduler(suite, jobs, on_record=record, fail_fast=fail_fast,
                               model_dir=str(out / timing.MODELS_DIR)).run(rest)
        for status, n in sub.counts.items():
            summary.counts[status] = summary.counts.get(status, 0) + n
        summary.interrupted = sub.interrupted
    _wait_for_the_others(store, launch.world - 1)
    if not summary.interrupted:  # the other ranks are done: the machine is rank 0's to time on
        summary.interrupted = not runner.time_run(out, suite, timing_processes)
    return summary


def _wait_for_the_others(store, n: int, limit_s: float = 60.0) -> None:
    """Rank 0 may serve the store: it leaves only once the other ranks have read their last
    key from it (or after limit_s: a rank that died cannot say so)."""
    end = time.monotonic() + limit_s
    while store.add("left", 0) < n and time.monotonic() < end:
        time.sleep(0.2)
