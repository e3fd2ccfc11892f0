"""Packing cells onto the machine: one child process per cell x seed (or a Ray task), time
limits, and the records they become."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Callable

from modelopt.results.record import ERRORS, Record
from modelopt.run import backends, dense, outcome
from modelopt.run.processes import context, ctrl_c_interrupts, end, exit_reason, now
from modelopt.spec.cell import Cell, Choice
from modelopt.spec.schema import Suite


@dataclass
class Job:
    cell: Cell
    seed: int
    slots: int  # cores it takes (the backend says how many)
    gpus: int
    timeout_s: float | None
    unavailable: str | None = None  # why this machine cannot run its backend
    threads: int = 1  # intra-op threads of the cell's process
    dense: str | None = None  # its training key, where other cells of the run share it


def job(cell: Cell, seed: int, jobs: int, shared: set[str] = frozenset()) -> Job:
    """A cell x seed with what its backend takes of the machine (at most all of it), and the
    worker processes of a dataset that streams (each rank's own, under ddp): cores too, or
    cells would oversubscribe.
    `shared`: the training keys several of the run's cells share (dense.shared_keys)."""
    timeout = cell.train.settings.timeout_s
    try:
        b = cell.backend.build()
    except backends.BackendUnavailable as exc:
        return Job(cell, seed, 1, 0, timeout, str(exc))
    ranks = getattr(b, "world_size", 1) if cell.backend.info.ranks else 1
    cores = b.cores() + ranks * _loader_workers(cell.data.dataset)
    k = dense.key(cell, seed)
    return Job(cell, seed, max(1, min(cores, jobs)), b.gpus(), timeout, None, b.threads or 1,
               k if k in shared else None)


def _loader_workers(dataset: Choice) -> int:
    workers = dataset.info.workers
    return workers(dataset.spec()) if workers else 0


@dataclass
class Summary:
    counts: dict = field(default_factory=dict)
    interrupted: bool = False
    # cells the suite expects to fail (expect_failure) that finished ok: their reason may be gone
    passed_unexpectedly: list[str] = field(default_factory=list)
    timing_kept: bool = False  # trained nothing: the saved models' timing stands (runner)

    def add(self, status: str, n: int = 1, expected: str | None = None, cell: str = "") -> None:
        """Count `n` records of `status`; a failure the suite expects counts as
        '<status> (expected)', which the exit status and --fail-fast do not count."""
        if expected and status in ERRORS:
            status = f"{status} (expected)"
        elif expected and status == "ok":
            self.passed_unexpectedly.append(cell)
        self.counts[status] = self.counts.get(status, 0) + n

    @property
    def failed(self) -> int:
        """Cells that failed or ran out of time (what --fail-fast and the exit code count)."""
        return sum(self.counts.get(s, 0) for s in ERRORS)


def _child_main(conn, cell: Cell, cell_id: str, seed: int, threads: int,
                model_dir: str | None, env: dict | None = None,
                dense_path: str | None = None, dense_dir: str | None = None,
                own_dir: str | None = None) -> None:
    """Runs in a fresh process (forkserver, or a Ray worker): what happens here cannot hurt
    the run."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from modelopt.run.cell import run_cell

    result = outcome.payload(lambda: run_cell(cell, seed, threads, dense_path=dense_path,
                                                   dense_dir=dense_dir),
                             cell_id, seed, model_dir, env, own_dir, cell)
    if conn is None:
        return result
    conn.send(("result", result))
    conn.close()


@dataclass
class Active:
    job: Job
    proc: object
    conn: object
    started: float
    deadline: float | None
    started_at: str  # wall-clock time for the record


class Scheduler:
    """Packs cell processes onto `jobs` slots. Cells only train and count here: latency is
    timed afterwards, side by side, by the timing stage (timing.py), so no cell needs the
    machine alone."""

    def __init__(self, suite: Suite, jobs: int, on_record: Callable[[Record], None] | None = None,
                 model_dir: str | None = None, fail_fast: bool = False,
                 commit: str | None = None, dense_dir: str | None = None,
                 own_dir: str | None = None):
        self.suite, self.jobs = suite, jobs
        self.on_record, self.model_dir, self.fail_fast = on_record, model_dir, fail_fast
        self.commit, self.dense_dir = commit, dense_dir
        self.own_dir = own_dir  # the run's private copies of its models (timing.save_own)
        self.active: dict = {}
        self.summary = Summary()

    def emit(self, job: Job, started_at: str, duration: float, payload: dict) -> Record:
        rec = outcome.record(self.suite, job.cell, job.seed, started_at, duration, payload,
                             self.commit)
        self.summary.add(rec.status, expected=self.suite.expected_failure(rec.cell_id),
                         cell=f"{rec.cell_id} seed {rec.seed}")
        if self.on_record:
            self.on_record(rec)
        return rec

    def unavailable(self, job: Job) -> bool:
        """Record a cell whose backend this machine lacks (failed, or skipped if the suite
        says so) instead of starting it."""
        if job.unavailable:
            skip = self.suite.spec.skip_unavailable
            error = job.unavailable + ("" if skip else "; or set skip_unavailable: true in "
                                       "the suite to record such cells as skipped")
            self.emit(job, now(), 0.0, {"status": "skipped" if skip else "failed",
                                        "error": error})
        return bool(job.unavailable)

    def _start(self, job: Job) -> None:
        ctx = context()
        parent, child = ctx.Pipe()
        # not a daemon: a cell may start processes of its own (ddp ranks)
        proc = ctx.Process(target=_child_main, daemon=False,
                           args=(child, job.cell, job.cell.cell_id, job.seed, job.threads,
                                 self.model_dir, None, self.dense_path(job), self.dense_dir,
                                 self.own_dir))
        # Ctrl-C / SIGTERM wait until the process is started and registered, so that the
        # interrupt ends it instead of orphaning a cell forked a moment before
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            proc.start()
            t = time.monotonic()
            self.active[parent] = Active(job, proc, parent, t,
                                         t + job.timeout_s if job.timeout_s else None, now())
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        child.close()

    def dense_path(self, job: Job) -> str | None:
        """Where the job's trained network is kept for the others of its training prefix."""
        if job.dense is None or self.dense_dir is None:
            return None
        return os.path.join(self.dense_dir, f"{job.dense}.pt")

    def _waits(self, job: Job) -> bool:
        """A cell whose training another running cell is doing waits for it (then loads it)
        rather than training it a second time or holding a slot idle on the lock; a GPU
        cell waits while another runs (two on one GPU would slow each other's training and
        blur their peaks; CPU cells still run beside it)."""
        if job.gpus and any(a.job.gpus for a in self.active.values()):
            return True
        path = self.dense_path(job)
        return (path is not None and not os.path.exists(path)
                and any(a.job.dense == job.dense for a in self.active.values()))

    def _finish(self, a: Active, payload: dict) -> None:
        self.active.pop(a.conn, None)
        a.conn.close()
        a.proc.join(timeout=5)
        end(a.proc)
        self.emit(a.job, a.started_at, time.monotonic() - a.started, payload)

    def _collect(self, timeout: float) -> None:
        """Records of the cells that reported, died or ran out of time."""
        for conn in wait(list(self.active), timeout=timeout):
            a = self.active[conn]
            try:
                _, payload = conn.recv()
            except (EOFError, OSError):  # died without a word: crash, os._exit, OOM kill
                a.proc.join(timeout=5)
                payload = {"status": "failed", "error": exit_reason(a.proc.exitcode)}
            self._finish(a, payload)
        t = time.monotonic()
        for a in list(self.active.values()):
            if a.deadline is not None and t > a.deadline:
                end(a.proc)
                self._finish(a, {"status": "timeout", "error": f"exceeded timeout_s="
                                 f"{a.job.timeout_s:g}; the cell's process was ended"})

    def run(self, jobs_list: list[Job]) -> Summary:
        ctrl_c_interrupts()
        pending = deque(jobs_list)
        try:
            while pending or self.active:
                if self.fail_fast and self.summary.failed:
                    pending.clear()
                    if not self.active:
                        break
                free = self.jobs - sum(a.job.slots for a in self.active.values())
                for job in list(pending):
                    if job.slots > free:  # in order: a wide cell is not starved by narrow ones
                        break
                    if self._waits(job):
                        continue
                    pending.remove(job)
                    if not self.unavailable(job):
                        self._start(job)
                        free -= job.slots
                self._collect(self._next_deadline())
        except KeyboardInterrupt:
            self.summary.interrupted = True
            for a in list(self.active.values()):
                end(a.proc)
            self.active.clear()
        except BaseException:  # e.g. a record that cannot be written: no cell outlives the run
            for a in list(self.active.values()):
                end(a.proc)
            self.active.clear()
            raise
        return self.summary

    def _next_deadline(self) -> float:
        deadlines = [a.deadline for a in self.active.values() if a.deadline is not None]
        if not deadlines:
            return 1.0
        return max(0.01, min(1.0, min(deadlines) - time.monotonic()))


class RayScheduler(Scheduler):
    """Cells as Ray tasks, each asking for its cores and GPUs (the backend says how many).
    Results stream back to the driver, which appends them as they finish. Models are saved
    to `model_dir`, which must be on a file system the driver sees (a local cluster's is);
    latency is timed afterwards on the driver's machine by the timing stage."""

    def __init__(self, *args, address: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.address = address

    def run(self, jobs_list: list[Job]) -> Summary:
        import ray

        env_vars = {k: os.environ[k] for k in ("MODELOPT_PLUGINS", "PYTHONPATH", "MODELOPT_CACHE")
                    if k in os.environ}
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": env_vars} if env_vars else None)
        # max_calls=1: each cell in a fresh worker process, as a local run's (a reused worker
        # carried threads, deterministic mode and plugins from cell to cell)
        remote = ray.remote(max_calls=1)(_child_main)
        pending: dict = {}
        try:
            for job in jobs_list:
                if self.unavailable(job):
                    continue
                ref = remote.options(num_cpus=job.slots, num_gpus=job.gpus, max_retries=0).remote(
                    None, job.cell, job.cell.cell_id, job.seed, job.threads,
                    self.model_dir, {"executor": "ray"}, self.dense_path(job), self.dense_dir,
                    self.own_dir)
                pending[ref] = (job, time.monotonic(), now())
            while pending:
                self._wait_ray(ray, pending)
        except KeyboardInterrupt:
            self.summary.interrupted = True
            for ref in pending:
                ray.cancel(ref, force=True)
        return self.summary

    def _wait_ray(self, ray, pending: dict) -> None:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        t = time.monotonic()
        for ref in done:
            job, t0, started = pending.pop(ref)
            try:
                payload = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - the worker died: crash, OOM
                payload = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            self.emit(job, started, t - t0, payload)
        for ref, (job, t0, started) in list(pending.items()):
            # Ray's clock starts at submission: a queued task's limit counts its wait
            if job.timeout_s and t - t0 > job.timeout_s + 60 * len(pending):
                ray.cancel(ref, force=True)
                pending.pop(ref)
                self.emit(job, started, t - t0, {"status": "timeout", "error":
                          f"exceeded timeout_s={job.timeout_s:g} (Ray task cancelled)"})
