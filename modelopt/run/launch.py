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
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable

from modelopt.results import latency
from modelopt.results.record import Record
from modelopt.run import outcome, runner
from modelopt.run.processes import context, end, exit_reason, now
from modelopt.run.scheduler import Job, Scheduler, Summary
from modelopt.spec.cell import Cell
from modelopt.spec.schema import Suite

# How long a rank waits for the others (for rank 0's plan, or for rank 0 to finish measuring
# a cell) before giving up: generous, since rank 0 may run long cells meanwhile.
WAIT = timedelta(hours=24)
# How long a rank tries to reach the store rank 0 (or torchrun's agent) serves before it
# says nobody is there: the default timeout of torch's own process groups.
REACH = timedelta(minutes=30)
# A rank whose collective failed waits this long for the rank that caused it to say why.
PEER_GRACE_S = 10.0
# The store's key under which a rank that will join no cell says why.
REFUSED = "refused"


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


def connect(launch: Launch, timeout: timedelta, host: bool = False,
            reach: timedelta | None = None):
    """A client of the launcher's store, tried for `reach` (default: `timeout`), whose
    waits last `timeout`; `host`: serve it (rank 0's parent does so when the launcher does
    not, as torch's own env:// rendezvous decides)."""
    import torch.distributed as dist

    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    try:
        store = dist.TCPStore(launch.addr, launch.port,
                              launch.world if host and not agent else None,
                              is_master=host and not agent, timeout=reach or timeout,
                              wait_for_workers=False)
    except dist.DistNetworkError as exc:
        if host and not agent:  # serving it: the port is another's
            raise LaunchError(f"rank 0 cannot serve the run's store at {launch.addr}:"
                              f"{launch.port} ({exc}): is another run using MASTER_PORT? "
                              "Give every rank another port") from None
        raise LaunchError(
            f"rank {launch.rank}: nothing answered at {launch.addr}:{launch.port} within "
            f"{(reach or timeout).total_seconds():g} s: rank 0 serves the run's store there "
            "(or torchrun's agent does); start it with the same MASTER_ADDR and MASTER_PORT, "
            f"or check that it has not already stopped ({exc})") from None
    store.set_timeout(timeout)
    return dist.PrefixStore(launch.prefix, store)


# ---------------------------------------------------------------- one rank of one cell

def _rank_child(index: int, cell: Cell, cell_id: str, seed: int, launch: Launch, key: str,
                model_dir: str, timeout_s: float | None, out: str) -> None:
    """One rank of one ddp cell, in a fresh process (torch.multiprocessing calls it with its
    index, 0): joins the cell's process group and trains its share; rank 0 then evaluates
    and measures like any cell. Its payload goes to the file `out`."""
    import torch.distributed as dist

    from modelopt.run import backends, ddp
    from modelopt.run.cell import run_cell
    from modelopt.run.train import Diverged
    from modelopt.spec import plugins

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    timeout = ddp.group_timeout(timeout_s)
    env = {"launcher": "torchrun" if "TORCHELASTIC_RUN_ID" in os.environ else "env",
           "world_size": launch.world, "local_world_size": launch.local_world}

    def train():
        plugins.load(cell.plugins)
        backend = backends.launched(cell.backend.spec(), launch.rank, launch.world,
                                    launch.local_rank, launch.local_world)
        threads = backend.prepare(backend.threads or 1)
        ddp.join_group(backend, launch.rank, launch.world, timeout,
                       store=dist.PrefixStore(f"{key}/group/", connect(launch, timeout)))
        try:
            if launch.rank == 0:
                return run_cell(cell, seed, threads, backend=backend)
            with contextlib.suppress(Diverged):  # every rank stops there; rank 0 records it
                backend.train(cell, seed, None)
            return None
        finally:
            dist.destroy_process_group()

    try:
        cell = train()
        result = outcome.from_output(cell, cell_id, seed, model_dir, env) if cell else {"status": "ok"}
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a recorded status
        result = {**outcome.failure(exc, f"rank {launch.rank}: "), "peer": ddp.is_peer_error(exc)}
    _write(out, result)
    if result["status"] == "failed":
        # let the parent post this error before the other ranks see this one leave (they
        # would then fail with a mere "connection closed")
        until = time.monotonic() + PEER_GRACE_S
        while time.monotonic() < until and not os.path.exists(out + ".posted"):
            time.sleep(0.05)


def _write(path: str, doc: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, default=str)
    os.replace(tmp, path)  # atomic: the parent reads all of it or nothing


def run_rank(launch: Launch, store, key: str, job: Job, model_dir: str) -> dict:
    """Run this rank's share of one cell in a child process; its result payload.

    A failure anywhere is posted under `key/abort` (the first one wins), and every rank then
    ends its child: a process group cannot go on without one of its ranks."""
    import tempfile

    import torch.multiprocessing as tmp

    if store.check([REFUSED]):  # a rank left before any cell: no group can form
        return {"status": "failed", "error": store.get(REFUSED).decode()}
    context()  # the forkserver, preloaded, that start_processes forks from
    abort = f"{key}/abort"
    deadline = time.monotonic() + job.timeout_s if job.timeout_s else None
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "payload.json")
        ctx = tmp.start_processes(_rank_child, nprocs=1, join=False, start_method="forkserver",
                                  args=(job.cell, job.cell.cell_id, job.seed, launch, key,
                                        model_dir, job.timeout_s, out))
        try:
            payload = _watch(ctx, out, store, abort, deadline, launch, job)
            if payload["status"] in ("failed", "timeout"):
                payload = _first_failure(store, abort, payload)
                open(out + ".posted", "w").close()
        finally:
            for proc in ctx.processes:
                proc.join(timeout=5)
                end(proc)
    return payload


def _watch(ctx, out: str, store, abort: str, deadline: float | None, launch: Launch,
           job: Job) -> dict:
    """Wait for the child's payload, the end of the cell elsewhere, or the time limit."""
    import torch.multiprocessing as tmp

    while True:
        if os.path.exists(out):
            with open(out) as f:
                return json.load(f)
        try:
            if ctx.join(timeout=1.0) and not os.path.exists(out):  # exited without a word
                return {"status": "failed", "error": f"rank {launch.rank}: "
                        + exit_reason(ctx.processes[0].exitcode)}
        except (tmp.ProcessExitedException, tmp.ProcessRaisedException) as exc:
            if not os.path.exists(out) and isinstance(exc, tmp.ProcessRaisedException):
                return {"status": "failed", "error": f"rank {launch.rank}: {exc}"}
            if not os.path.exists(out):
                return {"status": "failed", "error": f"rank {launch.rank}: "
                        + exit_reason(exc.exit_code if exc.signal_name is None else -_signum(exc))}
        if store.check([abort]):  # another rank failed or ran out of time
            return json.loads(store.get(abort))
        if store.check([REFUSED]):  # a rank left before any cell: the group is never whole
            return {"status": "failed", "error": store.get(REFUSED).decode()}
        if deadline is not None and time.monotonic() > deadline:
            return {"status": "timeout", "error": f"exceeded timeout_s={job.timeout_s:g} "
                    f"(on rank {launch.rank}); every rank's process was ended"}


def _signum(exc) -> int:
    return signal.Signals[exc.signal_name].value


def _first_failure(store, abort: str, payload: dict) -> dict:
    """The cell's status and error: those of the first rank to fail. A rank whose collective
    broke gives the rank that caused it a moment to post its own reason first."""
    if payload.get("peer"):
        end_at = time.monotonic() + PEER_GRACE_S
        while time.monotonic() < end_at and not store.check([abort]):
            time.sleep(0.1)
    own = json.dumps({k: payload.get(k) for k in ("status", "error", "traceback")})
    return json.loads(store.compare_set(abort, "", own))


# ---------------------------------------------------------------- the whole run

def _interrupt(signum, frame):
    # torchrun ends its workers with SIGTERM: leave through `finally`, ending our children
    raise KeyboardInterrupt


def _agree(suite: Suite, store, launch: Launch, todo: list[Job] | None) -> list[Job]:
    """The cells that span ranks, in rank 0's order: rank 0 posts its plan, the others read
    it and check that they loaded the same suite."""
    if launch.rank == 0:
        ranked = [j for j in todo if j.cell.backend.info.ranks]
        store.set("plan", json.dumps({"hash": suite.content_hash, "host": socket.gethostname(),
                                      "jobs": [[j.cell.cell_id, j.seed] for j in ranked]}))
        return ranked
    store.wait(["plan"], WAIT)
    plan = json.loads(store.get("plan"))
    if "error" in plan:
        store.add("left", 1)
        raise LaunchError(f"rank 0 on {plan['host']} stopped before any cell: {plan['error']}")
    if plan["hash"] != suite.content_hash:
        why = (f"rank {launch.rank} on {socket.gethostname()} loaded a different suite than "
               f"rank 0 on {plan['host']} (content hash {suite.content_hash} vs "
               f"{plan['hash']}): every node needs the same suite file")
        store.compare_set(REFUSED, "", why)  # rank 0 fails the cells that need this rank
        store.add("left", 1)
        raise LaunchError(why)
    cells = {c.cell_id: c for c in suite.cells}
    return [Job(cells[cid], seed, 1, 0, cells[cid].train.settings.timeout_s)
            for cid, seed in plan["jobs"]]


def _ranked_cells(ranked: list[Job], store, launch: Launch, sched: Scheduler | None,
                  model_dir: str) -> bool:
    """Train every cell that spans ranks together; rank 0 records each (through `sched`).
    Returns whether --fail-fast stopped the run."""
    for k, job in enumerate(ranked):
        key = f"cell/{k}"
        started_at, t0 = now(), time.monotonic()
        payload = run_rank(launch, store, key, job, model_dir)
        if sched is None:  # not rank 0: wait for rank 0 to record it
            store.wait([f"{key}/done"], WAIT)
            if store.get(f"{key}/done").decode() == "stop":
                return True
            continue
        rec = sched.emit(job, started_at, time.monotonic() - t0, payload)
        stopped = bool(sched.fail_fast and sched.summary.failed)
        store.set(f"{key}/done", "stop" if stopped else rec.status)
        if stopped:
            return True
    return False


def run(suite: Suite, out_dir: str | Path, launch: Launch, *, jobs: int, resume: bool = True,
        force: bool = False, fail_fast: bool = False,
        on_record: Callable[[Record], None] | None = None,
        on_plan: Callable[[int, int], None] | None = None,
        timing_processes: int | None = None,
        on_timing: Callable[[int, int, str], None] | None = None, train_once: bool = True,
        timing_stage: bool = True) -> Summary:
    """This rank's part of a launched run. Every rank must load the same suite. Rank 0
    writes the results directory, holding it as a plain run does (runner.writing)."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        # the store first: rank 0 may serve it, and a refusal below is posted there for the
        # other ranks to say (they waited for a store that never came)
        store = connect(launch, WAIT, host=launch.rank == 0, reach=REACH)
        o = Options(jobs, fail_fast, on_record, on_plan, timing_processes, on_timing,
                    train_once, timing_stage)
        with contextlib.ExitStack() as held:
            todo, sched, own = None, None, None
            if launch.rank == 0:
                try:
                    done, own = held.enter_context(runner.writing(Path(out_dir), suite, resume,
                                                                  force))
                    todo = runner.plan_jobs(suite, o.jobs, None, done, o.train_once)
                    if o.on_plan:
                        o.on_plan(len(todo), len(done))
                    sched = runner.scheduler(suite, Path(out_dir), o.jobs, o.on_record,
                                             o.fail_fast, train_once=o.train_once, own_dir=own)
                except BaseException as exc:  # Ctrl-C too: the others hear it
                    _refuse(store, launch, exc)
                    raise
            return _run(suite, Path(out_dir), launch, o, store, todo, sched, own)
    finally:
        signal.signal(signal.SIGTERM, previous)


def tell_rank0(launch: Launch | None, why: str) -> None:
    """A rank other than 0 that stops before its part (its suite did not load here: a data
    folder or a plugin this node lacks) says why where rank 0 looks, so rank 0 fails the
    ddp cells at once rather than waiting for their process groups' timeout."""
    if launch is None or launch.rank == 0:
        return
    try:
        store = connect(launch, WAIT, reach=REACH)
    except LaunchError:
        return  # nobody to tell: the error is said here already
    store.compare_set(REFUSED, "", f"rank {launch.rank} on {socket.gethostname()}: {why}")
    store.add("left", 1)


def _refuse(store, launch: Launch, exc: BaseException) -> None:
    """Rank 0 stopped before posting its plan: said to the other ranks where they wait for
    it, and rank 0 (which may serve the store) stays until they have read it."""
    why = str(exc) or type(exc).__name__
    store.set("plan", json.dumps({"error": why, "host": socket.gethostname()}))
    _wait_for_the_others(store, launch.world - 1,
                         limit_s=5.0 if isinstance(exc, KeyboardInterrupt) else 60.0)


@dataclass(frozen=True)
class Options:
    """What `run` was asked beside the suite and where."""
    jobs: int
    fail_fast: bool
    on_record: Callable | None
    on_plan: Callable | None
    timing_processes: int | None
    on_timing: Callable | None
    train_once: bool
    timing_stage: bool


def _run(suite: Suite, out: Path, launch: Launch, o: Options, store, todo: list[Job] | None,
         sched: Scheduler | None, own: str | None) -> Summary:
    ranked = _agree(suite, store, launch, todo)
    summary = sched.summary if sched else Summary()
    try:
        stopped = _ranked_cells(ranked, store, launch, sched, str(out / latency.MODELS_DIR))
    except KeyboardInterrupt:
        summary.interrupted = True
        return summary
    if sched is None:
        store.add("left", 1)
        return summary
    # the rest of the suite runs here, on rank 0's machine, as in a plain run
    rest = [j for j in todo if j not in ranked]
    if rest and not stopped:
        sched.run(rest)
    _wait_for_the_others(store, launch.world - 1)
    if not summary.interrupted and o.timing_stage:  # the machine is rank 0's to time on now
        runner.time_or_keep(summary, out, suite, o.timing_processes, o.on_timing, own)
    return summary


def _wait_for_the_others(store, n: int, limit_s: float = 60.0) -> None:
    """Rank 0 may serve the store: it leaves only once the other ranks have read their last
    key from it (or after limit_s: a rank that died cannot say so)."""
    until = time.monotonic() + limit_s
    while store.add("left", 0) < n and time.monotonic() < until:
        time.sleep(0.2)
