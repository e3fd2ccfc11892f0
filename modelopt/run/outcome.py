"""The one place a cell's outcome becomes a record: a payload from the cell's process (its
figures, or `failed` with the traceback's last lines), then the Record the run appends."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Callable

from modelopt.results.record import Record
from modelopt.run import timing
from modelopt.spec.cell import Cell
from modelopt.spec.schema import Suite


def failure(exc: BaseException, prefix: str = "") -> dict:
    # the last frames whole (a cut by lines began mid-frame), without the message again
    frames = "".join(traceback.format_tb(exc.__traceback__, limit=-4)).rstrip()
    return {"status": "failed", "error": f"{prefix}{type(exc).__name__}: {exc}",
            "traceback": frames}


def payload(run: Callable, cell_id: str, seed: int, model_dir: str | None,
            env: dict | None = None, own_dir: str | None = None, cell: Cell | None = None
            ) -> dict:
    """Run a cell (`run()` returns its CellOutput) into a payload: its figures, and its models
    saved for the timing stage; an exception becomes `failed`. `env` adds to the record's."""
    try:
        out = run()
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a recorded status
        return failure(exc)
    return from_output(out, cell_id, seed, model_dir, env, own_dir, cell)


def from_output(out, cell_id: str, seed: int, model_dir: str | None,
                env: dict | None = None, own_dir: str | None = None,
                cell: Cell | None = None) -> dict:
    """A finished cell's payload; its models saved for the timing stage (and, with
    `own_dir`, the run's own copies: timing.save_own, a runtime's file checked here against
    its rebuild from the saved data when the `cell` is given)."""
    if model_dir and out.status == "ok":
        save_models(out, model_dir, cell_id, seed)
        if own_dir:
            timing.save_own(own_dir, cell_id, seed, out.models, out.example, out.batch,
                            (model_dir, cell) if cell is not None else None)
    return {"status": out.status, "error": out.error, "metrics": out.metrics,
            "models": out.figures_of, "curves": out.curves, "env": {**out.env, **(env or {})},
            "extra": out.extra}


def save_models(out, model_dir: str, cell_id: str, seed: int) -> None:
    """An ok cell's models, for the timing stage. One that cannot be saved as data (a plugin
    model with non-tensor state) costs its latency, not its figures: the reason goes into
    extra."""
    try:
        saved = timing.save_all(model_dir, cell_id, seed, out.models, out.example, out.batch,
                                out.input_shape, out.num_outputs)
        # what the user can take home, relative to the run directory (the report names it)
        out.extra["take_home"] = {k: [f"{Path(model_dir).name}/{n}" for n in names]
                                  for k, names in saved.items()}
    except Exception as exc:  # noqa: BLE001 - the figures stand; only latency is lost
        out.extra["timing_error"] = f"model not saved for timing: {type(exc).__name__}: {exc}"


def record(suite: Suite, cell: Cell, seed: int, started_at: str, duration: float,
           payload: dict, commit: str | None) -> Record:
    error = payload.get("error")
    if payload.get("traceback"):
        error = f"{error}\n{payload['traceback']}"
    # what it read besides its config (data files' fingerprints, your code's hash)
    extra = {**(payload.get("extra") or {}), **suite.inputs.get(cell.cell_id, {})}
    return Record(suite=suite.name, suite_hash=suite.content_hash, cell_id=cell.cell_id,
                  seed=seed, cell=cell.as_config(), task=cell.task,
                  status=payload["status"], error=error, metrics=payload.get("metrics") or {},
                  models=payload.get("models") or {}, curves=payload.get("curves") or [],
                  env={**(payload.get("env") or {}), "git_commit": commit},
                  extra=extra, started_at=started_at,
                  duration_s=duration, group=cell.group)
