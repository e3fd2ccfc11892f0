"""A suite's run: what is left to do (resume, shards), the scheduler, appending each record,
then the timing stage (merging shard directories: merge.py)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from modelopt.results import latency, store
from modelopt.results import metrics as M
from modelopt.results.compare import CompareError, parse_threshold
from modelopt.results.files import no_links, open_own, write_whole
from modelopt.results.metrics import RUN_META
from modelopt.results.record import Record
from modelopt.run import changes, dense, measures, shards, timing
from modelopt.run.backends import cpu_count
from modelopt.run.scheduler import Job, RayScheduler, Scheduler, Summary, job
from modelopt.spec.schema import Suite, SuiteError
from modelopt.techniques import tasks


class ResumeError(RuntimeError):
    """The output directory holds results of a different suite."""


def git_commit(here: Path | None = None) -> str | None:
    """modelopt's own commit: of the checkout it runs from (not the user's working
    directory; `-dirty` where the package's files differ from it, as `git describe --dirty`
    says), else as pip recorded it for a git install (direct_url.json), else its version."""
    from importlib import metadata

    here = here or Path(__file__).resolve().parents[1]
    try:  # a source checkout of modelopt (an installed copy may sit inside another repository)
        if not (here.parent / "pyproject.toml").is_file():
            raise OSError("not a source checkout")
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=here)
        if out.returncode == 0 and out.stdout.strip():
            # no optional locks: a status that refreshed the index would lock it, and one
            # ended by the timeout (a busy machine) or a killed run left the lock behind
            changed = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain",
                                      "--", "."],
                                     capture_output=True, text=True, timeout=5, cwd=here)
            return out.stdout.strip() + ("-dirty" if changed.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        dist = metadata.distribution("modelopt")
    except metadata.PackageNotFoundError:
        return None
    url = json.loads(dist.read_text("direct_url.json") or "{}")
    commit = (url.get("vcs_info") or {}).get("commit_id")
    return commit[:7] if commit else f"v{dist.version}"


def default_jobs() -> int:
    return cpu_count()


def plan_jobs(suite: Suite, jobs: int, shard: tuple[int, int] | None = None,
              done: set | None = None, train_once: bool = True) -> list[Job]:
    # of the whole suite, not what is left: a resumed run finds what the first one saved
    shared = dense.shared_keys(suite.runs()) if train_once else set()
    return [job(cell, seed, jobs, shared) for cell, seed in shards.runs_of(suite, shard)
            if not (done and (cell.cell_id, seed) in done)]


def declarations(suite: Suite) -> tuple[list[dict], list[dict]]:
    """The suite's tasks and the figures its measures and tasks add to the table, declared."""
    named = {json.dumps(m.spec(), sort_keys=True): m for c in suite.cells for m in c.metrics}
    figures = list({d["name"]: d for d in measures.declarations(list(named.values()))}.values())
    task_docs, own = tasks.declarations(c.task for c in suite.cells)
    return task_docs, figures + [M.as_dict(M.declare(m)) for m in own]  # a task's own figures


def check_figures(suite: Suite) -> None:
    """The figures a suite names, read before anything runs (SuiteError, naming the key):
    each measure in `metrics:` applies to the task of every cell that names it (else the
    cell would record nothing of it, silently), and `thresholds:` reads as the gate will
    read it: each a figure the gate judges (the suite's own included) with a number."""
    for cell in suite.cells:
        for spec in cell.metrics:
            fits = spec.build().tasks
            if fits is not None and cell.task not in fits:
                raise SuiteError(suite.path, "metrics", f"metric '{spec.name}' applies to "
                                 f"{'/'.join(fits)} cells, but cell {cell.cell_id} is a "
                                 f"{cell.task} task; name it only where it applies (a cell's "
                                 "own metrics)")
    try:  # a measure's figure that clashes with another's, or with modelopt's own
        M.declare_all(declarations(suite)[1], suite.path)
    except ValueError as exc:
        raise SuiteError(suite.path, "metrics", str(exc)) from None
    for metric, text in suite.spec.thresholds.items():
        try:
            parse_threshold(f"{metric}:{text}")
        except CompareError as exc:
            raise SuiteError(suite.path, f"thresholds.{metric}", str(exc)) from None


def prepare(out_dir: Path, suite: Suite, resume: bool, force: bool,
            shard: tuple[int, int] | None = None) -> set:
    """Note the suite beside its results and return the (cell_id, seed) pairs already ok
    (none without `resume`); refuses results of a changed suite unless forced. A shard's
    run says so: its cells are the suite's, its results a share of them."""
    meta_path = out_dir / RUN_META
    meta = {"suite": suite.name, "content_hash": suite.content_hash, "path": suite.path,
            "description": suite.spec.description, "thresholds": suite.spec.thresholds,
            "baseline": suite.baseline, "expected_failures": dict(suite.expected_failures)}
    meta["tasks"], meta["metrics"] = declarations(suite)
    meta.update(changes.identity(suite))
    if shard is not None:
        meta["shard"] = f"{shard[0]}/{shard[1]}"
    old = store.read_meta(out_dir) if meta_path.exists() else None
    if old is not None and old.suite != suite.name:  # not even forced: compare, time and
        raise ResumeError(  # report read a results directory as one suite's
            f"{out_dir} holds results of suite '{old.suite}', not '{suite.name}': a results "
            "directory holds one suite. Use another --out (or, if the suite was renamed, its "
            "old name).")
    why = None if force else refusal(out_dir, old, suite)
    if why:  # --no-resume too: it reruns this suite's cells, and must not mix two suites
        raise ResumeError(why)
    meta_path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(meta_path, json.dumps(meta, indent=2).encode())
    path = store.results_path(out_dir)
    if not path.exists():
        return set()
    store.repair(path)
    if not resume:
        return set()
    runs = {(cell.cell_id, seed) for cell, seed in suite.runs()}  # not a forced run's old cells
    # a result of other data or code than the cell reads now is run again (--force)
    return {r.key for r in store.read(path)
            if r.ok and r.key in runs and suite.current(r.cell_id, r.extra)}


def refusal(out_dir: Path, old: store.RunMeta | None, suite: Suite) -> str | None:
    """Why a results directory of this suite's name is not resumed with it, saying what
    changed; None where it is (same content, or the same cells, seeds and inputs in another
    order: suite.json keeps them to tell)."""
    if old is None or old.content_hash == suite.content_hash:
        return None
    changed = changes.since(out_dir, old, suite)
    if not changed and old.cells is not None:
        return None  # reordered: the hash lists them in the suite's order
    return (f"{out_dir} holds results of suite '{old.suite}' with a different content "
            f"(hash {old.content_hash} vs {suite.content_hash}): "
            + ("; ".join(changed) if changed else
               "its cells, seeds and inputs are the same, so an older modelopt hashed them (cell "
               "ids hash what a cell sets since this version; see docs/reference/suite-file.md)")
            + ". Use another --out for a run of its own, or --force to run here what is new or "
            "changed beside what the directory holds (its other results stay, in the file and "
            "in its report).")


def run(suite: Suite, out_dir: str | Path, *, jobs: int | None = None, resume: bool = True,
        force: bool = False, shard: tuple[int, int] | None = None, fail_fast: bool = False,
        on_record: Callable[[Record], None] | None = None,
        on_plan: Callable[[int, int], None] | None = None, executor: str = "local",
        ray_address: str | None = None, timing_processes: int | None = None,
        on_timing: Callable[[int, int, str], None] | None = None, train_once: bool = True,
        timing_stage: bool = True) -> Summary:
    """Run every cell x seed of `suite` not already ok in `out_dir`, appending each result;
    then (`timing_stage`) time every ok cell's saved models side by side (timing.run_stage).
    `train_once`: cells that share their training share one trained network (dense.py)."""
    out = Path(out_dir)
    jobs = jobs or default_jobs()
    with writing(out, suite, resume, force, shard) as (done, own):
        todo = plan_jobs(suite, jobs, shard, done, train_once)
        if on_plan:  # of this shard's runs: a directory may hold another shard's too
            on_plan(len(todo), len(done & shards.keys_of(suite, shard)))
        sched = scheduler(suite, out, jobs, on_record, fail_fast, executor, ray_address,
                          train_once, own)
        summary = sched.run(todo)
        if not summary.interrupted and timing_stage:
            time_or_keep(summary, out, suite, timing_processes, on_timing, own)
    return summary


@contextlib.contextmanager
def writing(out: Path, suite: Suite, resume: bool, force: bool,
            shard: tuple[int, int] | None = None):
    """What a run holds while it writes `out` (a plain run, or rank 0 of a launched one): the
    writer lock; the runs already ok (`prepare`); and its own pickled copies of its models,
    private to it (0700, deleted at the end): what its timing stage times where a model
    cannot be rebuilt from data. Yields (done, that folder)."""
    with writer_lock(out):
        done = prepare(out, suite, resume, force, shard)
        if not resume:  # a rerun from scratch trains its networks and teachers anew
            shutil.rmtree(out / dense.DIR, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="modelopt-own-") as own:
            yield done, own


LOCK_FILE = ".modelopt.lock"


class RunLocked(ResumeError):
    """Another run is writing the results directory."""


@contextlib.contextmanager
def writer_lock(out: Path):
    """One `modelopt run` writes a results directory at a time. The lock is the kernel's
    (flock): it goes with the process that held it, so a killed run leaves nothing to clear
    and the next run takes the directory over."""
    out.mkdir(parents=True, exist_ok=True)
    no_links(out)  # what this run writes stays in the directory (results/files.py)
    path = out / LOCK_FILE
    fd = open_own(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = path.read_text(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunLocked(f"{out} is being written by another modelopt run ({holder}); wait for "
                        "it to finish, or give this run another --out") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, started "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def being_written(out: Path) -> str | None:
    """Who holds the writer lock of a results directory (None: no run is writing it)."""
    path = out / LOCK_FILE
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return path.read_text(errors="replace").strip() or "another process"
    finally:
        os.close(fd)


def scheduler(suite: Suite, out: Path, jobs: int, on_record, fail_fast: bool,
              executor: str = "local", ray_address: str | None = None,
              train_once: bool = True, own_dir: str | None = None) -> Scheduler:
    """A scheduler that appends each record to `out` before telling `on_record`."""
    path = store.results_path(out)

    def record(rec: Record) -> None:
        store.append(path, rec)
        if on_record:
            on_record(rec)

    model_dir = str((out / latency.MODELS_DIR).resolve())  # Ray workers have another cwd
    kwargs = dict(on_record=record, fail_fast=fail_fast, model_dir=model_dir, commit=git_commit(),
                  dense_dir=str((out / dense.DIR).resolve()) if train_once else None,
                  own_dir=own_dir)
    if executor == "ray":
        return RayScheduler(suite, jobs, address=ray_address, **kwargs)
    return Scheduler(suite, jobs, **kwargs)


def time_or_keep(summary: Summary, out: Path, suite: Suite, processes: int | None = None,
                 progress=None, own_dir: str | None = None) -> None:
    """The timing stage, unless the run saved no new model (no cell ended ok: a resumed run
    whose failed or expected-to-fail cells ran again) and timing.json already timed every
    saved model under the same plan and baseline (summary.timing_kept): the same models
    timed again would only move their figures by noise, and cost a minute. `modelopt time`
    re-times."""
    meta = store.read_meta(out)
    if not summary.counts.get("ok") and latency.timed_already(
            out, {r.key for r in _ok(out, suite)}, latency.Plan.given(processes),
            meta.baseline if meta else None):
        summary.timing_kept = True
    else:
        summary.interrupted = not time_run(out, suite, processes, progress, own_dir)


def _ok(out: Path, suite: Suite) -> list[Record]:
    path = store.results_path(out)
    return [r for r in store.read(path) if r.ok and r.suite == suite.name] \
        if path.exists() else []


def time_run(out: Path, suite: Suite, processes: int | None = None,
             progress: Callable[[int, int, str], None] | None = None,
             own_dir: str | None = None) -> bool:
    """The timing stage over the suite's ok cells in `out`; False if interrupted."""
    recs = _ok(out, suite)
    ok = {r.key for r in recs}
    missing = ok - {(a.cell_id, a.seed) for a in latency.artifacts(out, ok)}
    if missing:
        logging.getLogger("modelopt").warning(
            "%d ok cell x seed without a saved model get no latency (see their "
            "extra.timing_error), e.g. %s seed %s", len(missing), *sorted(missing)[0])
    # each cell as recorded: the suite's, and the records' for cells it no longer has (an
    # earlier run of a suite whose weights file changed, added to with --force)
    cells = {**{r.cell_id: r.cell for r in recs}, **{c.cell_id: c.as_config() for c in suite.cells}}
    try:
        timing.run_stage(out, suite.name, ok, cells, timing.UserCode.of_suite(suite),
                         plan=latency.Plan.given(processes),
                         progress=progress,
                         own_dir=own_dir)
    except KeyboardInterrupt:
        return False
    return True
