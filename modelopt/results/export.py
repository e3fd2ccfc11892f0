"""Exports: github-action-benchmark's custom JSON (one file per direction), and the
aggregated table as `report --csv` writes it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from modelopt.results import metrics as M


@dataclass(frozen=True)
class SuiteTable:
    """One suite's cells aggregated over seeds, with the axes that name them."""
    suite: str
    agg: object  # pandas.DataFrame, one row per cell
    labels: list[str]


def per_suite(df) -> list[SuiteTable]:
    """Aggregated once per export: the exporter and `left_out` read the same tables. Each
    suite's cells are named by its own axes, so a series keeps its name (the dashboard's
    key) whichever other suites are exported beside it."""
    from modelopt.results.labels import label_columns
    from modelopt.results.report import aggregate

    tables = []
    for suite, part in df.groupby("suite", sort=False):
        agg = aggregate(part)
        tables.append(SuiteTable(str(suite), agg, label_columns(agg)))
    return tables


def github_action_benchmark(tables: list[SuiteTable],
                            metrics: list[str] | None = None) -> dict[str, list[dict]]:
    """{"bigger": [...], "smaller": [...]}: entries {name, unit, value, range, extra} for
    benchmark-action/github-action-benchmark's customBiggerIsBetter / customSmallerIsBetter.
    One entry per cell and metric: the mean over seeds that finished ok, ± std as range
    (none with one seed)."""
    from modelopt.results.labels import joined, n_seeds

    out: dict[str, list[dict]] = {"bigger": [], "smaller": []}
    labelled = [(r, joined(r, t.labels)) for t in tables
                for _, r in t.agg[t.agg["n"] > 0].iterrows()]
    for r, label in labelled:
        for metric in metrics or [m.name for m in M.directed()]:
            value = r.get(metric)
            if value is None or (isinstance(value, float) and np.isnan(value)):
                continue
            rule = M.TABLE[metric]
            own = r.get(f"{metric}_n")  # a figure not every seed has: its own count
            n = int(r["n"] if own is None or pd.isna(own) else own)
            entry = {"name": f"{r['suite']} [{label}] {metric}", "unit": rule.unit or "value",
                     "value": float(value), "extra": f"n={n_seeds(n)}; cell {r['cell_id']}"}
            if n > 1:  # one seed has no spread: no range, rather than "± 0"
                entry["range"] = f"± {float(r.get(f'{metric}_std', 0) or 0):.4g}"
            out["bigger" if rule.higher_is_better else "smaller"].append(entry)
    return out


def left_out(tables: list[SuiteTable], dirs: list) -> list[str]:
    """What an export leaves out that a dashboard's reader would miss, said on the command
    line: cells with no seed ok (their series stop), and directories whose saved models
    were never timed, or trained again since (no latency series)."""
    from modelopt.results import latency
    from modelopt.results.labels import joined

    out = []
    for t in tables:
        none = t.agg[t.agg["n"] == 0]
        if not none.empty:
            names = [f"[{joined(r, t.labels)}] ({', '.join(f'{k} {v}' for k, v in r['statuses'].items())})"
                     for _, r in none.iterrows()]
            out.append(f"{t.suite}: {len(names)} cell(s) with no seed ok export nothing: "
                       + "; ".join(names[:5]) + (" ..." if len(names) > 5 else ""))
    for d in dirs:
        if latency.artifacts(d) and latency.current(d) is None:
            out.append(f"{d}: its saved models are not timed" + (
                " since they were saved again" if latency.read(d) else "")
                + ": no latency exported (`modelopt time DIR` times them)")
    return out


def csv_table(agg: pd.DataFrame) -> pd.DataFrame:
    """The aggregated table as `report --csv` gives it: a spread of fewer than two seeds is empty,
    not 0 (one seed shows no spread; it does not show that there is none), and a yes/no
    figure is the share of seeds that said yes, without a spread."""
    drop = [c for c in ("cell", "statuses") if c in agg.columns]
    yes_no = [n for n, m in M.TABLE.items() if m.fmt == "bool" or n == "target_reached"]
    drop += [f"{n}_std" for n in yes_no if f"{n}_std" in agg.columns]
    out = agg.drop(columns=drop)
    for c in [c for c in out.columns if c.endswith("_std")]:  # a figure's own n, else the cell's
        own = out[f"{c[:-4]}_n"].fillna(out["n"]) if f"{c[:-4]}_n" in out.columns else out["n"]
        out.loc[own < 2, c] = float("nan")
    text = [c for c in out.columns if not pd.api.types.is_numeric_dtype(out[c])]  # a sheet
    # runs a cell that starts `=` (or + - @) as a formula: such text is quoted
    out[text] = out[text].map(lambda v: f"'{v}" if isinstance(v, str) and v and v[0] in "=+-@" else v)
    return out
