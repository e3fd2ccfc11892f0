"""The record of one cell x seed: what a run appends, and what store, report, compare and
export read. Everything a reader needs is in it (the task included), so reading results
never needs the code that produced them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["ok", "failed", "diverged", "timeout", "skipped"]
# statuses that mean the harness or the cell's code went wrong (the exit code and
# --fail-fast count these); `diverged` is a result (a rate too high for the model) and
# `skipped` a backend the machine lacks, where the suite allows it
ERRORS: tuple[Status, ...] = ("failed", "timeout")


class Record(BaseModel):
    """One line of results.jsonl."""

    model_config = ConfigDict(extra="allow")  # lines written by later versions still read

    suite: str | None = None
    suite_hash: str | None = None
    cell_id: str
    seed: int
    cell: dict[str, Any] | None = None  # the resolved config
    task: Literal["classification", "regression"] | None = None
    status: Status
    error: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    curves: list[dict[str, Any]] = Field(default_factory=list)
    env: dict[str, Any] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)
    started_at: str | None = None
    duration_s: float | None = None
    group: dict[str, Any] | None = None  # tune / cv variants of one matrix cell

    @property
    def key(self) -> tuple[str, int]:
        return self.cell_id, self.seed

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def task_or_guess(self) -> str:
        """The task (records before it was stored: told by their figures)."""
        if self.task:
            return self.task
        return "regression" if "r2" in self.metrics else "classification"

