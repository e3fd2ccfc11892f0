"""A user's CSV table: numeric feature columns and a label column, whose values say the
task (strings, booleans or integers are classes, floats a regression target); or, with
`text:`, a text classification table (techniques/text.py)."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np

from modelopt.spec.registries import DATASETS
from modelopt.spec.registry import PositiveInt
from modelopt.techniques import tasks
from modelopt.techniques.data import (
    ClassNames,
    Data,
    Split,
    classes_are,
    no_holes,
    numbered,
    of_values,
    single_samples,
    to_data,
)
from modelopt.techniques.errors import DataUnavailable


def _check_csv(params: dict) -> None:
    """The file exists, has the target column, and its other columns are numbers (read from
    its first 1,000 rows, so a large file is not read whole to validate a suite)."""
    import pandas as pd

    p = Path(params["path"]).expanduser()
    if not p.is_file():
        raise DataUnavailable(f"csv: no file at {p.resolve()}")
    if params.get("text") is not None:  # a text table (techniques/text.py)
        from modelopt.techniques import text

        return text.check_table("csv", params)
    head = pd.read_csv(p, nrows=1000)
    if params["target"] not in head.columns:
        raise ValueError(f"csv: {p} has no column '{params['target']}'; columns: "
                         f"{', '.join(head.columns)}")
    bad = [c for c in head.columns
           if c != params["target"] and not pd.api.types.is_numeric_dtype(head[c])]
    if bad:
        # a column of words with spaces is text a tokenizer reads: `text: COLUMN`
        words = [c for c in bad if head[c].astype(str).str.contains(" ").mean() > 0.5]
        raise ValueError(f"csv: non-numeric feature columns {bad} in {p}; encode them first"
                         + (f", or, for a text classifier, name the text column: `text: "
                            f"{words[0]}` (docs/how-to/text.md)" if words else ""))
    no_holes(head, p)  # the rest of the file when the cell reads it; the labels whole,
    _, holes, found, lonely = _labels(str(p), params["target"], p.stat().st_mtime_ns)
    if holes:
        raise ValueError(holes)
    classes_are("csv", params.get("classes"), found)
    if lonely and tasks.get(_csv_task(params)).info.class_outputs:
        raise ValueError(single_samples(
            "csv", f"'{params['target']}' of {p}", found, lonely, "a quantity written as integers (a "
            "price, a count) is a regression target: say `task: regression`; else merge or "
            "drop the rare classes"))


def _csv_task(params: dict) -> str:
    """`task`, or with `auto` the label column's: strings, booleans or integers are classes,
    floats are a regression target (say `task: regression` for integer quantities)."""
    if params.get("task", "auto") != "auto":
        return params["task"]
    if params.get("text") is not None:
        return "classification"  # texts are classified (text.check_table)
    p = Path(params["path"]).expanduser()
    return _labels(str(p), params["target"], p.stat().st_mtime_ns)[0]


@functools.lru_cache(maxsize=32)
def _labels(path: str, target: str, mtime_ns: int
            ) -> tuple[str, str | None, frozenset, list[str]]:
    """The task the label column says, why it cannot be used (empty values; None: it
    can), its labels as text, and those only one row has. Read once per file version:
    validation asks for every cell, and the run for every record it writes."""
    import pandas as pd

    column = pd.read_csv(path, usecols=[target])
    try:
        no_holes(column, Path(path))
        holes = None
    except ValueError as exc:
        holes = str(exc)
    task = "regression" if pd.api.types.is_float_dtype(column[target]) else "classification"
    counts = column[target].astype(str).value_counts()
    return task, holes, frozenset(counts.index), sorted(counts.index[counts == 1])


@DATASETS.register("csv", input="vector", task_from=_csv_task, preflight=_check_csv,
                   input_from=lambda p: "tokens" if p.get("text") is not None else "vector")
def csv(seed: int, /, path: str, target: str, task: str = "auto",
        test_fraction: Split = 0.2, split_seed: int = 0, text: str | None = None,
        tokenizer: str = "char", max_length: PositiveInt = 128,
        truncation: Literal["end", "start"] = "end",
        padding: Literal["right", "left"] = "right", classes: ClassNames | None = None) -> Data:
    """A local CSV table: numeric feature columns and a `target` label column. The task
    follows the labels (`auto`: strings, booleans or integers are classes, floats a
    regression target) unless `task` names one. With `text`, a text classification table:
    that column's texts tokenized (techniques/text.py), its other columns unused. Classes
    are numbered in sorted order, or in `classes`' (a trained model's own numbering)."""
    import pandas as pd

    params = {"path": path, "target": target, "text": text, "tokenizer": tokenizer, "task": task}
    _check_csv(params)
    task = _csv_task(params)
    if text is not None:  # a text classification table (techniques/text.py)
        from modelopt.techniques import text as texts

        return texts.table("csv", path, target, text, tokenizer, max_length, truncation,
                           padding, test_fraction, split_seed, classes=classes)
    df = pd.read_csv(Path(path).expanduser())
    no_holes(df, Path(path).expanduser())
    features = df.drop(columns=[target])
    if not tasks.get(task).info.class_outputs:
        return of_values("csv", features.to_numpy(), df[target].to_numpy(), test_fraction,
                       split_seed, task)
    from sklearn.model_selection import train_test_split

    labels, y = numbered("csv", df[target].to_numpy(), classes)
    xtr, xte, ytr, yte = train_test_split(features.to_numpy(np.float32), y,
                                          test_size=test_fraction, random_state=split_seed,
                                          stratify=y)
    return replace(to_data("csv", xtr, ytr, xte, yte, len(labels), task),
                   info={"class_names": [str(c) for c in labels]})
