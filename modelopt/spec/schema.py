"""What a suite file may say: its keys, the pydantic schema of its top level, and the
resolved cells and suite it becomes."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:  # the typed cell is built from this module's TrainConfig
    from modelopt.spec.cell import Cell

OFF = (None, "none", "off")  # how a suite switches an optional technique off


MAX_CELLS = 10_000


class SuiteError(ValueError):
    """An invalid suite: says which file, which key, what was given and what is allowed."""

    def __init__(self, path: str, where: str, message: str):
        self.path, self.where, self.message = path, where, message
        super().__init__(f"{path}: {where}: {message}" if where else f"{path}: {message}")


DEFAULT_STEPS = 1000  # a cell that names neither steps nor epochs


class TrainConfig(BaseModel):
    """How long and how a cell trains; one of steps or epochs. Frozen: part of a cell."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # 0: not trained, evaluated and compressed as built (a model with trained `weights:`)
    steps: int | None = Field(None, ge=0)
    epochs: float | None = Field(None, gt=0)
    batch_size: int = Field(100, gt=0)
    eval_every: int = Field(250, gt=0)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    timeout_s: float | None = Field(None, gt=0)
    eval_batch_size: int = Field(1000, gt=0)
    record: list[str] = Field(default_factory=list)
    target: float | None = None  # validation score for time_to_target
    # k-fold cross-validation: validation = fold `fold` of k; set by the suite's `cv:`, not
    # listed among the keys a suite writes under `train`
    folds: int = Field(0, ge=0, json_schema_extra={"set_by": "cv"})
    fold: int = Field(0, ge=0, json_schema_extra={"set_by": "cv"})
    # fine-tuning after pruning as a phase of its own: its optimizer and schedule (a name or
    # a mapping, as the cell's own; none: the cell's), checked against their registries
    finetune_optimizer: Any = None
    finetune_schedule: Any = None

    @model_validator(mode="after")
    def _steps_or_epochs(self):
        if self.steps is not None and self.epochs is not None:
            raise ValueError(f"give steps or epochs, not both (got steps {self.steps} and "
                             f"epochs {self.epochs}); neither means {DEFAULT_STEPS} steps")
        return self

    @field_validator("record")
    @classmethod
    def _known_records(cls, v):
        allowed = {"grad_norms"}
        bad = [r for r in v if r not in allowed]
        if bad:
            raise ValueError(f"unknown record {bad}; allowed: {sorted(allowed)}")
        return v


class CVConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    folds: int = Field(ge=2, le=20)


class ExpectedFailure(BaseModel):
    """A cell known to fail here, and why (`expect_failure`): recorded as failed, as any
    failure, but not counted against the run's exit status."""

    model_config = ConfigDict(extra="forbid")
    cell: dict[str, Any] = Field(min_length=1)  # axis values, as an include entry's
    reason: str = Field(min_length=1)


class SuiteFile(BaseModel):
    """The top level of a suite YAML file."""

    model_config = ConfigDict(extra="forbid")
    # it names files (reports/<name>.md) and the default results/<name>: no path, no `..`
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    description: str = ""
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    defaults: dict[str, Any] = Field(default_factory=dict)
    matrix: dict[str, list[Any]] = Field(default_factory=dict)
    include: list[dict[str, Any]] = Field(default_factory=list)
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    baseline: dict[str, Any] | None = None  # the cell the report compares others against
    timeout_s: float | None = Field(None, gt=0)  # default per-cell limit
    skip_unavailable: bool = False
    expect_failure: list[ExpectedFailure] = Field(default_factory=list)
    tune: dict[str, list[Any]] | None = None  # a grid per matrix cell, chosen on validation
    cv: CVConfig | None = None
    # rows that train as long as the compressed cells, uncompressed (spec/budget.py)
    match_budget: bool = False
    thresholds: dict[str, str] = Field(default_factory=dict)
    # modules imported before validation (and in every cell's process) to register a
    # user's own models, datasets, ...; the suite file's folder is importable
    plugins: list[str] = Field(default_factory=list)
    # the most cells the matrix may plan (its axes' product, before include / exclude, times
    # tune's grid or cv's folds): a typo like a 10-value axis too many is refused at load
    max_cells: int = Field(MAX_CELLS, gt=0, le=1_000_000)

    @field_validator("thresholds", mode="before")
    @classmethod
    def _threshold_text(cls, v):
        # `accuracy: 0.5` as YAML writes it, kept as the gate's text (`15%` stays a string)
        if isinstance(v, dict):  # positional, as the gate parses it: 5e-05 is 0.00005
            return {k: format(Decimal(repr(x)), "f") if isinstance(x, (int, float))
                    and not isinstance(x, bool) else x for k, x in v.items()}
        return v

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("seeds repeat")
        return v


@dataclass(frozen=True)
class Suite:
    name: str
    path: str
    seeds: tuple[int, ...]
    cells: tuple[Cell, ...]
    spec: SuiteFile
    content_hash: str
    warnings: tuple[str, ...] = ()  # things the suite does that its author may not expect
    expected_failures: tuple[tuple[str, str], ...] = ()  # (cell_id, reason): expect_failure
    baseline: dict | None = None  # the suite's `baseline:`, checked, weights by their file
    # cell_id -> what it reads besides its config: {"data_files": {dataset parameter:
    # fingerprint}, "code": hash of the user's code} (spec/suite.py `_inputs`)
    inputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def current(self, cell_id: str, extra: Mapping[str, Any]) -> bool:
        """Whether a record (its `extra`) read what the cell reads now: else it is another
        data's or code's result, which resume does not keep."""
        now = self.inputs.get(cell_id, {})
        return all(extra.get(k) == now.get(k) for k in ("data_files", "code"))

    def expected_failure(self, cell_id: str) -> str | None:
        """Why the suite expects this cell to fail, or None."""
        return dict(self.expected_failures).get(cell_id)

    def runs(self):
        """Every cell x seed, in passes: each cell once per seed, in an order shuffled by the
        seed. The machine drifts during a run (the same training took 10 s at the start of a
        pruning run here and 15 s ten minutes later): run in suite order, the cells that came
        first would look faster. In passes, drift lands in every cell's spread over seeds
        instead, and a partial run already has every cell once."""
        out = []
        for seed in self.seeds:
            order = list(self.cells)
            random.Random(seed).shuffle(order)
            out += [(c, seed) for c in order]
        return out
