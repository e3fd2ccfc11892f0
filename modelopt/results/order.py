"""The order of a table's rows: best first, and the same order for the same figures."""

from __future__ import annotations

import pandas as pd

from modelopt.results import metrics as M
from modelopt.results.labels import label_columns


def ranked(ok: pd.DataFrame, key: str, first: set[str] = frozenset()) -> pd.DataFrame:
    """Rows best first by `key`; ties with the cells of `first` (the baselines) ahead, then
    by label: the same page from the same figures, whatever order the records came in. A
    figure without a direction (a plugin task's descriptive headline) has no best: its rows
    go by label, the baselines first."""
    cols = label_columns(ok)
    label = ok[cols].astype(str).agg(" ".join, axis=1) if cols else ok["cell_id"]
    order = pd.DataFrame({"key": ok[key], "later": ~ok["cell_id"].isin(first), "label": label})
    direction = M.TABLE[key].higher_is_better if key in M.TABLE else None
    by = ["key", "later", "label"] if direction is not None else ["later", "label"]
    order = order.sort_values(by, ascending=[direction is False, True, True][-len(by):],
                              kind="stable", na_position="last")
    return ok.loc[order.index]
