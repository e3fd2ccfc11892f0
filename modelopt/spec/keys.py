"""The keys a cell may set, each declared once with the stage it acts in.

A cell runs in stages: data -> model -> train -> compress -> deploy -> measure. Whatever
needs to know about a key derives it from its declaration here, never from a list kept
elsewhere: which keys determine the trained network (cells that differ only in later keys
share one, run/dense.py), what a KD teacher takes as its own, inherits from its student or
leaves out, which keys the report calls compression, and what `plan` shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from modelopt.spec.registries import (
    AUGMENT,
    BACKENDS,
    DATASETS,
    DEPLOYERS,
    DISTILLERS,
    LOSSES,
    METRICS,
    MODELS,
    OPTIMIZERS,
    PREPROCESS,
    PRUNERS,
    QUANTIZERS,
    REGULARIZERS,
    SCHEDULES,
)
from modelopt.spec.registry import Registry

Stage = Literal["data", "model", "train", "compress", "deploy", "measure"]
STAGES: tuple[Stage, ...] = ("data", "model", "train", "compress", "deploy", "measure")
# what a KD teacher does with a key: sets its own value, takes its student's, or goes without
TeacherUse = Literal["own", "student", "none"]


@dataclass(frozen=True)
class Key:
    """One cell key: its registry (None: the `train` mapping), its stage, and how a suite
    writes it. `teacher` defaults from the stage: the data is the student's, the model and
    its training the teacher's own, and what happens after training is not the teacher's."""

    name: str
    stage: Stage
    registry: Registry | None
    many: bool = False  # a list of techniques that combine (regularization: [l1, l2])
    required: bool = False
    default: str | None = None  # the entry a cell that names none gets
    implied: str | None = None  # the entry that is the same as naming none (deploy: eager)
    unnamed: str = "none"  # a table's word for a cell that names none (loss: the task's own)
    teacher: TeacherUse | None = None
    # what the report calls compression (None: the compress stage's keys)
    compresses: bool | None = None
    # parameters every entry of the key takes, besides its own signature's, each checked
    # by a function of spec/ (a model's trained `weights:`, spec/weights.py)
    extra: tuple[str, ...] = ()

    @property
    def trains(self) -> bool:
        """Whether the key changes the trained network (acts at or before training)."""
        return STAGES.index(self.stage) <= STAGES.index("train")

    @property
    def for_teacher(self) -> TeacherUse:
        if self.teacher is not None:
            return self.teacher
        return {"data": "student", "model": "own", "train": "own"}.get(self.stage, "none")


KEYS: tuple[Key, ...] = (
    Key("dataset", "data", DATASETS, required=True),
    Key("preprocess", "data", PREPROCESS, many=True),
    Key("augment", "data", AUGMENT, many=True, teacher="none"),  # the student's batches' own
    Key("model", "model", MODELS, required=True, extra=("weights",)),
    Key("optimizer", "train", OPTIMIZERS, default="adam"),
    Key("schedule", "train", SCHEDULES),
    Key("regularization", "train", REGULARIZERS, many=True),
    Key("loss", "train", LOSSES, unnamed="task default"),
    Key("distill", "train", DISTILLERS, teacher="none", compresses=True),  # a smaller student
    Key("backend", "train", BACKENDS, default="cpu", teacher="student"),
    Key("train", "train", None),
    Key("prune", "compress", PRUNERS),
    # a quantizer that acts during training (weight clipping's hooks) declares it as an
    # entry fact (QuantizeInfo.trains); the others only convert the trained network
    Key("quantize", "compress", QUANTIZERS),
    Key("deploy", "deploy", DEPLOYERS, implied="eager"),
    Key("metrics", "measure", METRICS, many=True),
)
BY_NAME: dict[str, Key] = {k.name: k for k in KEYS}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def training_keys(keys=KEYS) -> tuple[str, ...]:
    """The keys the trained network depends on."""
    return tuple(k.name for k in keys if k.trains)


def teacher_keys(use: TeacherUse, keys=KEYS) -> tuple[str, ...]:
    return tuple(k.name for k in keys if k.for_teacher == use)


def compression_keys(keys=KEYS) -> tuple[str, ...]:
    """What the report calls compression: what changes the trained network into a smaller or
    faster one (pruning, quantization), and distillation, which trains a small one."""
    return tuple(k.name for k in keys
                 if (k.compresses if k.compresses is not None else k.stage == "compress"))


# how a suite writes them
SINGLE: tuple[str, ...] = tuple(k.name for k in KEYS if k.registry is not None and not k.many)
MANY: tuple[str, ...] = tuple(k.name for k in KEYS if k.many)
REQUIRED: tuple[str, ...] = tuple(k.name for k in KEYS if k.required)
IMPLIED: dict[str, str] = {k.name: k.implied for k in KEYS if k.implied}
UNNAMED: dict[str, str] = {k.name: k.implied or k.unnamed for k in KEYS}  # as labels say it
# what a cell that does not name them gets
DEFAULTS: dict[str, Any] = {**{k.name: {"name": k.default} for k in KEYS if k.default},
                            "train": {}}
# suite key -> registry
BY_KEY: dict[str, Registry] = {k.name: k.registry for k in KEYS if k.registry is not None}
