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


def left_out(df, dirs: list) -> list[str]:
    """What an export leaves out that a dashboard's reader would miss, said on the command
    line: cells with no seed ok (their series stop), and directories whose saved models
    were never timed, or trained again since (no latency series)."""
    from modelopt.results import latency
    from modelopt.results.labels import joined, label_columns
    from modelopt.results.report import aggregate

    out = []
    for suite, part in df.groupby("suite", sort=False):
        agg = aggregate(part)
        none = agg[agg["n"] == 0]
        if not none.empty:
            labels = label_columns(agg)
            names = [f"[{joined(r, labels)}] ({', '.join(f'{k} {v}' for k, v in r['statuses'].items())})"
                     for _, r in none.iterrows()]
            out.append(f"{suite}: {len(names)} cell(s) with no seed ok export nothing: "
                       + "; ".join(names[:5]) + (" ..." if len(names) > 5 else ""))
    for d in dirs:
        if latency.artifacts(d) and latency.current(d) is None:
            out.append(f"{d}: its saved models are not timed" + (
                " since they were saved again" if latency.read(d) else "")
                + ": no latency exported (`modelopt time DIR` times them)")
    return out
