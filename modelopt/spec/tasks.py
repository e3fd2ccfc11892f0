"""What a task is to a reader of its results: the figure that ranks its cells, the columns
its report shows, whether its outputs are class scores, the loss it trains with by default.

A task is a registered entry (`TASKS`, spec/registries.py) whose object carries its
behaviour: loss, figures, output check, target scaling (techniques/tasks.py). These are its
facts, the part report, plots and compare need without its code: a run writes them into its
suite.json, and results read them from there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from modelopt.spec.metric import Metric


@dataclass(frozen=True)
class TaskInfo:
    headline: str  # the figure that ranks its cells (a metric table name): the report's first
    columns: tuple[str, ...]  # the report's task columns, after the cell's axes
    # outputs are scores per class and targets class indices: what distillation's soft
    # targets, the deploy check's class agreement and class-balanced subsampling need
    class_outputs: bool = False
    default_loss: str = ""  # the loss a cell that names none trains with (a LOSSES entry)
    # its own figures, where the metric table does not declare them yet (as a measure's)
    metrics: tuple[Metric, ...] = ()
    # what its validation score is, where that is not its headline figure (training curves'
    # axis): "" where it is
    score_label: str = ""

    def __post_init__(self):
        if self.headline not in self.columns:
            raise TypeError(f"headline '{self.headline}' is not among the columns "
                            f"{list(self.columns)}")

    @property
    def best_val(self) -> str:
        """The figure of the test score at the evaluation with the best validation score."""
        return f"{self.headline}_best_val"

    def facts(self) -> dict:
        """Its fields as `TASKS.register` takes them."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def as_dict(self) -> dict:
        """What a run writes into its suite.json (its figures go to the metric declarations)."""
        doc = asdict(self)
        del doc["metrics"]
        doc["columns"] = list(self.columns)
        return doc

    @classmethod
    def from_dict(cls, doc: dict) -> "TaskInfo":
        return cls(**{**doc, "columns": tuple(doc.get("columns", ())), "metrics": ()})


# The built-in tasks' facts, as data. techniques/tasks.py registers the two entries with
# them; results read runs from before suite.json stored its tasks (and records from before
# they stored their task) with them.
BUILTIN: dict[str, TaskInfo] = {
    "classification": TaskInfo("accuracy", ("accuracy", "accuracy_best_val", "f1_macro"),
                               class_outputs=True, default_loss="cross_entropy"),
    "regression": TaskInfo("r2", ("r2", "r2_best_val", "rmse", "mae"), default_loss="mse"),
}
# the language-modelling task (techniques/tasks.py) declares its own figures with its entry
DEFAULT = "classification"  # a dataset's task where it declares none
