"""The record of one cell x seed: what a run appends, and what store, report, compare and
export read. Everything a reader needs is in it (the task included), so reading results
never needs the code that produced them."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from modelopt.spec.keys import SINGLE

# names that become file names (reports/<suite>.md, models/<cell>-<seed>-<kind>.pt): no
# path separators, and no leading dot (so never `.` or `..`)
SAFE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
CELL_ID = r"^[A-Za-z0-9_-]{1,64}$"  # a suite's cell names (spec/cells.py), in file names too

Status = Literal["ok", "failed", "diverged", "timeout", "skipped"]
# statuses that mean the harness or the cell's code went wrong (the exit code and
# --fail-fast count these); `diverged` is a result (a rate too high for the model) and
# `skipped` a backend the machine lacks, where the suite allows it
ERRORS: tuple[Status, ...] = ("failed", "timeout")


class Record(BaseModel):
    """One line of results.jsonl."""

    model_config = ConfigDict(extra="allow")  # lines written by later versions still read

    suite: str = Field(pattern=SAFE_NAME)
    suite_hash: str | None = None
    cell_id: str = Field(pattern=CELL_ID)
    seed: StrictInt  # "1" is not seed 1 (a hand edit would merge two records silently)
    cell: dict[str, Any] | None = None  # the resolved config
    task: str | None = Field(default=None, pattern=SAFE_NAME)  # a TASKS entry's name
    status: Status
    error: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    curves: list[dict[str, Any]] = Field(default_factory=list)
    env: dict[str, Any] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)
    started_at: str | None = None
    duration_s: float | None = None
    group: dict[str, Any] | None = None  # tune / cv variants of one matrix cell
    # the figures of the other models the cell measured, by kind (metrics.MODELS: "slimmed",
    # structured pruning's smaller model); `metrics` are the shipped model's and the cell's
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # the line it was read from: `sealed` (as modelopt wrote it; a record made here is too),
    # `edited` or `unsealed` (results/written.py): merge seals a copy only where it was sealed
    _line_state: str = PrivateAttr(default="sealed")

    @property
    def line_state(self) -> str:
        return self._line_state

    @line_state.setter
    def line_state(self, value: str) -> None:
        self._line_state = value

    @model_validator(mode="before")
    @classmethod
    def _previous_shape(cls, data: Any) -> Any:
        """Records written before figures belonged to a model kept another model's figures
        among the cell's, prefixed (`slimmed_params`): read, they are that model's."""
        from modelopt.results.metrics import MODELS, PER_MODEL, column

        if not isinstance(data, dict) or "models" in data or not isinstance(
                data.get("metrics"), dict):
            return data
        metrics, models = dict(data["metrics"]), {}
        for kind in MODELS:
            for name in PER_MODEL:
                if column(kind, name) in metrics:
                    models.setdefault(kind, {})[name] = metrics.pop(column(kind, name))
        return {**data, "metrics": metrics, "models": models}

    @field_validator("metrics")
    @classmethod
    def _figures_are_finite_numbers(cls, metrics: dict, info: ValidationInfo) -> dict:
        """A figure is a finite number or absent. A cell's own NaN (a score of an empty
        split) is made absent when its record is made; read from a file (context
        `from_file`), a NaN, an infinity or a word where a number is declared is refused,
        naming the figure, rather than dropped from a comparison unseen. Descriptive
        entries (fmt none: the confusion matrix, the quantization path) keep their shapes."""
        return checked_figures(metrics, bool((info.context or {}).get("from_file")))

    @field_validator("cell")
    @classmethod
    def _cell_shape(cls, cell: dict | None) -> dict | None:
        """A cell config as a run writes it: each technique absent, a mapping with a name,
        or a list of them where the key takes several; `train` and `plugins` mappings. What
        labels, tables and the rebuild read of it is then there (a record from elsewhere is
        data, checked)."""
        for key, value in (cell or {}).items():
            if key in ("train", "plugins"):
                ok = value is None or isinstance(value, dict)
            else:
                ok = value is None or _named(value) or (
                    key not in SINGLE and isinstance(value, list) and all(map(_named, value)))
            if not ok:
                raise ValueError(f"cell.{key} is {str(value)[:80]!r}: a technique is a "
                                 "mapping with a name (or a list of them)")
        return cell

    @field_validator("env")
    @classmethod
    def _env_words(cls, env: dict) -> dict:
        """What names the machine and its software is text, as reports and compare print it."""
        for key in ("cpu", "cpu_flags", "cpu_flags_checked", "device", "torch", "git_commit"):
            if env.get(key) is not None and not isinstance(env[key], str):
                raise ValueError(f"env.{key} is {str(env[key])[:40]!r}: text is expected")
        return env

    @field_validator("curves")
    @classmethod
    def _curve_points(cls, curves: list[dict]) -> list[dict]:
        for point in curves:
            if not isinstance(point, dict):
                raise ValueError(f"curves: {str(point)[:40]!r} is not a point of a curve")
            for key, value in point.items():  # the plots draw every value but the phase
                if key != "phase" and value is not None and (
                        isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise ValueError(f"curves: {key} {str(value)[:40]!r} is not a number")
        return curves

    @field_validator("group")
    @classmethod
    def _group_names(cls, group: dict | None) -> dict | None:
        if group is not None and not all(isinstance(group.get(k), str) for k in ("kind", "id")):
            raise ValueError("group: needs a kind and an id, both text")
        if group is not None and not isinstance(group.get("values"), dict):
            raise ValueError("group: a variant names its values (a mapping)")
        return group

    @field_validator("models")
    @classmethod
    def _models_figures(cls, models: dict, info: ValidationInfo) -> dict:
        from modelopt.results.metrics import MODELS, column

        strict = bool((info.context or {}).get("from_file"))
        out = {}
        for kind, figures in models.items():
            if kind not in MODELS:
                raise ValueError(f"models: '{kind}' is no model a cell measures (known: "
                                 f"{', '.join(MODELS)})")
            try:
                out[kind] = checked_figures(figures, strict, lambda n, k=kind: column(k, n))
            except ValueError as exc:
                raise ValueError(f"models.{kind}: {exc}") from None
        return out

    def figures(self) -> dict[str, Any]:
        """Every figure as a table column: the cell's, and each other model's by its kind
        (metrics.column)."""
        from modelopt.results.metrics import column

        return {**self.metrics, **{column(kind, name): v for kind, figures in self.models.items()
                                   for name, v in figures.items()}}

    @property
    def key(self) -> tuple[str, int]:
        return self.cell_id, self.seed

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def task_or_guess(self) -> str:
        """The task (records before it was stored: told by their figures)."""
        from modelopt.results import tasks

        return self.task or tasks.guess(self.metrics)


def _named(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("name"), str)


def checked_figures(metrics: dict, strict: bool, declared_as=lambda name: name) -> dict:
    """Figures with absent ones dropped, each a finite number where one is declared (see
    Record._figures_are_finite_numbers); `declared_as`: a figure's name in the table."""
    from modelopt.results.metrics import TABLE

    out = {}
    for name, value in metrics.items():
        if value is None:
            continue  # absent
        declared = TABLE.get(declared_as(name))
        descriptive = declared is not None and declared.fmt == "none"
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2 ** 63:
            value = math.inf  # beyond any count: as an infinity, refused below (no overflow later)
        if isinstance(value, float) and not math.isfinite(value):
            if not strict:
                continue
            raise ValueError(f"figure '{name}' is {value}: a figure is a finite number or "
                             "absent")
        # a yes/no counts as a number (target_reached averages to a share), but never
        # where the gate compares a measured figure (accuracy: true)
        number = isinstance(value, (int, float)) and not (
            isinstance(value, bool) and declared is not None and declared.gated)
        if declared is not None and not descriptive and not number:
            raise ValueError(f"figure '{name}' is {value!r}: a number is declared")
        share = declared is not None and declared.unit == "fraction"  # accuracy, F1
        if strict and share and not 0 <= value <= 1:  # 1e308 read as "improved" by the gate
            raise ValueError(f"figure '{name}' is {value!r}: a share is between 0 and 1")
        out[name] = value
    return out
