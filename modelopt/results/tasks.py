"""The tasks of the results being read: the figure that ranks each one's cells and the
columns its report shows (spec/tasks.py's TaskInfo), known without the task's code.

A run writes the facts of the tasks its cells use into its suite.json (`tasks`), and readers
declare them here, as a plugin measure's figures join the metric table; runs from before
that read with the built-in tasks' facts, which this table starts with.
"""

from __future__ import annotations

from collections.abc import Iterable

from modelopt.results import metrics as M
from modelopt.results.files import ResultsError
from modelopt.spec.tasks import BUILTIN, TaskInfo

KNOWN: dict[str, TaskInfo] = dict(BUILTIN)


def declare(name: str, info: TaskInfo) -> None:
    """Add a task's facts; the same ones twice are harmless, a clash is not."""
    known = KNOWN.get(name)
    if known is not None and known.as_dict() != info.as_dict():
        raise ValueError(f"task '{name}' is declared twice, differently: {known} vs {info}")
    KNOWN[name] = info


def declare_all(docs: dict[str, dict], where: str = M.RUN_META) -> None:
    """Declare the tasks a run declared (its suite.json's `tasks`); a malformed declaration
    is a ValueError naming `where`."""
    for name, doc in docs.items():
        try:
            info = TaskInfo.from_dict(doc)
            odd = [c for c in (info.headline, *info.columns)
                   if not isinstance(c, str) or c not in M.TABLE]
            if odd:  # a page would look up a figure nothing declares
                raise ValueError(f"its figures name {odd[0]!r}, which is not a declared figure")
            declare(name, info)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: a task declaration that cannot be read ({exc})") \
                from None


def info(task: str) -> TaskInfo:
    try:
        return KNOWN[task]
    except KeyError:
        raise ResultsError(f"results of task '{task}', which their run's {M.RUN_META} does not "
                           f"declare (tasks known: {', '.join(KNOWN)}); report them from their "
                           "results directory, beside its suite.json") from None


def headline(task: str) -> str:
    """The figure that ranks a task's cells (accuracy, R²)."""
    return info(task).headline


def guess(figures: Iterable[str]) -> str:
    """The task of a record from before records stored it: the first known task whose
    headline figure it has (else the first, as a failed cell has none)."""
    have = set(figures)
    return next((name for name, facts in KNOWN.items() if facts.headline in have), next(iter(KNOWN)))


def headline_of(tasks: Iterable[str]) -> str:
    """The figure a page or a plot of several tasks' cells goes by: that of the first of them
    in this table (built-in tasks first, classification before regression)."""
    present = set(tasks)
    for name in present - set(KNOWN):
        info(name)  # an undeclared one: the error says so
    return next((facts.headline for name, facts in KNOWN.items() if name in present),
                next(iter(KNOWN.values())).headline)


def percent(metric: str) -> bool:
    """Whether a figure is a share that plots show in per cent (its format is `pct`)."""
    return M.TABLE[metric].fmt == "pct"


def axis_label(metric: str) -> str:
    """A figure's title as an axis label: `accuracy (%)`, `R²`."""
    title = M.TABLE[metric].title
    return f"{title.removesuffix(' %')} (%)" if percent(metric) else title


def score_label(task: str) -> str:
    """What a task's validation score is, as an axis label: its headline figure's, unless
    the task says otherwise (a language model's log-likelihood per token)."""
    return info(task).score_label or axis_label(headline(task))


def word(metric: str) -> str:
    """A figure's title as the start of a figure's title: `Accuracy`, `R²`."""
    title = M.TABLE[metric].title.removesuffix(" %")
    return title[:1].upper() + title[1:]
