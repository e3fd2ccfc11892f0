"""The results store: one JSON object per line, appended atomically; loaded as a DataFrame."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

from pydantic import ValidationError

from modelopt.results import latency
from modelopt.results import metrics as M
from modelopt.results.record import Record

RESULTS_FILE = "results.jsonl"


class ResultsError(ValueError):
    """A results file that cannot be read; the message names the file and line."""


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
    """Append one whole line with a single write, then flush and fsync: a killed run leaves
    at most one torn last line, which `read` skips."""
    p = results_path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = record.model_dump(exclude_none=False)
    line = (json.dumps(_clean(doc), sort_keys=True, allow_nan=False) + "\n").encode()
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: str | Path, latest: bool = True) -> list[Record]:
    """All records; with `latest`, only the last one per (cell_id, seed) (a rerun replaces)."""
    p = results_path(path)
    if not p.exists():
        raise ResultsError(f"{p}: no results file here (run `modelopt run SUITE --out {p.parent}`)")
    raw = p.read_bytes()
    lines = raw.split(b"\n")
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = Record.model_validate(json.loads(line))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ResultsError(f"{p}:{i}: not a result record ({'.'.join(map(str, first['loc']))}"
                               f": {first['msg']})") from None
        except (ValueError, UnicodeDecodeError) as exc:
            if i == len(lines) and not raw.endswith(b"\n"):
                warnings.warn(f"{p}:{i}: ignoring a truncated last line (a run was killed "
                              "while writing it)", stacklevel=2)
                continue
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
        cut = raw.rfind(b"\n") + 1
        with open(p, "r+b") as f:
            f.truncate(cut)


def timings(paths: list[str | Path]) -> dict:
    """The timing-stage documents of results directories, by suite name."""
    out = {}
    for p in paths:
        doc = latency.read(p)
        if doc:
            out[doc["suite"]] = doc
    return out


def load(path: str | Path | list):
    """Results as a pandas DataFrame: one row per cell x seed, metrics as columns, latency
    from the run's timing stage. Metrics a run declared (plugin measures) join the table."""
    import pandas as pd

    paths = path if isinstance(path, list) else [path]
    rows = []
    for p in paths:
        M.declare_run(p)
        figures = latency.figures(latency.read(p))  # the run's timing stage, per cell x seed
        for rec in read(p):
            row = {"suite": rec.suite, "cell_id": rec.cell_id, "seed": rec.seed,
                   "status": rec.status, "error": rec.error, "duration_s": rec.duration_s,
                   "started_at": rec.started_at, "task": rec.task_or_guess(), "cell": rec.cell,
                   "curves": rec.curves, "extra": rec.extra, "env": rec.env, "group": rec.group,
                   **rec.metrics}
            if rec.ok:
                row.update(figures.get(rec.key, {}))
            rows.append(row)
    return pd.DataFrame(rows)
