"""The typed cell a run executes: built once by spec/ from a resolved suite cell, frozen,
read by attribute in run/. Its id is a hash of what the cell sets.

A cell's parts follow its stages (spec/keys.py): the data (dataset, preprocessing,
augmentation, the validation split), the model, the training (settings, optimizer,
schedule, regularization, loss, distillation), the backend it trains on, the compression
(pruning, quantization), the deploy format and the extra metrics. Each chosen technique is
a `Choice`: its registry entry's name and checked parameters, which builds its object.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from modelopt.spec import keys as K
from modelopt.spec import weights
from modelopt.spec.registries import task_of
from modelopt.spec.schema import TrainConfig

# keys added after results were first stored: a record of a cell that does not use one
# leaves it out, as records have since
LATER_KEYS = ("metrics", "deploy")


class Params(dict):
    """A choice's checked parameters, read-only as the cell they belong to (a plain dict
    otherwise: it pickles into spawned ranks and Ray workers, and dumps as JSON)."""

    def _frozen(self, *args, **kwargs):
        raise TypeError("a cell's parameters are read-only: make another with Cell.replaced")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _frozen

    def __reduce__(self):
        return Params, (dict(self),)

    def __hash__(self):
        return hash(json.dumps(self, sort_keys=True, default=str))


@dataclass(frozen=True)
class Choice:
    """One registry entry a cell chose (`adam`, `l1_unstructured`), with its checked
    parameters, defaults filled in."""

    key: str
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, key: str, spec: dict | None) -> "Choice | None":
        if spec is None:
            return None
        return cls(key, spec["name"], Params({k: v for k, v in spec.items() if k != "name"}))

    @property
    def info(self):
        """The entry's declared facts (registries.py)."""
        return K.BY_NAME[self.key].registry.info(self.name)

    def build(self, *context):
        """The entry's object: an optimizer for (model,), a quantizer, a deploy format...
        (from the entry's own parameters; its key's `extra` ones are not the entry's)."""
        extra = K.BY_NAME[self.key].extra
        return K.BY_NAME[self.key].registry.build(
            self.name, *context, **{k: v for k, v in self.params.items() if k not in extra})

    def spec(self) -> dict:
        """As a suite (and a record) writes it: {"name": ..., **params}."""
        return {"name": self.name, **self.params}


def chosen(key: str, value: "Choice | dict") -> Choice:
    """A Choice, or one made of a spec as a suite writes it (`{"name": "adam", "lr": 0.1}`;
    what tests and a user's own scripts pass to a technique's builder)."""
    return value if isinstance(value, Choice) else Choice.of(key, value)


def _choices(key: str, specs: list | None) -> tuple[Choice, ...]:
    return tuple(Choice.of(key, s) for s in specs or [])


@dataclass(frozen=True)
class DataPart:
    dataset: Choice
    preprocess: tuple[Choice, ...] = ()
    augment: tuple[Choice, ...] = ()
    val_fraction: float = 0.1
    folds: int = 0  # k-fold cross-validation: validation is fold `fold` of k
    fold: int = 0


@dataclass(frozen=True)
class TrainPart:
    settings: TrainConfig
    optimizer: Choice
    schedule: Choice | None = None
    regularization: tuple[Choice, ...] = ()
    loss: Choice | None = None
    distill: Choice | None = None

    @property
    def finetune_optimizer(self) -> Choice:
        """Pruning's fine-tuning's optimizer: its own where the cell names one."""
        return Choice.of("optimizer", self.settings.finetune_optimizer) or self.optimizer

    @property
    def finetune_schedule(self) -> Choice | None:
        own = self.settings.finetune_schedule
        return Choice.of("schedule", own) if own is not None else (
            None if self.settings.finetune_optimizer is not None else self.schedule)


@dataclass(frozen=True)
class CompressPart:
    prune: Choice | None = None
    quantize: Choice | None = None

    def trains(self) -> bool:
        """Whether the quantizer acts during training (its hooks), not only converts after."""
        return self.quantize is not None and bool(getattr(self.quantize.info, "trains", False))


@dataclass(frozen=True)
class Cell:
    """One resolved configuration (every key filled in), without the seed."""

    data: DataPart
    model: Choice
    train: TrainPart
    backend: Choice
    compress: CompressPart = CompressPart()
    deploy: Choice | None = None
    metrics: tuple[Choice, ...] = ()
    # the suite's own code: {"modules": [...], "path": [folders]} (spec/plugins.py)
    plugins: Mapping[str, Any] | None = None
    cell_id: str = ""
    # tune / cv variants of one matrix cell share a group:
    # {"kind": "tune" | "cv", "id": <id of the cell without the variant keys>, "values": {...}}
    group: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, config: dict, group: dict | None = None) -> "Cell":
        """The typed cell of a resolved config (spec/cells.py `resolve_cell`)."""
        t = TrainConfig(**config["train"])
        c = dict(config)
        return cls(
            data=DataPart(Choice.of("dataset", c["dataset"]), _choices("preprocess", c.get("preprocess")),
                          _choices("augment", c.get("augment")), t.val_fraction, t.folds, t.fold),
            model=Choice.of("model", c["model"]),
            train=TrainPart(t, Choice.of("optimizer", c["optimizer"]),
                            Choice.of("schedule", c.get("schedule")),
                            _choices("regularization", c.get("regularization")),
                            Choice.of("loss", c.get("loss")), Choice.of("distill", c.get("distill"))),
            backend=Choice.of("backend", c["backend"]),
            compress=CompressPart(Choice.of("prune", c.get("prune")),
                                  Choice.of("quantize", c.get("quantize"))),
            deploy=Choice.of("deploy", c.get("deploy")),
            metrics=_choices("metrics", c.get("metrics")),
            plugins=dict(c["plugins"]) if c.get("plugins") else None,
            cell_id=identity(config), group=dict(group) if group else None)

    @property
    def task(self) -> str:
        """The task its dataset poses (spec/tasks.py), known before the data loads."""
        return task_of(self.data.dataset.spec())

    def choice(self, key: str):
        """A key's value by its name: a Choice, a tuple of them, or None."""
        for part in (self, self.data, self.train, self.compress):
            if key in getattr(type(part), "__dataclass_fields__", {}) and key != "train":
                return getattr(part, key)
        raise KeyError(key)

    def as_config(self, only: tuple[str, ...] | None = None) -> dict:
        """The resolved config as a suite writes it: what the record keeps (plain data);
        `only` these keys (and no plugins) where given."""
        out: dict[str, Any] = {}
        for key in K.KEYS:
            if only is not None and key.name not in only:
                continue
            if key.name == "train":
                out["train"] = self.train.settings.model_dump()
                continue
            value = self.choice(key.name)
            if key.many:
                value = [c.spec() for c in value]
            elif value is not None:
                value = value.spec()
            if value or key.name not in LATER_KEYS:
                out[key.name] = value
        if self.plugins and only is None:
            out["plugins"] = dict(self.plugins)
        return json.loads(json.dumps(out, default=_plain))

    def replaced(self, **specs) -> "Cell":
        """The same cell with these keys set to these (checked) specs, as a suite writes
        them: `cell.replaced(backend={"name": "cuda", ...})`."""
        from modelopt.spec.cells import check_spec, normalize
        from modelopt.spec.keys import BY_KEY

        checked = {k: check_spec(k, normalize(k, v), BY_KEY) for k, v in specs.items()}
        return Cell.of({**self.as_config(), **checked}, self.group)

    def teacher(self) -> "Cell":
        """The KD teacher's own cell: the keys it sets itself (model, optimizer, training),
        those it takes from this student (data, backend) and none of the others, as each
        key declares (spec/keys.py). It trains on the student's validation split."""
        own = self.train.distill.params["teacher"]
        student = self.as_config()
        config = {}
        for key in K.KEYS:
            use = key.for_teacher
            if use == "own":
                config[key.name] = own.get(key.name)
            elif use == "student":
                config[key.name] = student.get(key.name)
        config["train"] = {**own["train"], "val_fraction": self.data.val_fraction,
                           "folds": self.data.folds, "fold": self.data.fold}
        # the teacher trains on the whole training split even when the student sees a
        # subsample (the regime where Hinton et al. saw distillation help most)
        config["preprocess"] = [c.spec() for c in self.data.preprocess
                                if not c.info.selects_rows]
        if student.get("plugins"):
            config["plugins"] = student["plugins"]
        return Cell.of(config)


def _plain(value):
    return str(value)


# ---------------------------------------------------------------- identity

def canonical(config: dict) -> dict:
    """What a resolved config sets: keys left unset, parameters at their entry's default
    and training settings at theirs are left out, so a cell's id does not change when a
    later version adds a parameter or a key with a default. Where the suite's own code was
    found (its folder) is left out: the same cell run from another checkout is the same."""
    out: dict[str, Any] = {}
    for key in K.KEYS:
        value = config.get(key.name)
        if key.name == "train":
            out["train"] = TrainConfig(**(value or {})).model_dump(exclude_defaults=True)
            for field, of in (("finetune_optimizer", "optimizer"),
                              ("finetune_schedule", "schedule")):
                if out["train"].get(field):  # a technique's spec: what it sets, as any
                    out["train"][field] = _canonical_choice(K.BY_NAME[of], out["train"][field])
        elif key.many and value:
            out[key.name] = [_canonical_choice(key, s) for s in value]
        elif not key.many and value is not None:
            out[key.name] = _canonical_choice(key, value)
    if config.get("plugins"):
        out["plugins"] = list(config["plugins"]["modules"])
    return out


EXTRA_IDENTITY = {"weights": weights.identity}  # trained weights: the file's content


def _canonical_choice(key: K.Key, spec: dict) -> dict:
    entry = key.registry.get(spec["name"])
    defaults = {p.name: p.default for p in entry.params}
    out: dict[str, Any] = {"name": spec["name"]}
    for name, value in spec.items():
        if name == "name":
            continue
        if isinstance(value, dict) and "model" in value:  # a KD teacher: a config of its own
            value = canonical(value)
        if name in EXTRA_IDENTITY:  # a key's extra parameter: what of it is the cell's
            value = EXTRA_IDENTITY[name](value)
        default = defaults.get(name, inspect.Parameter.empty)
        if default is inspect.Parameter.empty or _jsonable(value) != _jsonable(default):
            out[name] = value
    return out


def _jsonable(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def identity(config: dict) -> str:
    """The cell's id: a hash of what it sets (see `canonical`)."""
    blob = json.dumps(canonical(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]
