"""Runs cells: one child process per cell x seed, time limits, packing onto cores, resume."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import subprocess
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from multiprocessing.connection import wait
from pathlib import Path
from typing import Callable

from modelopt import results, timing
from modelopt.suite import Cell, Suite

STATUSES = ("ok", "failed", "diverged", "timeout", "skipped")
META_FILE = "suite.json"


class ResumeError(RuntimeError):
    """The output directory holds results of a different suite."""


# ---------------------------------------------------------------- child side

def _child_main(conn, config: dict, cell_id: str, seed: int, threads: int,
                model_dir: str | None) -> None:
    """Runs in a fresh process (forkserver): what happens here cannot hurt the run."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from modelopt.cell import run_cell

    conn.send(("result", cell_payload(lambda: run_cell(config, seed, threads), cell_id, seed,
                                      model_dir)))
    conn.close()


def cell_payload(run, cell_id: str, seed: int, model_dir: str | None) -> dict:
    """A cell's outcome as a record payload: its figures, and its models saved for the
    timing stage; an exception becomes `failed` with the traceback's last lines."""
    try:
        out = run()
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a recorded status
        return failure(exc)
    if model_dir:
        save_models(out, model_dir, cell_id, seed)
    return {"status": out.status, "error": out.error, "metrics": out.metrics,
            "curves": out.curves, "env": out.env, "extra": out.extra}


def save_models(out, model_dir: str, cell_id: str, seed: int) -> None:
    """An ok cell's models, for the timing stage. One that cannot be saved (an unpicklable
    plugin model) costs its latency, not its figures: the reason goes into extra."""
    if out.status != "ok":
        return
    try:
        timing.save_all(model_dir, cell_id, seed, out.models, out.example, out.batch)
    except Exception as exc:  # noqa: BLE001 - the figures stand; only latency is lost
        out.extra["timing_error"] = f"model not saved for timing: {type(exc).__name__}: {exc}"


def failure(exc: BaseException) -> dict:
    tb = traceback.format_exc().strip().splitlines()
    return {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
            "traceback": "\n".join(tb[-12:])}


_CTX = None


def context():
    """A forkserver context whose server has torch and modelopt imported: each cell starts
    as a cheap fork of it, with a fresh memory high-water mark (README, "How we
    measure, and why"). glibc's malloc keeps its defaults: users train with them, and a fixed mmap
    threshold slowed training to 0.75x and doubled batch latency here."""
    global _CTX
    if _CTX is None:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["modelopt.preload"])
        _CTX = ctx
    return _CTX


# ---------------------------------------------------------------- parent side

@dataclass
class Job:
    cell: Cell
    seed: int
    slots: int
    timeout_s: float | None


@dataclass
class Active:
    job: Job
    proc: object
    conn: object
    started: float
    deadline: float | None
    started_at: str  # wall-clock time for the record


@dataclass
class Summary:
    counts: dict = field(default_factory=dict)
    skipped_done: int = 0
    interrupted: bool = False

    @property
    def failed(self) -> int:
        return sum(v for k, v in self.counts.items() if k not in ("ok", "skipped"))


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def cell_slots(cell: Cell, jobs: int) -> int:
    """Worker slots (cores) a cell takes: its thread count (or ranks); at most all of them."""
    backend = cell.config["backend"]
    need = backend.get("threads") or 1
    if backend["name"] == "ddp":
        need = backend.get("world_size", 2) * (backend.get("threads") or 1)
    return max(1, min(int(need), jobs))


def shard_of(cell_id: str, n: int) -> int:
    """Stable shard (1..n) of a cell: from its id, so every machine agrees."""
    return int(hashlib.sha1(cell_id.encode()).hexdigest(), 16) % n + 1


def plan_jobs(suite: Suite, jobs: int, shard: tuple[int, int] | None = None,
              done: set | None = None) -> list[Job]:
    out = []
    for cell, seed in suite.runs():
        if shard and shard_of(cell.cell_id, shard[1]) != shard[0]:
            continue
        if done and (cell.cell_id, seed) in done:
            continue
        out.append(Job(cell, seed, cell_slots(cell, jobs), cell.config["train"].get("timeout_s")))
    return out


def check_resume(out_dir: Path, suite: Suite, force: bool) -> set:
    """(cell_id, seed) pairs already ok; refuses results of a changed suite unless forced."""
    meta_path = out_dir / META_FILE
    res_path = results.results_path(out_dir)
    meta = {"suite": suite.name, "content_hash": suite.content_hash, "path": suite.path,
            "description": suite.spec.description, "thresholds": suite.spec.thresholds,
            "baseline": suite.spec.baseline}
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("content_hash") != suite.content_hash and not force:
            raise ResumeError(
                f"{out_dir} holds results of suite '{old.get('suite')}' with a different "
                f"content (hash {old.get('content_hash')} vs {suite.content_hash}). Use another "
                "--out, or --force to add to it anyway.")
    meta_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = meta_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(meta_path)
    if not res_path.exists():
        return set()
    results.repair(res_path)
    return {(r["cell_id"], r["seed"]) for r in results.read(res_path) if r.get("status") == "ok"}


def make_record(suite: Suite, job: Job, started_at: str, duration: float, payload: dict,
                commit: str | None) -> dict:
    env = dict(payload.get("env") or {})
    env["git_commit"] = commit
    error = payload.get("error")
    if payload.get("traceback"):
        error = f"{error}\n{payload['traceback']}"
    from modelopt.data import task_of

    # the task travels with the record: report, compare and export read files only
    return {"suite": suite.name, "suite_hash": suite.content_hash, "cell_id": job.cell.cell_id,
            "seed": job.seed, "cell": job.cell.config, "task": task_of(job.cell.config["dataset"]),
            "status": payload["status"],
            "error": error, "metrics": payload.get("metrics") or {},
            "curves": payload.get("curves") or [], "env": env,
            "extra": payload.get("extra") or {}, "started_at": started_at,
            "duration_s": duration, "group": job.cell.group}


class Scheduler:
    """Packs cell processes onto `jobs` slots. Cells only train and count here: latency is
    timed afterwards, side by side, by the timing stage (timing.py), so no cell needs the
    machine alone."""

    def __init__(self, suite: Suite, jobs: int,
                 on_record: Callable[[dict], None] | None = None, model_dir: str | None = None,
                 fail_fast: bool = False):
        from modelopt.backends import available

        self.suite, self.jobs = suite, jobs
        self.on_record, self.model_dir, self.fail_fast = on_record, model_dir, fail_fast
        self.available = available
        self.commit = git_commit()
        self.active: dict = {}
        self.summary = Summary()

    def _start(self, job: Job) -> None:
        ctx = context()
        parent, child = ctx.Pipe()
        threads = job.cell.config["backend"].get("threads") or 1
        # not a daemon: a cell may start processes of its own (ddp ranks)
        proc = ctx.Process(target=_child_main, daemon=False,
                           args=(child, job.cell.config, job.cell.cell_id, job.seed, threads,
                                 self.model_dir))
        proc.start()
        child.close()
        now = time.monotonic()
        self.active[parent] = Active(job, proc, parent, now,
                                     now + job.timeout_s if job.timeout_s else None, _now())

    def _finish(self, a: Active, payload: dict) -> dict:
        self.active.pop(a.conn, None)
        a.conn.close()
        a.proc.join(timeout=5)
        if a.proc.is_alive():
            a.proc.kill()
            a.proc.join()
        rec = make_record(self.suite, a.job, a.started_at,
                          time.monotonic() - a.started, payload, self.commit)
        self._emit(rec)
        return rec

    def _emit(self, rec: dict) -> None:
        self.summary.counts[rec["status"]] = self.summary.counts.get(rec["status"], 0) + 1
        if self.on_record:
            self.on_record(rec)

    def _unavailable(self, job: Job) -> bool:
        """Record a cell whose backend this machine lacks (failed, or skipped if the suite
        says so) instead of starting it."""
        reason = self.available(job.cell.config["backend"])
        if reason:
            status = "skipped" if self.suite.spec.skip_unavailable else "failed"
            self._emit(make_record(self.suite, job, _now(), 0.0,
                                   {"status": status, "error": reason}, self.commit))
        return bool(reason)

    def _kill(self, a: Active) -> None:
        a.proc.terminate()
        a.proc.join(timeout=3)
        if a.proc.is_alive():
            a.proc.kill()
            a.proc.join()

    def run(self, jobs_list: list[Job]) -> Summary:
        pending = deque(jobs_list)
        free = self.jobs
        try:
            while pending or self.active:
                if self.fail_fast and self.summary.failed:
                    pending.clear()
                    if not self.active:
                        break
                while pending and pending[0].slots <= free:
                    job = pending.popleft()
                    if self._unavailable(job):
                        continue
                    self._start(job)
                    free -= job.slots
                timeout = self._next_deadline()
                ready = wait(list(self.active), timeout=timeout)
                for conn in ready:
                    a = self.active.get(conn)
                    if a is None:
                        continue
                    try:
                        _, payload = conn.recv()
                    except (EOFError, OSError):  # died without a word: crash, os._exit, OOM kill
                        a.proc.join(timeout=5)
                        code = a.proc.exitcode
                        self._finish(a, {"status": "failed", "error": _exit_reason(code)})
                        free += a.job.slots
                        continue
                    self._finish(a, payload)
                    free += a.job.slots
                now = time.monotonic()
                for a in list(self.active.values()):
                    if a.deadline is not None and now > a.deadline:
                        self._kill(a)
                        self._finish(a, {"status": "timeout", "error":
                                         f"exceeded timeout_s={a.job.timeout_s:g}; the cell's "
                                         "process was ended"})
                        free += a.job.slots
        except KeyboardInterrupt:
            self.summary.interrupted = True
            for a in list(self.active.values()):
                self._kill(a)
            self.active.clear()
        return self.summary

    def _next_deadline(self) -> float:
        deadlines = [a.deadline for a in self.active.values() if a.deadline is not None]
        if not deadlines:
            return 1.0
        return max(0.01, min(1.0, min(deadlines) - time.monotonic()))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        import signal

        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        hint = " (SIGKILL: often the out-of-memory killer)" if name == "SIGKILL" else ""
        return f"the cell's process died from signal {name}{hint}"
    return f"the cell's process exited with code {code} without reporting a result"


def _ray_cell(config: dict, cell_id: str, seed: int, threads: int, model_dir: str) -> dict:
    """A cell as a Ray task (in a Ray worker process). Its models are saved to `model_dir`,
    which must be on a file system the driver sees (a local cluster's is)."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from modelopt.cell import run_cell

    payload = cell_payload(lambda: run_cell(config, seed, threads), cell_id, seed, model_dir)
    if payload.get("env") is not None:
        payload["env"] = {**payload["env"], "executor": "ray"}
    return payload


class RayScheduler(Scheduler):
    """Cells as Ray tasks, each asking for its CPUs (and a GPU for cuda cells; world_size of
    them for ddp). Results stream back to the driver, which appends them as they finish.
    Latency is timed afterwards on the driver's machine by the timing stage, like any run's."""

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
        remote = ray.remote(_ray_cell)
        pending: dict = {}
        try:
            for job in jobs_list:
                if self._unavailable(job):
                    continue
                b = job.cell.config["backend"]
                gpus = 1 if b["name"] == "cuda" else (
                    b.get("world_size", 1) if b["name"] == "ddp" and b.get("device") == "cuda"
                    else 0)
                ref = remote.options(num_cpus=job.slots, num_gpus=gpus, max_retries=0).remote(
                    job.cell.config, job.cell.cell_id, job.seed, b.get("threads") or 1,
                    self.model_dir)
                pending[ref] = (job, time.monotonic(), _now())
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                now = time.monotonic()
                for ref in done:
                    job, t0, started = pending.pop(ref)
                    try:
                        payload = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - the worker died: crash, OOM
                        payload = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                    self._emit(make_record(self.suite, job, started, now - t0, payload,
                                           self.commit))
                for ref, (job, t0, started) in list(pending.items()):
                    # Ray's clock starts at submission: a queued task's limit counts its wait
                    if job.timeout_s and now - t0 > job.timeout_s + 60 * len(pending):
                        ray.cancel(ref, force=True)
                        pending.pop(ref)
                        self._emit(make_record(self.suite, job, started, now - t0, {
                            "status": "timeout", "error": f"exceeded timeout_s={job.timeout_s:g} "
                            "(Ray task cancelled)"}, self.commit))
        except KeyboardInterrupt:
            self.summary.interrupted = True
            for ref in pending:
                ray.cancel(ref, force=True)
        return self.summary


def default_jobs() -> int:
    from modelopt.measure import cpu_count

    return cpu_count()


def run(suite: Suite, out_dir: str | Path, *, jobs: int | None = None, resume: bool = True,
        force: bool = False, shard: tuple[int, int] | None = None, fail_fast: bool = False,
        on_record: Callable[[dict], None] | None = None,
        on_plan: Callable[[int, int], None] | None = None, executor: str = "local",
        ray_address: str | None = None, timing_processes: int | None = None,
        on_timing: Callable[[int, int], None] | None = None) -> Summary:
    """Run every cell x seed of `suite` not already ok in `out_dir`, appending each result;
    then time every ok cell's saved models side by side (timing.run_stage)."""
    out = Path(out_dir)
    jobs = jobs or default_jobs()
    done = check_resume(out, suite, force) if resume else set()
    if not resume and results.results_path(out).exists():
        results.repair(out)
        check_resume(out, suite, True)
    todo = plan_jobs(suite, jobs, shard, done)
    if on_plan:
        on_plan(len(todo), len(done))
    path = results.results_path(out)

    def record(rec: dict) -> None:
        results.append(path, rec)
        if on_record:
            on_record(rec)

    model_dir = str((out / timing.MODELS_DIR).resolve())  # Ray workers have another cwd
    if executor == "ray":
        sched = RayScheduler(suite, jobs, on_record=record, fail_fast=fail_fast,
                             address=ray_address, model_dir=model_dir)
    else:
        sched = Scheduler(suite, jobs, on_record=record, fail_fast=fail_fast,
                          model_dir=model_dir)
    summary = sched.run(todo)
    summary.skipped_done = len(done)
    if not summary.interrupted:
        summary.interrupted = not time_run(out, suite, timing_processes, on_timing)
    return summary


def time_run(out: Path, suite: Suite, processes: int | None = None,
             progress: Callable[[int, int], None] | None = None) -> bool:
    """The timing stage over the suite's ok cells in `out`; False if interrupted."""
    ok = {(r["cell_id"], r["seed"]) for r in results.read(out) if r.get("status") == "ok"
          and r.get("suite") == suite.name} if results.results_path(out).exists() else set()
    missing = ok - {(a.cell_id, a.seed) for a in timing.artifacts(out, ok)}
    if missing:
        logging.getLogger("modelopt").warning(
            "%d ok cell x seed without a saved model get no latency (see their "
            "extra.timing_error), e.g. %s seed %s", len(missing), *sorted(missing)[0])
    try:
        timing.run_stage(out, suite.name, ok, processes=processes or timing.PROCESSES,
                         progress=progress)
    except KeyboardInterrupt:
        return False
    return True


def merge(dirs: list[str | Path], out_dir: str | Path) -> int:
    """Combine shard directories of one suite into `out_dir`; returns the records written.
    Refuses directories of different suites (name or content)."""
    metas = []
    for d in dirs:
        meta = Path(d) / META_FILE
        if not meta.is_file():
            raise ResumeError(f"{d}: no {META_FILE} here; is it a `modelopt run` output directory?")
        metas.append(json.loads(meta.read_text()))
    hashes = {(m.get("suite"), m.get("content_hash")) for m in metas}
    if len(hashes) > 1:
        listing = "; ".join(f"{d}: {m.get('suite')} ({m.get('content_hash')})"
                            for d, m in zip(dirs, metas))
        raise ResumeError(f"cannot merge results of different suites: {listing}")
    records: dict = {}
    for d in dirs:
        if not results.results_path(d).exists():  # a shard that had no cells
            continue
        for rec in results.read(d):
            key = (rec["cell_id"], rec["seed"])
            # an ok result beats a failed one for the same cell x seed
            if key not in records or records[key].get("status") != "ok":
                records[key] = rec
    out = Path(out_dir)
    if results.results_path(out).exists():
        raise ResumeError(f"{out} already holds results; merge into a new directory")
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).write_text(json.dumps(metas[0], indent=2))
    for rec in records.values():
        results.append(out, rec)
    # the saved models come along; their latency is timed anew by `modelopt time`, since
    # shards timed on different machines cannot be paired
    import shutil

    for d in dirs:
        for p in timing.artifacts(d):
            if (p.cell_id, p.seed) in records:
                (out / timing.MODELS_DIR).mkdir(exist_ok=True)
                shutil.copy2(p.path, out / timing.MODELS_DIR / p.path.name)
    return len(records)
