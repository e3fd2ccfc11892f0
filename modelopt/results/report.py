"""Aggregation over seeds, cell labels, number formats and the table of every figure. Pure:
DataFrames in, DataFrames and strings out."""

from __future__ import annotations

import math

import pandas as pd
from tabulate import tabulate

from modelopt.results import metrics as M
from modelopt.results import tasks
from modelopt.results.labels import axis_labels, joined, label_columns
from modelopt.results.order import ranked
from modelopt.results.runtimes import is_reference
from modelopt.spec import match
from modelopt.spec.keys import IMPLIED, compression_keys
from modelopt.spec.match import config_matches


def _title(m: str) -> str:
    return M.TABLE[m].title


def _kind(m: str) -> str:
    return M.TABLE[m].fmt


COST_METRICS = ["params", "params_nonzero", "flops", "latency_ms_p50", "peak_rss_mb",
                "train_seconds", "steps_to_target", "time_to_target_s", "target_reached"]


def table_metrics() -> list[str]:
    """A table's columns where none are given: every known task's, then the costs."""
    return list(dict.fromkeys(c for t in tasks.KNOWN.values() for c in t.columns)) + COST_METRICS


def declared_figures(agg: pd.DataFrame, shown: list[str]) -> list[str]:
    """The figures a run declared for itself (a `metrics:` measure's, a plugin's) that a
    table showing `shown` leaves out."""
    return [c for c in agg.columns if c in M.TABLE and c not in M.BUILTIN and c not in shown
            and agg[c].notna().any()]


def cost_metrics(agg: pd.DataFrame) -> list[str]:
    """The cost columns of a table: the usual ones, and what compression adds where it ran."""
    cells = list(agg["cell"])
    cols = ["params", "params_nonzero"]
    if any(c.get("regularization") for c in cells):
        cols.append("params_above_1e-3")
    if any(c.get("prune") for c in cells):
        cols += ["sparsity", "flops", "flops_nonzero"]
    else:
        cols += ["flops"]
    cols.append("size_bytes")
    # zipped: what pruned zeros, or weights rounded to fewer values (a fake-quant plugin's,
    # stored as floats), save on disk
    if any(c.get("prune") or c.get("quantize") for c in cells):
        cols.append("size_bytes_compressed")
    cols += ["latency_ms_p50", "latency_ms_batch_p50"]
    # a decoder's generation, and tokens/s of token inputs, where the run measured them
    cols += [c for c in ("first_token_ms", "per_token_ms") if c in agg.columns]
    slimmed = M.column("slimmed", "params")
    if slimmed in agg.columns and agg[slimmed].notna().any():
        cols += [M.column("slimmed", f) for f in ("params", "size_bytes", "latency_ms_p50",
                                                 "latency_ms_batch_p50")]
        cols += [c for c in (M.column("slimmed", "first_token_ms"),
                             M.column("slimmed", "per_token_ms")) if c in agg.columns]
    return cols + ["speedup_batch", "speedup_batch1", "peak_rss_mb", "train_seconds",
                   "train_samples_s", *(["train_tokens_s"] if "train_tokens_s" in agg.columns
                                        else []),
                   "steps_to_target", "time_to_target_s", "target_reached"]


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (suite, cell): axis labels, n seeds ok, status counts, mean and std of
    every numeric metric over the seeds that finished ok."""
    if df.empty:
        return pd.DataFrame()
    rows = []
    for (suite, cid), g in df.groupby(["suite", "cell_id"], sort=False):
        ok = g[g["status"] == "ok"]
        cell = g["cell"].iloc[0]
        group = g["group"].iloc[0] if "group" in g.columns else None
        task = (g["task"].iloc[0] if "task" in g.columns and pd.notna(g["task"].iloc[0]) else
                tasks.guess(c for c in g.columns if g[c].notna().any()))
        row = {"suite": suite, "cell_id": cid, "cell": cell, "task": task,
               "group": group if isinstance(group, dict) else None, "n": len(ok),
               "runs": len(g), "statuses": dict(g["status"].value_counts())}
        errors = g.loc[g["status"] != "ok", "error"].dropna()
        row["error"] = errors.iloc[0].splitlines()[0] if len(errors) else None
        for col in df.columns:
            if col in ("suite", "cell_id", "seed", "status", "error", "cell", "curves", "extra",
                       "env", "duration_s", "started_at", "task", "group"):
                continue
            vals = pd.to_numeric(ok[col], errors="coerce").dropna() if len(ok) else pd.Series([], dtype=float)
            if len(vals) == 0:
                words = [v for v in ok[col] if isinstance(v, str)] if len(ok) else []
                if words:  # a fact in words (int8_path, runtime): the seeds' first
                    row[f"text:{col}"] = words[0]
                continue
            row[col] = float(vals.mean())
            row[f"{col}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
            if len(vals) < len(ok):  # a figure not every seed has (time_to_target_s): its n
                row[f"{col}_n"] = len(vals)
        rows.append(row)
    agg = pd.DataFrame(rows)
    labels = []
    for _, g in agg.groupby("suite", sort=False):
        lab = axis_labels(list(g["cell"]))
        lab.index = g.index
        labels.append(lab)
    agg = pd.concat([agg, pd.concat(labels)], axis=1)
    return agg


def fmt(value: float, std: float | None, kind: str, agreed: bool = False) -> str:
    """A mean ± its seeds' spread as a table shows it: the mean in its metric's format, the
    spread in the same format where that shows it, else to two significant digits (0.401 ±
    0.0014, 0.3 ± 0.043: never ± 0.00137 beside 2, nor ± 0.0 for a spread that is not).
    `agreed`: a score over two or more seeds, said `± 0` where they agree exactly (bare, it
    read as one seed's); counts (parameters, bytes) stay bare."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if std is not None and math.isnan(std):  # one value (a fold, a seed): no spread to say
        std = None
    scale = 100 if kind == "pct" else 1

    def one(v):
        if kind == "pct":
            return f"{100 * v:.1f}"
        if kind == "int":
            return f"{v:,.0f}"
        if kind == "si":
            for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
                if abs(v) >= div:
                    return f"{v / div:.3g}{unit}"
            return f"{v:.3g}"
        if kind.startswith("f"):
            return f"{v:,.{int(kind[1:])}f}"
        if abs(v) >= 10 ** int(kind[1:]):  # 3,120 (an MSE), never 3.12e+03
            return f"{v:,.0f}"
        return f"{v:.{int(kind[1:])}g}"
    mean = one(value)
    if kind.startswith("f") and value and float(mean.replace(",", "")) == 0:
        mean = f"{value:.2g}"  # 0.04 s of training is not "0.0"
    if std is None or std <= 1e-12 * max(1.0, abs(value)):  # equal figures, summed apart
        return f"{mean} ± 0" if agreed and std is not None else mean
    fixed = kind in ("pct", "int") or kind.startswith("f")
    shown = one(std)
    if fixed and float(shown.replace(",", "")) != 0:
        return f"{mean} ± {shown}"
    return f"{mean} ± {_spread(scale * std)}"


def _spread(std: float) -> str:
    """Two significant digits, in fixed notation (0.000078, not 7.8e-05; 150 from 100 on)."""
    if abs(std) >= 100:
        return f"{std:,.0f}"
    return f"{std:.{max(0, 1 - math.floor(math.log10(abs(std))))}f}"


COMPRESSION_KEYS = compression_keys()


def baselines(agg: pd.DataFrame, spec: dict | None) -> tuple[dict[str, pd.Series], str]:
    """({cell_id: the row it is compared with}, how they were chosen). The candidates are the
    rows matching every key the suite's `baseline:` names (a technique name and the
    parameters given; `none` for an optional technique that is off); without `baseline:`, the
    uncompressed rows (no prune, quantize or distill), if some rows are compressed. Each row
    is compared with the candidate equal to it on every other key: with `model: [mlp, cnn]`
    the pruned cnn against the dense cnn, never the mlp."""
    found = _candidates(agg, spec)
    if found is None:
        return {}, ""
    by_rest, rest, how = found
    out = {}
    for _, r in agg[agg["n"] > 0].iterrows():
        same = by_rest.get(rest(r["cell"]), [])
        if len(same) == 1:
            out[r["cell_id"]] = same[0]
    _same_budget(agg, out, by_rest, rest)
    return out, (how if out else "")


def _same_budget(agg: pd.DataFrame, out: dict, by_rest: dict, rest) -> None:
    """A row whose baseline trained fewer steps than it (a fine-tune after pruning) is
    compared with a candidate that trained as many and differs from it in nothing else, where
    there is one (`match_budget`'s rows): then the Δ is the technique's, not the budget's."""
    def loose(cell: dict) -> str:
        train = {k: v for k, v in (cell.get("train") or {}).items() if k != "steps"}
        return rest({**cell, "train": train})

    def steps(r) -> float | None:
        v = r.get("steps_total")
        return None if v is None or pd.isna(v) else float(v)

    alike: dict = {}
    for c in (c for same in by_rest.values() for c in same):
        alike.setdefault((loose(c["cell"]), steps(c)), []).append(c)
    for _, r in agg[agg["n"] > 0].iterrows():
        base = out.get(r["cell_id"])
        if base is None or steps(r) is None or steps(base) == steps(r):
            continue
        matched = alike.get((loose(r["cell"]), steps(r)), [])
        if len(matched) == 1:
            out[r["cell_id"]] = matched[0]


def _candidates(agg: pd.DataFrame, spec: dict | None):
    """The rows `baselines` chooses from, by the keys the baseline does not name (a
    function of a cell), and how they were chosen; None where nothing is compressed."""
    ok = agg[agg["n"] > 0]
    if spec:
        keys, how = set(spec), "the suite's `baseline:`"
        implied = {k: None if v in (IMPLIED.get(k), {"name": IMPLIED.get(k)}) else v
                   for k, v in spec.items()}  # `deploy: eager` is no deploy key
        cands = [r for _, r in ok.iterrows() if config_matches(r["cell"], implied)]
    else:
        keys = set(COMPRESSION_KEYS)
        how = "the suite names no `baseline:`, so the uncompressed cell"
        cands = [r for _, r in ok.iterrows() if not any(r["cell"].get(k) for k in keys)]
        if len(cands) == len(ok):  # nothing compressed: no obvious baseline
            return None

    def rest(cell: dict) -> str:
        return match.rest(cell, keys)

    by_rest: dict[str, list] = {}
    for c in cands:
        by_rest.setdefault(rest(c["cell"]), []).append(c)
    return by_rest, rest, how


NAMED = 5  # rows a note names; the rest are counted (a matrix of 40 rows read as a wall)


def without_baseline(agg: pd.DataFrame, bases: dict[str, pd.Series], spec: dict | None) -> str:
    """A line naming the rows that have no baseline (their relative columns empty) and why:
    the keys, of those the `baseline:` does not name, on which they differ from every
    candidate, or several candidates alike; empty where each row has one."""
    found = _candidates(agg, spec)
    ok = agg[agg["n"] > 0]
    if found is None:
        return ""
    by_rest, rest, _ = found
    named = set(spec) if spec else set(COMPRESSION_KEYS)
    cands = [c["cell"] for same in by_rest.values() for c in same]
    if not cands:  # it matches no cell that finished ok: the page says so
        return ""
    apart, alike, keys = [], [], set()
    for _, r in ok[~ok["cell_id"].isin(list(bases))].iterrows():
        if len(by_rest.get(rest(r["cell"]), [])) > 1:
            alike.append(r)
            continue
        apart.append(r)
        keys |= min(({k for k in (set(r["cell"]) | set(c)) - named
                      if r["cell"].get(k) != c.get(k)} for c in cands), key=len)
    listed = ", ".join(f"`{k}`" for k in sorted(keys))
    lines = []
    for rows, why in ((apart, f"none is on {listed}. Name {listed} in `baseline:` to compare "
                              "these rows with it"),
                      (alike, "several cells match it alike; give the `baseline:` the "
                              "parameters that pick one")):
        if rows:
            names = "; ".join(joined(r, label_columns(ok), " · ", keyed=False)
                              for r in rows[:NAMED]) + (f"; and {len(rows) - NAMED} more rows"
                                                        if len(rows) > NAMED else "")
            lines.append(f"No baseline for {names} (relative columns empty): each row is "
                         "compared with the baseline cell (the `baseline:` one, else the "
                         "uncompressed one) equal to it on every other key, and "
                         f"{why}.")
    return " ".join(lines)


TO_TARGET = ("steps_to_target", "time_to_target_s")
TRAINING = ("train_seconds", "train_samples_s", "train_tokens_s")


def _to_target(cell: str, r: pd.Series) -> str:
    """Steps or seconds to the target, said as not reached where a seed never reached it
    (it counts its whole budget there)."""
    reached = r.get("target_reached")
    if reached is None or pd.isna(reached) or reached >= 1:
        return cell
    return "not reached" if reached == 0 else f"{cell} ({_reached(r)} seeds reached it)"


def _reached(r: pd.Series) -> str:
    """The seeds that reached the target, counted: 2 of 3."""
    return f"{round(r['target_reached'] * r['n']):.0f} of {int(r['n'])}"


def figure(r: pd.Series, m: str, bold: bool = False) -> str:
    """One figure of a row as a table shows it: mean ± std over its seeds; the share of
    seeds that reached a target as a count of them (a std of yes/no reads as noise)."""
    if m == "target_reached" and not pd.isna(r.get(m, float("nan"))):
        return _reached(r)
    if m.startswith("speedup_") and is_reference(r):
        return "reference path"  # quantize / dequantize around float kernels: not int8's speed
    cell = fmt(r.get(m), r.get(f"{m}_std"), _kind(m), agreed=scored(r, m))
    cell = f"**{cell}**" if bold else cell
    return _to_target(cell, r) if m in TO_TARGET else cell


def scored(r: pd.Series, m: str) -> bool:
    """Whether `m` is one of the row's task scores (accuracy, F1, loss, R²) over two or more
    seeds: figures that differ from seed to seed unless the seeds agree."""
    seeds = r.get(f"{m}_n")  # a figure only some seeds have counts its own
    seeds = r.get("n", 0) if seeds is None or pd.isna(seeds) else seeds
    return "task" in r and seeds >= 2 and m in tasks.info(r["task"]).columns


def n_words(r: pd.Series) -> str:
    """The seeds a row's figures are over, and what became of the others (diverged, failed,
    timed out): a mean over the survivors reads better than the setting is."""
    others = {k: v for k, v in (r.get("statuses") or {}).items() if k != "ok" and v}
    if not others:
        return str(int(r["n"]))
    return f"{int(r['n'])} of {int(r['n']) + sum(others.values())} (" + ", ".join(
        f"{v} {k}" for k, v in sorted(others.items())) + ")"


def table(agg: pd.DataFrame, metrics: list[str] | None = None, sort_by: str | None = None) -> str:
    """A GitHub-markdown table: the axes that vary, mean ± std over n seeds per metric."""
    ok = agg[agg["n"] > 0].copy()
    if ok.empty:
        return "_no cell finished ok_"
    metrics = [m for m in (metrics or table_metrics()) if m in ok.columns]
    if sort_by and sort_by in ok.columns:
        ok = ranked(ok, sort_by)
    labels = label_columns(ok)
    best = {}
    for m in dict.fromkeys(_figure_of(c) for c in metrics):
        # a target not reached counts its whole budget: never the fastest to reach it
        reached = m in TO_TARGET and "target_reached" in ok.columns
        pool = ok[ok["target_reached"] == 1] if reached else ok
        if m.startswith("speedup_"):  # the reference path is never a speed
            pool = pool[[not is_reference(r) for _, r in pool.iterrows()]]
        if m in TRAINING and "steps_total" in pool.columns:  # a loaded model's 0 s: no race
            pool = pool[pool["steps_total"] > 0]
        # each row's shipped model's figure: the slimmed model's, where one was built
        vals = pd.Series([_mean_std(r, shipped_column(r, m)) for _, r in pool.iterrows()],
                         dtype=object).dropna()
        if len(vals) > 1 and len({v[0] for v in vals}) > 1 and \
                M.TABLE[m].higher_is_better is not None:
            best[m] = (max if M.TABLE[m].higher_is_better else min)(vals, key=lambda v: v[0])
    rows = []
    for _, r in ok.iterrows():
        row = [r[c] for c in labels]
        row += [figure(r, m, _figure_of(m) in best and m == shipped_column(r, _figure_of(m))
                       and _ties(_mean_std(r, m), best[_figure_of(m)], _kind(m)))
                for m in metrics]
        row.append(n_words(r))
        rows.append(row)
    headers = [c[5:] for c in labels] + [_title(m) for m in metrics] + ["n"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _mean_std(r: pd.Series, column: str) -> tuple[float, float] | None:
    """A row's mean of a figure and its spread over seeds (0 for one seed); None if absent."""
    mean = r.get(column)
    if mean is None or pd.isna(mean):
        return None
    std = r.get(f"{column}_std")
    return float(mean), 0.0 if std is None or pd.isna(std) or r.get("n", 0) < 2 else float(std)


def _ties(value: tuple[float, float] | None, best: tuple[float, float], kind: str) -> bool:
    """A mean that reads as the best is bolded as the best: equal but for float rounding
    (two rows of identical seeds), or to the digits shown (1.00 beside a bold 1.00), or
    within the best row's own standard deviation over seeds: a latency 0.5 % above the best,
    whose seeds are 3 % apart, is no slower. Not the other row's spread: R² -3.0 ± 6.9 was
    bolded beside 0.990 ± 0.001, whose seeds agree."""
    if value is None:
        return False
    v, (b, best_std) = value[0], best
    return (math.isclose(v, b, rel_tol=1e-9, abs_tol=1e-12) or fmt(v, None, kind) == fmt(b, None, kind)
            or abs(v - b) <= best_std)


def shipped_column(r: pd.Series, m: str) -> str:
    """The column of figure `m` of the model a row ships: the slimmed model's where
    structured pruning built one (the masked model's figure beside it never ships)."""
    return next((M.column(kind, m) for kind in M.MODELS
                 if pd.notna(r.get(M.column(kind, m)))), m)


def _figure_of(column: str) -> str:
    """The figure a column holds, whichever model's: slimmed_latency_ms_p50 -> latency_ms_p50."""
    for kind in M.MODELS:
        if column.startswith(f"{kind}_") and column[len(kind) + 1:] in M.PER_MODEL:
            return column[len(kind) + 1:]
    return column
