"""Every registry a suite key names, with the typed facts its entries declare.

The registries live here, empty; the modules of `modelopt.techniques` and `modelopt.run`
fill them when imported, as a user's plugin module does (`plugins.load`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from modelopt.spec import tasks
from modelopt.spec.registry import Registry
from modelopt.spec.tasks import TaskInfo

InputKind = Literal["signal", "vector", "image", "tokens"]
Task = str  # a TASKS entry's name


@dataclass(frozen=True)
class DatasetInfo:
    input: InputKind | None = None  # None: not checked against the model
    # the input kind from the dataset's parameters, when they decide it (csv: a text column)
    input_from: Callable[[dict], InputKind] | None = None
    task: Task = tasks.DEFAULT
    # the task from the dataset's parameters, when they decide it (csv: its label column)
    task_from: Callable[[dict], Task] | None = None
    # checks what the dataset needs on disk, from its parameters, when the suite loads
    # (raises with a message saying where to put the files); None: nothing to check
    preflight: Callable[[dict], None] | None = None
    # streams its training split from files in DataLoader worker processes: how many
    # workers, from its parameters (the scheduler counts them as cores the cell takes).
    # The training split is then not in memory: only preprocessing that reads the labels
    # alone (PreprocessInfo.streams) applies.
    workers: Callable[[dict], int] | None = None
    # fixes its validation split (a corpus: by position), so cv cannot carve folds of it
    fixed_validation: bool = False


@dataclass(frozen=True)
class ModelInfo:
    accepts: tuple[InputKind, ...] = ("signal", "vector", "image")  # input kinds it takes
    # has channels structured pruning can remove (False: e.g. a recurrent net, whose
    # hidden units Torch-Pruning's graph does not reach)
    channels: bool = True
    # the tasks whose outputs it gives (a decoder: a score per position); () for any
    tasks: tuple[Task, ...] = ()
    # a parameter that sets them instead (hf's `head`), and the tasks each value gives
    tasks_by: str | None = None
    tasks_of: tuple[tuple[str, tuple[Task, ...]], ...] = ()
    # checks its parameters need beyond their types (files, one of two), when the suite loads
    preflight: Callable[[dict], None] | None = None
    # a parameter that loads trained weights itself (hf's `path`), besides `weights:`
    trained_by: str | None = None


@dataclass(frozen=True)
class OptimizerInfo:
    full_batch: bool = False  # one step sees the whole training split


@dataclass(frozen=True)
class ScheduleInfo:
    on_eval: bool = False  # stepped once per evaluation with the validation score


@dataclass(frozen=True)
class LossInfo:
    task: Task


@dataclass(frozen=True)
class PreprocessInfo:
    last: bool = False  # changes how inputs are stored: nothing may follow it
    # keeps a subset of the training rows (a KD teacher still trains on all of them)
    selects_rows: bool = False
    # needs the labels alone, not the inputs: it applies to a training split streamed from
    # files too (an image folder's)
    streams: bool = False


@dataclass(frozen=True)
class AugmentInfo:
    inputs: tuple[InputKind, ...] = ("signal", "vector", "image")


@dataclass(frozen=True)
class PruneInfo:
    structured: bool = False  # removes whole channels (the model must have them)


@dataclass(frozen=True)
class WeightsInfo:
    # the file suffixes it reads: `weights: model.pth` picks the source by them
    suffixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class QuantizeInfo:
    # acts during training (hooks after each optimizer step), so the trained network depends
    # on it; the others only convert the trained network afterwards
    trains: bool = False


@dataclass(frozen=True)
class DistillInfo:
    class_outputs: bool = True  # soft targets need class outputs (TaskInfo.class_outputs)

    @property
    def tasks(self) -> tuple[Task, ...]:
        """The registered tasks it suits."""
        return tuple(n for n in TASKS.names()
                     if TASKS.info(n).class_outputs or not self.class_outputs)


@dataclass(frozen=True)
class BackendInfo:
    # trains one cell on several processes (a `world_size` parameter): under a launcher
    # (torchrun) these cells run on the launched ranks, with the launched world size
    ranks: bool = False


DATASETS = Registry("dataset", DatasetInfo, ("seed",))  # (seed, /, ...) -> Data
MODELS = Registry("model", ModelInfo, ("input_shape", "num_outputs"))  # (..., /, ...) -> nn.Module
OPTIMIZERS = Registry("optimizer", OptimizerInfo, ("model",))  # (model, /, ...) -> torch.optim.Optimizer
SCHEDULES = Registry("schedule", ScheduleInfo, ("optimizer", "total_steps"))  # -> an LR scheduler
REGULARIZERS = Registry("regularization")  # (...) -> Term
LOSSES = Registry("loss", LossInfo)  # (...) -> nn.Module
PREPROCESS = Registry("preprocess", PreprocessInfo, ("data", "seed"))  # (data, seed, /, ...) -> Data
AUGMENT = Registry("augment", AugmentInfo)  # (...) -> fn(batch, generator) -> batch
PRUNERS = Registry("prune", PruneInfo)  # (...) -> Pruning
DISTILLERS = Registry("distill", DistillInfo)  # (...) -> Distiller
QUANTIZERS = Registry("quantize", QuantizeInfo)  # (...) -> Quantizer
BACKENDS = Registry("backend", BackendInfo)  # (...) -> Backend
DEPLOYERS = Registry("deploy")  # (...) -> Format: how the model ships
METRICS = Registry("metric")  # (...) -> Measure: extra figures of the cells that name it
WEIGHTS = Registry("weights", WeightsInfo, ("path",))  # (path, /, ...) -> state_dict: a model's `weights:`
# checks of a whole resolved cell that need modelopt's techniques (trained weights fit the
# model its spec builds), filled like the registries, run when the suite loads
CELL_CHECKS: list[Callable[[dict], None]] = []
TASKS = Registry("task", TaskInfo)  # () -> Task: loss, figures, output check of a task


def task_of(spec: dict) -> str:
    """A dataset's task, known before it loads (for validation and the record); `spec` has
    its parameters checked (defaults filled in)."""
    info = DATASETS.info(spec["name"])
    task = info.task_from(spec) if info.task_from is not None else info.task
    TASKS.get(task)  # one that is not registered: an error naming those that are
    return task


def suits(task: Task, *, loss: str | None = None, distill: str | None = None) -> str | None:
    """Why a loss or a distiller does not suit a task (None: they do), for suite validation."""
    if loss is not None and LOSSES.info(loss).task != task:
        return f"loss '{loss}' is for {LOSSES.info(loss).task}"
    if distill is not None and DISTILLERS.info(distill).class_outputs \
            and not TASKS.info(task).class_outputs:
        return f"distill '{distill}' needs a task with class outputs"
    return None


def spans_ranks(backend_spec: dict) -> bool:
    """Whether a cell with this backend trains on several ranks (see BackendInfo)."""
    return BACKENDS.info(backend_spec["name"]).ranks
