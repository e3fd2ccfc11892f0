"""Latency as the timing stage recorded it (timing.json): per cell x seed figures, and
ratios of two models timed side by side, with their intervals. The stage that times the
models and writes the file through `write` is modelopt.run.timing (docs/explanation/measurement.md)."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelopt.results.files import ResultsError, linked, read_json, write_whole
from modelopt.results.metrics import LATENCY_FIGURES, column
from modelopt.results.record import CELL_ID

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
# a time measured: never 0 or less, and between a nanosecond and days (1e308 against 1e-308
# made a ratio no statistic can hold)
Ms = Annotated[float, Field(allow_inf_nan=False, ge=1e-6, le=1e9)]
Rounds = Annotated[list[Ms], Field(max_length=100_000)]

MODELS_DIR = "models"
TIMING_FILE = "timing.json"
PROCESSES = 3  # replicates, the unit of a latency interval: at least this many


@dataclass(frozen=True)
class Artifact:
    cell_id: str
    seed: int
    kind: str  # model | slimmed (metrics.LATENCY_FIGURES)
    path: Path
    side: str = ""  # compare times two runs' models together: baseline | current
    # its record's resolved cell (as read from the results file), and the checked recipe the
    # timing process rebuilds the model from (run/rebuild.py; None: not rebuildable)
    recorded: dict | None = dataclasses.field(default=None, compare=False, hash=False)
    recipe: object | None = dataclasses.field(default=None, compare=False, hash=False)

    # the run's own pickled copy (timing.save_own): its own timing stage only, never read
    # from a results directory
    own_copy: Path | None = dataclasses.field(default=None, compare=False, hash=False)

    def with_recorded(self, cell: dict | None) -> "Artifact":
        return replace(self, recorded=cell)

    def with_recipe(self, recipe: object | None) -> "Artifact":
        return replace(self, recipe=recipe)

    @property
    def key(self) -> str:
        return f"{self.side}:{self.cell_id}:{self.seed}:{self.kind}"


def artifact_path(model_dir: str | Path, cell_id: str, seed: int, kind: str) -> Path:
    return Path(model_dir) / f"{cell_id}-{seed}-{kind}.pt"


def artifacts(run_dir: str | Path, keys: set[tuple[str, int]] | None = None,
              side: str = "") -> list[Artifact]:
    """The saved models of a run (of the given (cell_id, seed) pairs only, if given)."""
    run_dir = Path(run_dir)
    models = (run_dir if run_dir.is_dir() else run_dir.parent) / MODELS_DIR
    if models.is_symlink():  # its models would be another folder's (compare re-timed them)
        raise linked(models)
    found = []
    for p in sorted(models.glob("*.pt")):
        parts = p.stem.rsplit("-", 2)
        if (len(parts) != 3 or not parts[1].isdigit() or parts[2] not in LATENCY_FIGURES
                or not p.is_file()):
            continue  # not a file the run saved (a folder by that name is none)
        if p.is_symlink():  # torch.load would open any file of the user's
            raise linked(p)
        cell_id, seed, kind = parts
        if keys is None or (cell_id, int(seed)) in keys:
            found.append(Artifact(cell_id, int(seed), kind, p, side))
    return found


class TimingError(RuntimeError):
    """The timing stage could not time the saved models (a process failed, a model that does
    not load); the cells' other figures stand."""


def write(run_dir: str | Path, doc: dict) -> None:
    write_whole(Path(run_dir) / TIMING_FILE, json.dumps(doc).encode())


class TimingRow(BaseModel):
    model_config = ConfigDict(extra="allow")
    side: Literal["", "baseline", "current"] = ""  # "": a run's own; compare's two runs
    cell_id: str = Field(pattern=CELL_ID)
    seed: int
    kind: Literal["model", "slimmed"]
    process: int
    ms_batch1: Ms
    p90_ms_batch1: Ms
    ms_batch: Ms
    rounds_batch1: Rounds = []
    rounds_batch: Rounds = []
    # a causal decoder's generation (timing.generation_calls), checked like the rest
    ms_first_token: Ms | None = None
    ms_generate: Ms | None = None
    new_tokens: Annotated[int, Field(ge=2)] | None = None

    @model_validator(mode="after")
    def _generation_after_first_token(self):
        first, whole = self.ms_first_token, self.ms_generate
        if first is not None and whole is not None and whole <= first:  # < 0 ms per token
            raise ValueError("ms_generate is no longer than ms_first_token")
        return self


class TimingDoc(BaseModel):
    """timing.json, as the timing stage writes it."""

    model_config = ConfigDict(extra="allow")
    suite: str
    processes: int
    rows: list[TimingRow]
    # how long it measured, and why it stopped (latency.Plan; absent in older files)
    stopped: str = ""
    widest: FiniteFloat | None = None
    not_retimeable: dict[str, str] = {}


def read(run_dir: str | Path) -> dict | None:
    """A run's timing.json, validated (ResultsError names the file and line); None if none."""
    p = Path(run_dir)
    p = (p if p.is_dir() else p.parent) / TIMING_FILE
    if not p.is_file():
        return None
    return read_json(p, TimingDoc).model_dump()


def stale(run_dir: str | Path) -> int:
    """How many saved models are newer than timing.json (trained again since, e.g. by a run
    with --no-timing): its latency is not theirs."""
    path = Path(run_dir)
    path = (path if path.is_dir() else path.parent) / TIMING_FILE
    if not path.is_file():
        return 0
    since = path.stat().st_mtime
    return sum(a.path.stat().st_mtime > since for a in artifacts(run_dir))


def current(run_dir: str | Path) -> dict | None:
    """timing.json where it still times the saved models; None where there is none or some
    model was saved after it (a report then says "not timed", never the old models' speed)."""
    return None if stale(run_dir) else read(run_dir)


def timed_already(run_dir: str | Path, keys: set[tuple[str, int]], plan: Plan,
                  baseline: dict | None) -> bool:
    """Whether timing.json holds every saved model of these (cell_id, seed) pairs, timed
    under `plan` for the speed-ups over `baseline` (the suite's, as suite.json holds it)
    after the model was saved (or recorded there as not re-timeable): what a run that
    trained nothing keeps rather than time the same models again."""
    path = Path(run_dir) / TIMING_FILE
    try:
        doc = read(run_dir)
    except ResultsError:
        return False  # timed again, and replaced
    if doc is None or doc.get("plan") != plan.as_dict() or doc.get("baseline") != baseline:
        return False
    timed = {(r["cell_id"], r["seed"], r["kind"]) for r in doc["rows"]}
    since = path.stat().st_mtime
    return all(((a.cell_id, a.seed, a.kind) in timed or a.key.lstrip(":") in doc["not_retimeable"])
               and a.path.stat().st_mtime <= since for a in artifacts(run_dir, keys))


def figures(doc: dict | None) -> dict[tuple[str, int], dict]:
    """Latency metrics per (cell_id, seed): the median over processes of each process's
    median block (and p90), for the deployed model and, where there is one, the slimmed."""
    if not doc:
        return {}
    by: dict = {}
    for r in doc["rows"]:
        by.setdefault((r["cell_id"], r["seed"], r["kind"]), []).append(r)
    out: dict = {}
    for (cid, seed, kind), rows in by.items():
        b1_name, bb_name = LATENCY_FIGURES[kind]
        m = out.setdefault((cid, seed), {"latency_processes": len(rows)})
        m[b1_name] = statistics.median(r["ms_batch1"] for r in rows)
        m[bb_name] = statistics.median(r["ms_batch"] for r in rows)
        if kind == "model":
            m["latency_ms_p90"] = statistics.median(r["p90_ms_batch1"] for r in rows)
        if all(r.get("ms_generate") is not None for r in rows):  # a decoder's (slimmed too)
            m[column(kind, "first_token_ms")] = statistics.median(r["ms_first_token"] for r in rows)
            m[column(kind, "per_token_ms")] = statistics.median(per_token_ms(r) for r in rows)
    return out


def per_token_ms(row: dict) -> float:
    """A decoder's time per token after the first: its generation less its first token."""
    return (row["ms_generate"] - row["ms_first_token"]) / (row["new_tokens"] - 1)


# ---------------------------------------------------------------- ratios within a process

@dataclass(frozen=True)
class Ratio:
    mean: float
    ci_low: float
    ci_high: float
    n: int  # processes


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval over replicates (the processes)."""
    from scipy.stats import t

    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, float("nan"), float("nan")
    half = t.ppf(0.5 + level / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half


ROUNDS_OF = {"ms_batch": "rounds_batch", "ms_batch1": "rounds_batch1"}


def ratio(rows: list[dict], num: dict, den: dict, field: str) -> Ratio | None:
    """time(num) / time(den), where num and den pick rows by their fields (e.g. cell_id and
    kind). Within a process, per seed both have: the median over rounds of the ratio of the
    two blocks of a round (timed moments apart, so a slow stretch slows both); then the
    geometric mean over the seeds. A t interval over the processes, the replicates."""
    def pick(r, want):
        return all(r.get(k) == v for k, v in want.items())

    t: dict = {}
    for r in rows:
        for side, want in (("num", num), ("den", den)):
            if pick(r, want) and r.get(field) is not None:  # a decoder's fields: its rows only
                t[(side, r["process"], r["seed"])] = r.get(ROUNDS_OF.get(field, "")) or [r[field]]
    per_process = []
    for p in sorted({k[1] for k in t}):
        logs = [math.log(statistics.median(a / b for a, b in zip(t[("num", p, s)],
                                                                t[("den", p, s)])))
                for (side, q, s) in t if side == "num" and q == p and ("den", p, s) in t]
        if logs:
            per_process.append(math.exp(statistics.fmean(logs)))
    if not per_process:
        return None
    return Ratio(*t_interval(per_process), len(per_process))


# ---------------------------------------------------------------- how long to measure

# pairs of models whose ratio the timing stage makes precise: (numerator's row selector,
# denominator's), e.g. ({"cell_id": dense, "kind": "model"}, {"cell_id": pruned, ...})
Pairs = list[tuple[dict, dict]]


@dataclass(frozen=True)
class Plan:
    """How long the timing stage measures: `processes` fresh processes of `rounds` rounds
    each, then one more process at a time while some speed-up's 95 % interval is wider than
    ±half_width of the speed-up (at batch or at batch 1), up to `max_processes`. More
    processes of fewer rounds give narrower intervals for the same time: the process is the
    replicate, and Student's t falls from 4.30 at 3 processes to 2.78 at 5
    (docs/explanation/measurement.md, "How long the timing stage measures")."""

    processes: int = PROCESSES
    max_processes: int = 5
    rounds: int = 8
    half_width: float = 0.05

    @classmethod
    def fixed(cls, processes: int, rounds: int | None = None) -> "Plan":
        """Exactly `processes` processes, whatever the intervals (--processes N)."""
        return cls(processes, processes, rounds or cls.rounds)

    @classmethod
    def given(cls, processes: int | None) -> "Plan":
        """The plan for a command line's process count: exactly that many, or, without one,
        the default plan."""
        return cls.fixed(processes) if processes else cls()

    @property
    def adaptive(self) -> bool:
        return self.max_processes > self.processes

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def widest(rows: list[dict], pairs: Pairs) -> float | None:
    """The widest 95 % interval among the pairs' ratios, at batch and at batch 1, as a
    half-width relative to the ratio (0.05: ±5 %); None where no pair has one yet."""
    widths = []
    for num, den in pairs:
        a, b = device_of(rows, num), device_of(rows, den)
        if a and b and a != b:
            continue  # no speed-up across devices is reported (cross_device)
        for field in ROUNDS_OF:
            r = ratio(rows, num, den, field)
            if r is not None and r.n >= 2:
                widths.append((r.ci_high - r.ci_low) / 2 / r.mean)
    return max(widths) if widths else None


def speedups(doc: dict | None, pairs: dict[str, tuple[str, str]]) -> dict[str, dict]:
    """Per cell: its baseline's latency over the latency of the model that would ship, at the
    training batch size and at batch 1, each with its interval over the timing processes.
    `pairs` maps cell_id -> (baseline cell_id, kind of the shipped model: 'slimmed' where
    one exists, else 'model')."""
    if not doc:
        return {}
    out = {}
    apart = cross_device(doc, pairs)
    for cid, (base, kind) in pairs.items():
        fig = {}
        if cid in apart:  # a CPU's latency over a GPU's is no speed-up of the technique
            out[cid] = fig
            continue
        for name, field in (("speedup_batch", "ms_batch"), ("speedup_batch1", "ms_batch1")):
            r = ratio(doc["rows"], {"cell_id": base, "kind": "model"},
                      {"cell_id": cid, "kind": kind}, field)
            if r is not None:
                fig.update({name: r.mean, f"{name}_ci_low": r.ci_low,
                            f"{name}_ci_high": r.ci_high})
        out[cid] = fig
    return out


def cross_device(doc: dict | None, pairs: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """The cells of `pairs` (as speedups takes them) whose shipped model was timed on another
    device than its baseline's model (a CUDA cell's int8 shipped on the CPU):
    {cell_id: (the baseline's device, the cell's)}. Rows from before rows named their
    device count as the same device."""
    if not doc:
        return {}
    out = {}
    for cid, (base, kind) in pairs.items():
        a = device_of(doc["rows"], {"cell_id": base, "kind": "model"})
        b = device_of(doc["rows"], {"cell_id": cid, "kind": kind})
        if a and b and a != b:
            out[cid] = (a, b)
    return out


def device_of(rows: list[dict], want: dict) -> str | None:
    """The device the rows `want` picks (as ratio's selectors) were timed on; None for rows
    from before rows named it."""
    return next((r["device"] for r in rows if r.get("device")
                 and all(r.get(k) == v for k, v in want.items())), None)
