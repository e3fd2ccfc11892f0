"""The results store: one JSON object per line, appended atomically; loaded as a DataFrame."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    ValidationError,
    model_validator,
)

from modelopt.results import latency, tasks, written
from modelopt.results import metrics as M
from modelopt.results.files import ResultsError, inert, open_own, read_json, read_own
from modelopt.results.record import CELL_ID, SAFE_NAME, Record

RESULTS_FILE = "results.jsonl"
__all__ = ["ResultsError", "RunMeta", "append", "load", "read", "read_meta", "repair", "timings"]


CellId = Annotated[str, StringConstraints(pattern=CELL_ID)]
MAX_CELLS = 1_000_000  # the most a suite may declare (spec/schema.py's max_cells)


class Inputs(BaseModel):
    """What a cell read: its data files' fingerprints and the hash of the user's code."""

    model_config = ConfigDict(extra="forbid")
    data_files: dict[Annotated[str, StringConstraints(max_length=200)],
                     Annotated[str, StringConstraints(max_length=200)]] = Field(
        default_factory=dict, max_length=100)
    code: Annotated[str, StringConstraints(max_length=200)] | None = None


class RunMeta(BaseModel):
    """suite.json: what `modelopt run` noted about the suite beside its results."""

    model_config = ConfigDict(extra="allow")
    suite: str = Field(pattern=SAFE_NAME)
    content_hash: str | None = None
    path: str | None = None
    description: str = ""
    thresholds: dict[str, str] = Field(default_factory=dict)
    baseline: dict[str, Any] | None = None
    expected_failures: dict[str, str] = Field(default_factory=dict)  # cell_id -> reason
    metrics: list[dict[str, Any]] = Field(default_factory=list)
    tasks: dict[str, dict[str, Any]] = Field(default_factory=dict)  # name -> TaskInfo facts
    # the run's identity (run/changes.py), absent where an older modelopt wrote the file;
    # typed and bounded: a file from elsewhere is read, never trusted
    cells: list[CellId] | None = Field(None, max_length=MAX_CELLS)
    shard: str | None = Field(None, pattern=r"^\d{1,6}/\d{1,6}$")  # a share of the cells ran
    seeds: list[StrictInt] | None = Field(None, max_length=1_000)
    inputs: dict[CellId, Inputs] | None = Field(None, max_length=MAX_CELLS)
    labels: dict[CellId, Annotated[str, StringConstraints(max_length=2_000)]] | None = Field(
        None, max_length=MAX_CELLS)

    @model_validator(mode="after")
    def _runs_bounded(self) -> RunMeta:
        if len(self.cells or ()) * len(self.seeds or ()) > MAX_CELLS:  # listed run by run
            raise ValueError(f"cells x seeds over {MAX_CELLS:,} runs")
        return self

    def kept(self) -> dict:
        """What the file holds, as a mapping (what it does not hold is absent, not None)."""
        return self.model_dump(exclude_unset=True)


def read_meta(run_dir: str | Path) -> RunMeta | None:
    """A results directory's suite.json, validated; None where there is none."""
    p = Path(run_dir)
    p = (p if p.is_dir() else p.parent) / M.RUN_META
    return read_json(p, RunMeta) if p.is_file() else None


def declare_run(run_dir: str | Path) -> RunMeta | None:
    """Declare the figures and tasks a results directory's run declared; returns its
    suite.json."""
    meta = read_meta(run_dir)
    if meta is not None:
        declare_figures(meta.metrics, meta.tasks, str(Path(run_dir) / M.RUN_META))
    return meta


def declare_figures(metrics: list[dict], task_docs: dict[str, dict], where: str) -> None:
    """Declare the figures and tasks a run declared (suite.json's, or the `modelopt` block of
    a pytest-benchmark JSON); one that cannot be read is a ResultsError naming `where`."""
    try:
        M.declare_all(metrics, where)
        tasks.declare_all(task_docs, where)
    except ValueError as exc:
        raise ResultsError(str(exc)) from None


def results_path(path: str | Path) -> Path:
    p = Path(path)
    return p / RESULTS_FILE if p.is_dir() or not p.suffix else p


def _clean(value):
    """JSON has no NaN/inf: write them as null so every reader accepts the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def append(path: str | Path, record: Record) -> None:
    """Append one whole line, then fsync: a killed run leaves at most one torn last line,
    which `read` skips; a write that fails (a full disk) is cut back off and raised."""
    p = results_path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = record.model_dump(exclude_none=False)
    doc.pop(written.KEY, None)  # a copied record's own digest: sealed anew, or not at all
    body = json.dumps(_clean(doc), sort_keys=True, allow_nan=False).encode()
    line = written.line(body, record.line_state) + b"\n"
    fd = open_own(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    size = os.fstat(fd).st_size
    try:
        sent = 0
        while sent < len(line):  # a short write (a full disk, a file size limit) says so
            n = os.write(fd, line[sent:])
            if n <= 0:
                raise OSError("no bytes sent")
            sent += n
        os.fsync(fd)
    except OSError as exc:
        os.ftruncate(fd, size)  # the record is whole in the file or not there
        raise ResultsError(f"{p}: could not append a whole record ({exc.strerror or exc}); "
                           "the run stops here. Free space, then run the same command again "
                           "to resume") from None
    finally:
        os.close(fd)


def read(path: str | Path, latest: bool = True, verbatim: bool = False) -> list[Record]:
    """All records; with `latest`, only the last one per (cell_id, seed) (a rerun replaces).
    Their text is made inert (files.inert) unless `verbatim` (merge copies records as
    written, checked all the same)."""
    p = results_path(path)
    if not p.exists():
        raise ResultsError(f"{p}: no results file here (run `modelopt run SUITE --out {p.parent}`)")
    raw = read_own(p)
    lines = raw.split(b"\n")
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            rec = Record.model_validate(doc if verbatim else inert(doc),
                                        context={"from_file": True})
            rec.line_state = written.state(line)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"])) or "the record"
            raise ResultsError(f"{p}:{i}: not a result record ({where}: {first['msg']})") \
                from None
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            if i == len(lines) and not raw.endswith(b"\n"):
                warnings.warn(f"{p}:{i}: ignoring a truncated last line (a run was killed "
                              "while writing it)", stacklevel=2)
                continue
            if not records and p.name != RESULTS_FILE:  # a suite file, say, given for results
                raise ResultsError(f"{p}: not a results file; give a results directory (what "
                                   "`modelopt run SUITE --out DIR` writes) or its "
                                   f"{RESULTS_FILE}") from None
            raise ResultsError(f"{p}:{i}: malformed result line ({exc})") from None
        records.append(rec)
    if not latest:
        return records
    last = {r.key: r for r in records}
    return list(last.values())


def repair(path: str | Path) -> None:
    """Cut a torn last line off before appending, so the next record starts on its own line."""
    p = results_path(path)
    if not p.exists():
        return
    raw = p.read_bytes()
    if raw and not raw.endswith(b"\n"):
        cut, line = raw.rfind(b"\n") + 1, raw.count(b"\n") + 1
        warnings.warn(f"{p}:{line}: cut a truncated last line ({len(raw) - cut} "
                      "bytes: a run was killed while writing it); its cell runs again",
                      stacklevel=2)
        with open(p, "r+b") as f:
            f.truncate(cut)


def timings(paths: list[str | Path]) -> dict:
    """The timing-stage documents of results directories, by suite name (`load` has checked
    that each is of its directory's suite)."""
    out = {}
    for p in paths:
        doc = latency.current(p)  # never a timing of models saved again since
        if doc:
            out[doc["suite"]] = doc
    return out


def _own_suite(run_dir: str | Path, held: set[str], named: dict[str, str | None]) -> None:
    """A timing.json or suite.json (`named`: file -> the suite it names) of the directory's
    suite (`held`: its records'): else one of another suite would stand in for that suite's
    own (its speed-ups, its baseline) on the page of a directory given beside it."""
    for name, suite in named.items():
        if held and suite is not None and suite not in held:
            raise ResultsError(f"{Path(run_dir) / name}: of suite '{suite}', but the results "
                               f"there are of {', '.join(sorted(held))}; a results directory "
                               "holds one suite's run")


def _one_place(where: dict[str, Path], suites: set[str], p: str | Path) -> None:
    """A suite is read from one results directory: two runs of it (shards, reruns) would
    count each cell's seeds twice, and their latencies come from separate timing sessions,
    which are never paired."""
    for suite in sorted(suites):
        if suite in where and Path(where[suite]).resolve() == Path(p).resolve():
            raise ResultsError(f"{p}: given twice (as {where[suite]} too); name each results "
                               "directory once")
        if suite in where:
            raise ResultsError(
                f"{p}: suite '{suite}' is also in {where[suite]}; a suite is read from one "
                "results directory (its seeds would count twice, and latencies of separate "
                f"timing stages are not paired): `modelopt merge {where[suite]} {p} --out "
                "DIR`, then `modelopt time DIR`, joins them and times them side by side")
        where[suite] = Path(p)


def load(path: str | Path | list):
    """Results as a pandas DataFrame: one row per cell x seed, metrics as columns, latency
    from the run's timing stage. Metrics a run declared (plugin measures) join the table."""
    import pandas as pd

    paths = path if isinstance(path, list) else [path]
    rows, where = [], {}
    for p in paths:
        meta, doc = declare_run(p), latency.current(p)
        figures = latency.figures(doc)  # the timing stage's, per cell x seed
        records = read(p)
        held = {r.suite for r in records}
        _own_suite(p, held, {M.RUN_META: meta and meta.suite,
                             latency.TIMING_FILE: doc and doc["suite"]})
        _one_place(where, held, p)
        for rec in records:
            row = {"suite": rec.suite, "cell_id": rec.cell_id, "seed": rec.seed,
                   "status": rec.status, "error": rec.error, "duration_s": rec.duration_s,
                   "started_at": rec.started_at, "task": rec.task_or_guess(), "cell": rec.cell,
                   "curves": rec.curves, "extra": rec.extra, "env": rec.env, "group": rec.group,
                   **rec.figures()}
            if rec.ok:
                row.update(figures.get(rec.key, {}))
            rows.append(row)
    return pd.DataFrame(rows)
