"""Suite files: schema (pydantic), YAML loading, matrix expansion, cell ids."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelopt.registry import Registry, RegistryError, closest

# Keys whose value is one technique spec, and keys whose value is a list of specs
# (they combine). Their registries are filled by the technique modules on import.
SINGLE_KEYS = ("dataset", "model", "optimizer", "schedule", "prune", "distill", "quantize",
               "backend", "loss")
LIST_KEYS = ("regularization", "preprocess", "augment")
CELL_KEYS = SINGLE_KEYS + LIST_KEYS + ("train",)
REQUIRED_KEYS = ("dataset", "model", "optimizer")
OFF = (None, "none", "off")  # how a suite switches an optional technique off


class SuiteError(ValueError):
    """An invalid suite: says which file, which key, what was given and what is allowed."""

    def __init__(self, path: str, where: str, message: str):
        self.path, self.where, self.message = path, where, message
        super().__init__(f"{path}: {where}: {message}" if where else f"{path}: {message}")


class TrainConfig(BaseModel):
    """How long and how a cell trains; one of steps or epochs."""

    model_config = ConfigDict(extra="forbid")
    steps: int | None = Field(None, gt=0)
    epochs: float | None = Field(None, gt=0)
    batch_size: int = Field(100, gt=0)
    eval_every: int = Field(250, gt=0)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    timeout_s: float | None = Field(None, gt=0)
    eval_batch_size: int = Field(1000, gt=0)
    record: list[str] = Field(default_factory=list)
    target: float | None = None  # validation score for time_to_target
    folds: int = Field(0, ge=0)  # k-fold cross-validation: validation = fold `fold` of k
    fold: int = Field(0, ge=0)

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


class SuiteFile(BaseModel):
    """The top level of a suite YAML file."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    defaults: dict[str, Any] = Field(default_factory=dict)
    matrix: dict[str, list[Any]] = Field(default_factory=dict)
    include: list[dict[str, Any]] = Field(default_factory=list)
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    primary_metric: str = "accuracy"
    baseline: dict[str, Any] | None = None  # the cell the report compares others against
    timeout_s: float | None = Field(None, gt=0)  # default per-cell limit
    skip_unavailable: bool = False
    tune: dict[str, list[Any]] | None = None  # a grid per matrix cell, chosen on validation
    cv: CVConfig | None = None
    thresholds: dict[str, str] = Field(default_factory=dict)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("seeds repeat")
        return v


@dataclass(frozen=True)
class Cell:
    """One resolved configuration (all keys filled in), without the seed."""

    config: dict
    cell_id: str
    # tune / cv variants of one matrix cell share a group:
    # {"kind": "tune" | "cv", "id": <id of the cell without the variant keys>, "values": {...}}
    group: dict | None = None


@dataclass(frozen=True)
class Suite:
    name: str
    path: str
    seeds: tuple[int, ...]
    cells: tuple[Cell, ...]
    spec: SuiteFile
    content_hash: str

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


def registries() -> dict[str, Registry]:
    """Key -> registry. Importing the technique modules registers their functions; modules
    named in MODELOPT_PLUGINS (comma-separated) are imported too, so users register their
    own techniques without editing modelopt (cell processes import them the same way)."""
    import importlib
    import os

    from modelopt import backends, data, distill, losses, models, optim, preprocess, prune, quantize

    for name in filter(None, os.environ.get("MODELOPT_PLUGINS", "").split(",")):
        importlib.import_module(name.strip())

    return {
        "dataset": data.DATASETS, "model": models.MODELS, "optimizer": optim.OPTIMIZERS,
        "schedule": optim.SCHEDULES, "regularization": optim.REGULARIZERS,
        "preprocess": preprocess.PREPROCESS, "augment": preprocess.AUGMENT,
        "prune": prune.PRUNERS, "distill": distill.DISTILLERS, "quantize": quantize.QUANTIZERS,
        "backend": backends.BACKENDS, "loss": losses.LOSSES,
    }


# ---------------------------------------------------------------- spec normalisation

def spec_of(value: Any, key: str) -> dict | None:
    """`adam` or `{name: adam, lr: 0.1}` -> `{'name': 'adam', 'lr': 0.1}`; off -> None."""
    if value in OFF:
        return None
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict):
        if "name" not in value:
            raise RegistryError(f"a {key} mapping needs a 'name' (got keys {sorted(value)})")
        if not isinstance(value["name"], str):
            raise RegistryError(f"{key} name must be a string, got {value['name']!r}")
        return dict(value)
    raise RegistryError(f"{key} must be a name or a mapping with 'name', got {value!r}")


def normalize(key: str, value: Any):
    """The canonical form of one cell key's value (before parameters are checked)."""
    if key == "train":
        if not isinstance(value, dict):
            raise RegistryError(f"train must be a mapping, got {value!r}")
        return dict(value)
    if key in LIST_KEYS:
        items = value if isinstance(value, list) else [value]
        return [s for s in (spec_of(v, key) for v in items) if s is not None]
    if key in SINGLE_KEYS:
        return spec_of(value, key)
    raise RegistryError(f"unknown cell key '{key}'{closest(key, CELL_KEYS)}; "
                        f"cell keys are: {', '.join(CELL_KEYS)}")


def check_spec(key: str, spec, regs: dict[str, Registry]):
    """Check names and parameters of a normalised value; return it with defaults filled in."""
    if key == "train":
        return TrainConfig(**spec).model_dump()
    if spec is None:
        return None
    if key in LIST_KEYS:
        return [check_spec_one(key, s, regs) for s in spec]
    return check_spec_one(key, spec, regs)


def check_spec_one(key: str, spec: dict, regs: dict[str, Registry]) -> dict:
    params = {k: v for k, v in spec.items() if k != "name"}
    if key == "distill" and "teacher" in params:  # a teacher is a cell config of its own
        params["teacher"] = resolve_teacher(params["teacher"], regs)
    return {"name": spec["name"], **regs[key].check(spec["name"], params)}


TEACHER_KEYS = ("model", "optimizer", "schedule", "regularization", "train", "loss")


def resolve_teacher(teacher: Any, regs: dict[str, Registry]) -> dict:
    """A teacher is a cell of its own (model, optimizer, training); it shares the student's
    data, so it takes no dataset, preprocessing or compression keys."""
    if not isinstance(teacher, dict):
        raise RegistryError(f"distill teacher must be a mapping with model, optimizer, train; "
                            f"got {teacher!r}")
    bad = [k for k in teacher if k not in TEACHER_KEYS]
    if bad:
        raise RegistryError(f"distill teacher key '{bad[0]}' is not allowed; a teacher takes "
                            f"{', '.join(TEACHER_KEYS)} (it uses the student's data)")
    if "optimizer" not in teacher:
        raise RegistryError("distill teacher needs an optimizer")
    out = {}
    for key in TEACHER_KEYS:
        norm = normalize(key, teacher.get(key, {} if key == "train" else None))
        out[key] = check_spec(key, norm, regs)
    return out


# ---------------------------------------------------------------- expansion

def _split_dotted(key: str) -> tuple[str, str | None]:
    head, _, param = key.partition(".")
    return head, (param or None)


def _normalize_axis_value(key: str, value: Any):
    head, param = _split_dotted(key)
    if param is not None:
        if head not in CELL_KEYS:
            raise RegistryError(f"unknown cell key '{head}'{closest(head, CELL_KEYS)}")
        return value
    return normalize(head, value)


def merge(base: dict, key: str, value: Any) -> None:
    """Apply one (possibly dotted) key onto a cell dict in place."""
    head, param = _split_dotted(key)
    if param is not None:
        current = base.get(head, {} if head == "train" else None)
        if head in LIST_KEYS:  # a list of techniques: the dotted key needs exactly one
            if not current or len(current) != 1:
                raise RegistryError(f"'{key}' sets a parameter of the one {head} technique, but "
                                    f"{len(current or [])} are chosen; write the list out instead")
            base[head] = [{**current[0], param: value}]
            return
        if current is None:
            raise RegistryError(f"'{key}' sets a parameter but no {head} is chosen")
        base[head] = {**current, param: value}
        return
    old = base.get(head)
    if head == "train":
        base[head] = {**(old or {}), **value}
    elif head in SINGLE_KEYS and value is not None and old and old.get("name") == value["name"]:
        base[head] = {**old, **value}  # same technique: the cell refines the default's params
    else:
        base[head] = value


def resolve_cell(defaults: dict, overrides: dict, regs: dict[str, Registry],
                 require=REQUIRED_KEYS) -> dict:
    cell: dict = {}
    for key, value in defaults.items():
        merge(cell, key, _normalize_axis_value(key, value))
    for key, value in overrides.items():
        merge(cell, key, _normalize_axis_value(key, value))
    for key in require:
        if cell.get(key) is None:
            raise RegistryError(f"no {key} chosen (set it in defaults or the matrix)")
    cell.setdefault("train", {})
    cell.setdefault("backend", {"name": "cpu"})
    cell.setdefault("loss", None)
    out = {}
    for key in CELL_KEYS:
        out[key] = check_spec(key, cell.get(key), regs)
    out["train"] = TrainConfig(**out["train"]).model_dump()
    if out.get("dataset") and out.get("model"):
        _check_compatible(out, regs)
    return out


def _check_compatible(cell: dict, regs: dict[str, Registry]) -> None:
    """Inputs the dataset gives must suit the model and the augmentations."""
    dname, mname = cell["dataset"]["name"], cell["model"]["name"]
    kind = regs["dataset"].get(dname).flags.get("input")
    accepts = regs["model"].get(mname).flags.get("accepts")
    if kind and accepts and kind not in accepts:
        fitting = [e.name for e in regs["model"].entries() if kind in e.flags.get("accepts", ())]
        raise RegistryError(f"model '{mname}' takes {'/'.join(accepts)} inputs but dataset "
                            f"'{dname}' gives {kind} inputs; models for it: {', '.join(fitting)}")
    from modelopt.data import task_of

    pre = cell.get("preprocess") or []
    for spec in pre[:-1]:
        if regs["preprocess"].get(spec["name"]).flags.get("last"):
            raise RegistryError(f"preprocess '{spec['name']}' must come last in the list "
                                "(it changes how the inputs are stored)")
    task = task_of(cell["dataset"])
    loss = cell.get("loss")
    if loss:
        loss_task = regs["loss"].get(loss["name"]).flags.get("task")
        if loss_task and loss_task != task:
            raise RegistryError(f"loss '{loss['name']}' is for {loss_task}, but dataset "
                                f"'{dname}' is a {task} task")
    if task == "regression" and cell.get("distill"):
        raise RegistryError("distill (kd) needs a classification dataset")
    for aug in cell.get("augment") or []:
        inputs = regs["augment"].get(aug["name"]).flags.get("inputs")
        if kind and inputs and kind not in inputs:
            raise RegistryError(f"augment '{aug['name']}' applies to {'/'.join(inputs)} inputs, "
                                f"not to dataset '{dname}' ({kind})")


def _matches(combo: dict, pattern: dict) -> bool:
    return all(k in combo and combo[k] == v for k, v in pattern.items())


def expand(matrix: dict[str, list], include: list[dict], exclude: list[dict]) -> list[dict]:
    """GitHub Actions' strategy.matrix: product, then exclude, then include."""
    keys = list(matrix)
    combos = [dict(zip(keys, values)) for values in itertools.product(*matrix.values())]
    if not keys:
        combos = []
    combos = [c for c in combos if not any(_matches(c, ex) for ex in exclude)]
    originals = [dict(c) for c in combos]
    extra = []
    for inc in include:
        added = False
        for orig, combo in zip(originals, combos):
            # an include joins a combination when it overwrites none of its original values
            if all(orig[k] == v for k, v in inc.items() if k in orig):
                combo.update(inc)
                added = True
        if not added:
            extra.append(dict(inc))
    return combos + extra


def cell_id(config: dict) -> str:
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


# ---------------------------------------------------------------- loading

def _pydantic_where(err: ValidationError) -> tuple[str, str]:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        allowed = ", ".join(SuiteFile.model_fields)
        msg = f"unknown key{closest(first['loc'][-1], SuiteFile.model_fields)}; allowed: {allowed}"
    return where, msg


def parse(text: str | bytes, path: str = "<suite>", ddp_world: int | None = None) -> Suite:
    """Validate a suite document completely, before anything runs. Under a launcher
    (torchrun), `ddp_world` is the launched world: it becomes every ddp cell's world_size,
    so the records and cell ids say how many ranks really trained."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SuiteError(path, "", f"not valid YAML: {exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise SuiteError(path, "", f"cannot be read as text: {exc}") from None
    except RecursionError:
        raise SuiteError(path, "", "nested too deeply") from None
    if not isinstance(doc, dict):
        raise SuiteError(path, "", f"a suite is a mapping with name, matrix, ...; got {type(doc).__name__}")
    if _too_large(doc):
        raise SuiteError(path, "", f"too large once YAML aliases are expanded (over {MAX_NODES:,} "
                         "values, or nested deeper than 50): write the cells out, or use matrix")
    try:
        spec = SuiteFile(**{str(k): v for k, v in doc.items()})
    except ValidationError as exc:
        raise SuiteError(path, *_pydantic_where(exc)) from None
    except RecursionError:
        raise SuiteError(path, "", "nested too deeply") from None
    regs = registries()

    def guard(where: str, fn, *args):
        try:
            return fn(*args)
        except RegistryError as exc:
            raise SuiteError(path, where, str(exc)) from None
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise SuiteError(path, f"{where}.{loc}" if loc else where, first["msg"]) from None
        except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
            # anything else that a value makes go wrong is still the value's fault
            raise SuiteError(path, where, f"invalid value ({type(exc).__name__}: {exc})") from None

    # Check every value where it is written, so the message points at the right line.
    defaults = {}
    for key, value in spec.defaults.items():
        norm = guard(f"defaults.{key}", _normalize_axis_value, key, value)
        if "." not in key:
            guard(f"defaults.{key}", check_spec, key, norm, regs)
        defaults[key] = value
    matrix = {}
    for key, values in spec.matrix.items():
        if not values:
            raise SuiteError(path, f"matrix.{key}", "is an empty list; give at least one value")
        norms = []
        for i, v in enumerate(values):
            norm = guard(f"matrix.{key}[{i}]", _normalize_axis_value, key, v)
            if "." not in key:
                guard(f"matrix.{key}[{i}]", check_spec, key, norm, regs)
            norms.append(norm)
        matrix[key] = norms
    include = [{k: guard(f"include[{i}].{k}", _normalize_axis_value, k, v) for k, v in inc.items()}
               for i, inc in enumerate(spec.include)]
    exclude = [{k: guard(f"exclude[{i}].{k}", _normalize_axis_value, k, v) for k, v in ex.items()}
               for i, ex in enumerate(spec.exclude)]
    for i, ex in enumerate(exclude):
        for k in ex:
            if k not in matrix:
                raise SuiteError(path, f"exclude[{i}].{k}", f"is not a matrix key; matrix keys: "
                                 f"{', '.join(matrix) or 'none'}")
    combos = expand(matrix, include, exclude)
    if not combos:
        raise SuiteError(path, "matrix", "is empty: no cell to run (give matrix values or "
                         "include entries, and check that exclude leaves something)")
    if spec.timeout_s is not None:
        defaults = {"train": {"timeout_s": spec.timeout_s}, **defaults}
        if "train" in spec.defaults:
            defaults["train"] = {"timeout_s": spec.timeout_s, **spec.defaults["train"]}
    variants = _variants(spec, path, guard)
    cells, seen = [], set()
    for combo in combos:
        label = ", ".join(f"{k}={_short(v)}" for k, v in combo.items())
        base = guard(f"cell [{label}]", resolve_cell, copy.deepcopy(defaults), combo, regs)
        _set_ddp_world(base, ddp_world)
        for kind, values in variants:
            config = base
            if values:
                config = guard(f"{kind} [{label}, {values}]", resolve_cell,
                               copy.deepcopy(defaults), {**combo, **values}, regs)
                _set_ddp_world(config, ddp_world)
            cid = cell_id(config)
            group = {"kind": kind, "id": cell_id(base), "values": values} if kind else None
            if cid not in seen:  # two routes to the same cell run it once
                seen.add(cid)
                cells.append(Cell(config, cid, group))
    content_hash = hashlib.sha1(json.dumps(
        {"seeds": spec.seeds, "cells": [c.cell_id for c in cells]}, sort_keys=True
    ).encode()).hexdigest()[:12]
    return Suite(spec.name, path, tuple(spec.seeds), tuple(cells), spec, content_hash)


def _set_ddp_world(config: dict, world: int | None) -> None:
    if world is not None and config["backend"]["name"] == "ddp":
        config["backend"]["world_size"] = world


MAX_NODES = 200_000


def _too_large(doc: Any) -> bool:
    """Aliases let a few lines of YAML expand to billions of values ("billion laughs"); count
    values as they would be expanded and stop early."""
    count, stack = 0, [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES or depth > 50:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
            stack.extend((k, depth + 1) for k in node.keys())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return False


def _variants(spec: SuiteFile, path: str, guard) -> list[tuple[str | None, dict]]:
    """What each matrix cell becomes: itself, its tune grid, or its cv folds."""
    if spec.tune and spec.cv:
        raise SuiteError(path, "cv", "use tune or cv in one suite, not both")
    if spec.tune:
        for key, values in spec.tune.items():
            if not values:
                raise SuiteError(path, f"tune.{key}", "is an empty list")
            guard(f"tune.{key}", lambda k: _split_dotted(k)[1] or _bad_tune_key(k), key)
        keys = list(spec.tune)
        return [("tune", dict(zip(keys, vals))) for vals in itertools.product(*spec.tune.values())]
    if spec.cv:
        k = spec.cv.folds
        return [("cv", {"train.folds": k, "train.fold": f}) for f in range(k)]
    return [(None, {})]


def _bad_tune_key(key: str):
    raise RegistryError(f"tune keys set one parameter, like optimizer.lr; got '{key}'")


def load(path: str | Path, ddp_world: int | None = None) -> Suite:
    p = Path(path)
    if not p.is_file():
        raise SuiteError(str(path), "", "no such suite file")
    return parse(p.read_bytes(), str(p), ddp_world)


def _short(value: Any) -> str:
    if isinstance(value, dict) and "name" in value:
        params = ",".join(f"{k}={v}" for k, v in value.items() if k != "name")
        return f"{value['name']}({params})" if params else value["name"]
    if isinstance(value, list):
        return "+".join(_short(v) for v in value) or "none"
    return str(value)

