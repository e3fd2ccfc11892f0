"""Exports: github-action-benchmark's custom JSON (one file per direction)."""

from __future__ import annotations

import numpy as np

from modelopt.results import metrics as M


def github_action_benchmark(df, metrics: list[str] | None = None) -> dict[str, list[dict]]:
    """{"bigger": [...], "smaller": [...]}: entries {name, unit, value, range, extra} for
    benchmark-action/github-action-benchmark's customBiggerIsBetter / customSmallerIsBetter.
    One entry per cell and metric: the mean over seeds that finished ok, ± std as range
    (none with one seed)."""
    from modelopt.results.labels import joined, label_columns, n_seeds
    from modelopt.results.report import aggregate

    out: dict[str, list[dict]] = {"bigger": [], "smaller": []}
    # each suite's cells named by its own axes: a series keeps its name (the dashboard's
    # key) whichever other suites are exported beside it
    labelled = []
    for _, part in df.groupby("suite", sort=False):
        agg = aggregate(part)
        labels = label_columns(agg)
        labelled += [(r, joined(r, labels)) for _, r in agg[agg["n"] > 0].iterrows()]
    for r, label in labelled:
        for metric in metrics or [m.name for m in M.directed()]:
            value = r.get(metric)
            if value is None or (isinstance(value, float) and np.isnan(value)):
                continue
            rule = M.TABLE[metric]
            entry = {"name": f"{r['suite']} [{label}] {metric}", "unit": rule.unit or "value",
                     "value": float(value),
                     "extra": f"n={n_seeds(int(r['n']))}; cell {r['cell_id']}"}
            if int(r["n"]) > 1:  # one seed has no spread: no range, rather than "± 0"
                entry["range"] = f"± {float(r.get(f'{metric}_std', 0) or 0):.4g}"
            out["bigger" if rule.higher_is_better else "smaller"].append(entry)
    return out
