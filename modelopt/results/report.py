"""Aggregation over seeds and the markdown report. Pure: DataFrames in, strings out."""

from __future__ import annotations

import json
import math

import pandas as pd
from tabulate import tabulate

from modelopt.results import latency
from modelopt.results import metrics as M
from modelopt.results.stats import ALPHA, paired_p
from modelopt.spec.schema import CELL_KEYS


def _title(m: str) -> str:
    return M.TABLE[m].title


def _kind(m: str) -> str:
    return M.TABLE[m].fmt


COST_METRICS = ["params", "params_nonzero", "flops", "latency_ms_p50", "peak_rss_mb",
                "train_seconds", "steps_to_target", "time_to_target_s", "target_reached"]
TASK_METRICS = {"classification": ["accuracy", "accuracy_best_val", "f1_macro"],
                "regression": ["r2", "r2_best_val", "rmse", "mae"]}
TABLE_METRICS = TASK_METRICS["classification"] + TASK_METRICS["regression"] + COST_METRICS


def cost_metrics(agg: pd.DataFrame) -> list[str]:
    """The cost columns of a table: the usual ones, and what compression adds where it ran."""
    cells = list(agg["cell"])
    cols = ["params", "params_nonzero"]
    if any(c.get("regularization") for c in cells):
        cols.append("params_above_1e-3")
    if any(c.get("prune") for c in cells):
        cols += ["sparsity", "flops", "flops_nonzero", "size_bytes", "size_bytes_compressed"]
    else:
        cols += ["flops", "size_bytes"]
    cols += ["latency_ms_p50", "latency_ms_batch_p50"]
    if "slimmed_params" in agg.columns and agg["slimmed_params"].notna().any():
        cols += ["slimmed_params", "slimmed_size_bytes", "slimmed_latency_ms_p50",
                 "slimmed_latency_ms_batch_p50"]
    return cols + ["speedup_batch", "speedup_batch1", "peak_rss_mb", "train_seconds",
                   "train_samples_s", "steps_to_target", "time_to_target_s", "target_reached"]


def _spec_label(spec, differing: set[str]) -> str:
    if spec is None:
        return "none"
    if isinstance(spec, list):
        return "+".join(_spec_label(s, differing) for s in spec) or "none"
    params = [f"{k}={_fmt_param(v)}" for k, v in spec.items() if k != "name" and k in differing]
    return f"{spec['name']}({', '.join(params)})" if params else spec["name"]


def _fmt_param(v) -> str:
    if isinstance(v, dict) and "model" in v:  # a distillation teacher
        return _spec_label(v["model"], set(k for k in v["model"] if k != "name"))
    return str(v)


def axis_labels(cells: list[dict]) -> pd.DataFrame:
    """One column per cell key that varies across `cells`, labelled by name and the
    parameters that differ (defaults that all cells share are left out)."""
    cols = {}
    for key in CELL_KEYS:
        values = [c.get(key) for c in cells]
        specs = [s for v in values if isinstance(v, (dict, list))
                 for s in (v if isinstance(v, list) else [v]) if s]
        if key == "train":
            differing = {k for k in (values[0] or {}) if len({str(v.get(k)) for v in values}) > 1}
            labels = [", ".join(f"{k}={v[k]}" for k in sorted(differing)) for v in values]
        else:
            differing = set()
            by_name: dict[str, list[dict]] = {}
            for s in specs:
                if isinstance(s, dict):
                    by_name.setdefault(s["name"], []).append(s)
            for group in by_name.values():
                for k in {k for s in group for k in s if k != "name"}:
                    if len({str(s.get(k)) for s in group}) > 1:
                        differing.add(k)
            labels = [_spec_label(v, differing) for v in values]
        if len(set(labels)) > 1:
            cols[key] = labels
    if not cols:
        cols["model"] = [c["model"]["name"] for c in cells]
    return pd.DataFrame({f"axis:{k}": v for k, v in cols.items()})


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
                "regression" if "r2" in g.columns and g["r2"].notna().any() else "classification")
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
                continue
            row[col] = float(vals.mean())
            row[f"{col}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        rows.append(row)
    agg = pd.DataFrame(rows)
    labels = []
    for _, g in agg.groupby("suite", sort=False):
        lab = axis_labels(list(g["cell"]))
        lab.index = g.index
        labels.append(lab)
    agg = pd.concat([agg, pd.concat(labels)], axis=1)
    return agg


def label_columns(agg: pd.DataFrame) -> list[str]:
    """The axis columns of an aggregate (named `axis:<cell key>`)."""
    return [c for c in agg.columns if str(c).startswith("axis:")]


def fmt(value: float, std: float | None, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
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
            return f"{v:.{int(kind[1:])}f}"
        return f"{v:.{int(kind[1:])}g}"
    if std is None or std == 0:
        return one(value)
    return f"{one(value)} ± {one(std)}"


COMPRESSION_KEYS = ("prune", "quantize", "distill")


def baselines(agg: pd.DataFrame, spec: dict | None) -> tuple[dict[str, pd.Series], str]:
    """({cell_id: the row it is compared with}, how they were chosen). The candidates are the
    rows matching every key the suite's `baseline:` names (a technique name and the
    parameters given; `none` for an optional technique that is off); without `baseline:`, the
    uncompressed rows (no prune, quantize or distill), if some rows are compressed. Each row
    is compared with the candidate equal to it on every other key: with `model: [mlp, cnn]`
    the pruned cnn against the dense cnn, never the mlp."""
    ok = agg[agg["n"] > 0]
    if spec:
        keys, how = set(spec), "the suite's `baseline:`"
        cands = [r for _, r in ok.iterrows()
                 if all(_matches_spec(r["cell"].get(k), v) for k, v in spec.items())]
    else:
        keys = set(COMPRESSION_KEYS)
        how = "the suite names no `baseline:`, so the uncompressed cell"
        cands = [r for _, r in ok.iterrows() if not any(r["cell"].get(k) for k in keys)]
        if len(cands) == len(ok):  # nothing compressed: no obvious baseline
            return {}, ""

    def rest(cell: dict) -> str:
        return json.dumps({k: v for k, v in cell.items() if k not in keys}, sort_keys=True,
                          default=str)

    by_rest: dict[str, list] = {}
    for c in cands:
        by_rest.setdefault(rest(c["cell"]), []).append(c)
    out = {}
    for _, r in ok.iterrows():
        same = by_rest.get(rest(r["cell"]), [])
        if len(same) == 1:
            out[r["cell_id"]] = same[0]
    return out, (how if out else "")


def _matches_spec(actual, wanted) -> bool:
    if wanted in (None, "none", "off", []):
        return not actual
    if isinstance(wanted, str):
        wanted = {"name": wanted}
    if isinstance(wanted, dict) and isinstance(actual, dict):
        return all(actual.get(k) == v for k, v in wanted.items())
    if isinstance(wanted, list) and isinstance(actual, list):
        return len(wanted) == len(actual) and all(map(_matches_spec, actual, wanted))
    return actual == wanted


def table(agg: pd.DataFrame, metrics: list[str] | None = None, sort_by: str | None = None) -> str:
    """A GitHub-markdown table: the axes that vary, mean ± std over n seeds per metric."""
    ok = agg[agg["n"] > 0].copy()
    if ok.empty:
        return "_no cell finished ok_"
    metrics = [m for m in (metrics or TABLE_METRICS) if m in ok.columns]
    if sort_by and sort_by in ok.columns:
        ok = ok.sort_values(sort_by, ascending=not M.TABLE[sort_by].higher_is_better)
    labels = label_columns(ok)
    best = {}
    for m in metrics:
        vals = ok[m].dropna()
        if len(vals) > 1 and vals.nunique() > 1 and M.TABLE[m].higher_is_better is not None:
            best[m] = vals.max() if M.TABLE[m].higher_is_better else vals.min()
    rows = []
    for _, r in ok.iterrows():
        row = [r[c] for c in labels]
        for m in metrics:
            cell = fmt(r.get(m), r.get(f"{m}_std"), _kind(m))
            if m in best and r.get(m) == best[m]:
                cell = f"**{cell}**"
            row.append(cell)
        row.append(int(r["n"]))
        rows.append(row)
    headers = [c[5:] for c in labels] + [_title(m) for m in metrics] + ["n"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def shipped_kind(r: pd.Series) -> str:
    """What would ship: the slimmed model where structured pruning built one, else the
    deployed model (the int8 copy, or the trained one)."""
    return "slimmed" if pd.notna(r.get("slimmed_params")) else "model"


def _shipped(r: pd.Series, name: str):
    slim = r.get(f"slimmed_{name}")
    return (slim, r.get(f"slimmed_{name}_std")) if shipped_kind(r) == "slimmed" and pd.notna(
        slim) else (r.get(name), r.get(f"{name}_std"))


def add_speedups(agg: pd.DataFrame, doc: dict | None, bases: dict[str, pd.Series]) -> pd.DataFrame:
    """speedup_batch / speedup_batch1 and their interval ends per row: its baseline's latency
    over the shipped model's, both timed in the same processes (timing.speedups)."""
    if not bases or not doc:
        return agg
    pairs = {r["cell_id"]: (bases[r["cell_id"]]["cell_id"], shipped_kind(r))
             for _, r in agg[agg["n"] > 0].iterrows() if r["cell_id"] in bases}
    ups = latency.speedups(doc, pairs)
    out = agg.copy()
    for name in dict.fromkeys(k for f in ups.values() for k in f):
        out[name] = out["cell_id"].map(lambda c, n=name: ups.get(c, {}).get(n))
    return out


def _delta(df: pd.DataFrame, r: pd.Series, base: pd.Series, key: str) -> str:
    """Δ of the primary metric against the baseline, paired by seed; ≈ marks a difference a
    paired t-test cannot tell from noise (p >= 0.05, or a single seed)."""

    if r["cell_id"] == base["cell_id"]:
        return "baseline"
    ok = df[df["status"] == "ok"]
    a = ok[ok["cell_id"] == base["cell_id"]].set_index("seed")[key]
    b = ok[ok["cell_id"] == r["cell_id"]].set_index("seed")[key]
    seeds = sorted(set(a.dropna().index) & set(b.dropna().index))
    if not seeds:
        return "–"
    p = paired_p([float(a[s]) for s in seeds], [float(b[s]) for s in seeds])
    mark = "≈ " if p is None or p >= ALPHA else ""
    change = b[seeds].mean() - a[seeds].mean()
    if M.TABLE[key].unit == "fraction":
        return f"{mark}{100 * change:+.1f} pt"
    return f"{mark}{change:+.3f}"


def _speedup(r: pd.Series, name: str) -> str:
    v, lo, hi = r.get(name), r.get(f"{name}_ci_low"), r.get(f"{name}_ci_high")
    if v is None or pd.isna(v):
        return "–"
    if pd.isna(lo):
        return f"{v:.2f}"
    mark = "≈ " if lo <= 1 <= hi else ""
    return f"{mark}{v:.2f} [{lo:.2f}, {hi:.2f}]"


def headline(df: pd.DataFrame, agg: pd.DataFrame, bases: dict[str, pd.Series], task: str) -> str:
    """The suite's answer in a few columns: the axes that vary, the primary metric, and for
    each cell the figures of the model that would ship (slimmed where one exists), with
    speed-up and size against its baseline and their intervals. ≈: within noise."""
    ok = agg[agg["n"] > 0]
    if ok.empty:
        return ""
    key = M.primary(task)
    ok = ok.sort_values(key, ascending=False)
    labels = label_columns(ok)
    rows = []
    for _, r in ok.iterrows():
        params, params_sd = _shipped(r, "params")
        size, _ = _shipped(r, "size_bytes")
        lat, lat_sd = _shipped(r, "latency_ms_batch_p50")
        base = bases.get(r["cell_id"])
        row = [r[c] for c in labels] + [fmt(r.get(key), r.get(f"{key}_std"), _kind(key))]
        if bases:
            row.append(_delta(df, r, base, key) if base is not None else "–")
        row += [fmt(params, params_sd, "int") + (" (slimmed)" if shipped_kind(r) == "slimmed"
                                                  else ""),
                fmt(lat, lat_sd, "g3")]
        if bases:
            base_size = base.get("size_bytes") if base is not None else None
            row += ["baseline" if base is not None and r["cell_id"] == base["cell_id"]
                    else _speedup(r, "speedup_batch"),
                    f"{size / base_size:.2f}" if size and base_size else "–"]
        rows.append(row + [int(r["n"])])
    headers = [c[5:] for c in labels] + [_title(key)]
    if bases:
        headers.append(f"Δ {key} vs baseline")
    headers += ["params shipped", "batch latency ms"]
    if bases:
        headers += ["speed-up × [95 % CI]", "size / baseline"]
    return tabulate(rows, headers=headers + ["n"], tablefmt="github", disable_numparse=True)


def failures(agg: pd.DataFrame) -> str:
    bad = agg[agg["statuses"].map(lambda s: any(k != "ok" for k in s))]
    if bad.empty:
        return ""
    rows = []
    for _, r in bad.iterrows():
        what = ", ".join(f"{k}: {v}" for k, v in r["statuses"].items() if k != "ok")
        labels = "; ".join(f"{c[5:]}={r[c]}" for c in label_columns(agg))
        rows.append([labels, what, (r["error"] or "")[:160]])
    return tabulate(rows, headers=["cell", "not ok", "first error"], tablefmt="github")


def describe_env(df: pd.DataFrame) -> dict:
    env = next((e for e in df["env"] if e), {})
    dates = df["started_at"].dropna()
    return {"torch": env.get("torch", "?"), "cpu": env.get("cpu", "?"),
            "device": env.get("device", "?"), "commit": env.get("git_commit") or "?",
            "threads": env.get("threads", "?"),
            "date": str(dates.max())[:10] if len(dates) else "?"}


def suite_page(df: pd.DataFrame, suite: str, plots: list[tuple[str, str]] = (),
               description: str = "", baseline: dict | None = None,
               timing_doc: dict | None = None) -> str:
    """The markdown page of one suite: its headline table, then every figure."""
    d = df[df["suite"] == suite]
    agg = aggregate(d)
    env = describe_env(d)
    seeds = sorted(d["seed"].unique().tolist())
    datasets = ", ".join(sorted({c["dataset"]["name"] for c in d["cell"]}))
    lines = [f"# {suite}", ""]
    if description:
        lines += [description.strip(), ""]
    primary = "accuracy" if (agg["task"] == "classification").any() else "r2"
    timed = (f"{timing_doc['processes']} fresh processes × {timing_doc['rounds']} interleaved "
             f"rounds, {timing_doc['threads']} thread" if timing_doc else "not timed")
    lines += [
        f"- **cells**: {len(agg)} × **seeds** {seeds} (n per row = seeds that finished ok); "
        "figures are mean ± std over seeds",
        f"- **data**: {datasets} · **machine**: {env['cpu']} ({env['device']}), "
        f"training threads {env['threads']}; latency: every saved model timed side by side "
        f"({timed})",
        f"- **torch** {env['torch']} · **commit** {env['commit']} · **date** {env['date']}",
        "- accuracy: test accuracy at the final step; *acc @best val*: test accuracy at the "
        "evaluation with the best validation accuracy (chosen on validation only); **bold**: "
        "the best of a column",
        "- FLOPs: one sample's forward pass, torch.utils.flop_counter (2 per multiply-add, "
        "zeros counted); latency: per call at batch 1 and at the training batch size, median "
        "over the timing processes of each process's median block",
        "- speed-up: the baseline's batch latency over the shipped model's, the ratio taken "
        "within each timing process, mean and 95 % t-interval over the processes; **≈** marks "
        "a difference within noise (an interval that includes 1, or a paired t-test over seeds "
        "with p ≥ 0.05)",
        "",
    ]
    tune = tune_table(agg, primary)
    if tune:  # for a tuned suite the choice is the headline; every setting follows
        lines += ["## Tuned: the best setting per cell, chosen on validation", "",
                  "Each row's setting has the best mean validation score over the seeds; the "
                  "test figure beside it was never used for the choice.", "", tune, ""]
    tasks = list(dict.fromkeys(agg["task"]))
    for task in tasks:  # a regression and a classification cell are never ranked together
        part = agg[agg["task"] == task]
        bases, how = baselines(part, baseline)
        part = add_speedups(part, timing_doc, bases)
        title = f" ({task} cells)" if len(tasks) > 1 else ""
        lines += [f"## Headline{title}", ""]
        shown = {b["cell_id"]: b for b in bases.values()}
        if shown:
            names = "; ".join(" · ".join(str(b[c]) for c in label_columns(part))
                              for b in shown.values())
            lines += [f"Baseline ({how}{' with the same other axes' if len(shown) > 1 else ''}"
                      f"): {names}.", ""]
        elif baseline:
            lines += ["The suite's `baseline:` matches no cell that finished ok: no relative "
                      "columns.", ""]
        lines += [headline(d, part, bases, task), "", f"## Every figure{title}", "",
                  table(part, TASK_METRICS[task] + cost_metrics(part),
                        sort_by=TASK_METRICS[task][0]), ""]
        scaling = scaling_table(part)
        if scaling:
            lines += ["### Scaling", "", scaling, ""]
    kd = distill_table(agg)
    if kd:
        lines += ["## Distillation: teacher, student from scratch, student distilled", "",
                  kd, ""]
    cv = cv_table(d, agg, primary)
    if cv:
        lines += ["## Cross-validation", "", cv, ""]
    fails = failures(agg)
    if fails:
        lines += ["## Cells that did not finish ok", "", fails, ""]
    for title, path in plots:
        lines += [f"## {title}", "", f"![{title}]({path})", ""]
    return "\n".join(lines)


def index_page(suites: list[tuple[str, str, int]]) -> str:
    lines = ["# modelopt reports", "", "| suite | cells | page |", "|---|---|---|"]
    for name, page, n in suites:
        lines.append(f"| {name} | {n} | [{page}]({page}) |")
    return "\n".join(lines) + "\n"


def tuned(agg: pd.DataFrame) -> pd.DataFrame:
    """Per tune group, the setting with the best mean *validation* score (never test)."""
    rows = []
    t = agg[agg["group"].map(lambda g: bool(g) and g.get("kind") == "tune") & (agg["n"] > 0)]
    if t.empty or "val_score" not in t.columns:
        return pd.DataFrame()
    for _, g in t.groupby(t["group"].map(lambda x: x["id"]), sort=False):
        best = g.loc[g["val_score"].idxmax()].copy()
        best["chosen"] = ", ".join(f"{k}={v}" for k, v in best["group"]["values"].items())
        best["candidates"] = len(g)
        rows.append(best)
    return pd.DataFrame(rows)


def tune_table(agg: pd.DataFrame, metric: str = "accuracy") -> str:
    best = tuned(agg)
    if best.empty:
        return ""
    def untuned(cell: dict, values: dict) -> dict:  # the cell without its tuned parameters
        out = dict(cell)
        for dotted in values:
            head, _, param = dotted.partition(".")
            out[head] = {k: v for k, v in out[head].items() if k != param}
        return out

    best = best.sort_values("val_score", ascending=False)
    names = axis_labels([untuned(c, g["values"]) for c, g in zip(best["cell"], best["group"])])
    labels = list(names.columns)
    kind = _kind(metric)
    rows = []
    speed = [m for m in ("train_seconds", "steps_to_target", "time_to_target_s",
                         "target_reached") if m in best]
    for (_, r), (_, lab) in zip(best.iterrows(), names.iterrows()):
        rows.append([lab[c] for c in labels] + [
            r["chosen"], fmt(r["val_score"], r.get("val_score_std"), kind),
            fmt(r.get(metric), r.get(f"{metric}_std"), kind)]
            + [fmt(r.get(m), r.get(f"{m}_std"), _kind(m)) for m in speed]
            + [int(r["n"]), int(r["candidates"])])
    headers = ([c[5:] for c in labels] + ["chosen on validation", "validation",
                                          f"test {_title(metric)}"]
               + [_title(m) for m in speed] + ["n", "settings tried"])
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def cv_table(df: pd.DataFrame, agg: pd.DataFrame, metric: str = "accuracy") -> str:
    """Cross-validation: mean ± std over every fold x seed of each matrix cell."""
    cv = agg[agg["group"].map(lambda g: bool(g) and g.get("kind") == "cv")]
    if cv.empty:
        return ""
    folds_of = cv.groupby(cv["group"].map(lambda x: x["id"]), sort=False)
    kind = _kind(metric)
    labels = [c for c in label_columns(cv) if c != "axis:train"]
    rows = []
    for _, g in folds_of:
        runs = df[df["cell_id"].isin(g["cell_id"]) & (df["status"] == "ok")]
        vals = pd.to_numeric(runs.get(metric), errors="coerce").dropna()
        val = pd.to_numeric(runs.get("val_score"), errors="coerce").dropna()
        rows.append([g.iloc[0][c] for c in labels] + [
            fmt(val.mean(), val.std(ddof=1), kind), fmt(vals.mean(), vals.std(ddof=1), kind),
            len(g), len(vals)])
    headers = [c[5:] for c in labels] + ["validation (held-out fold)", f"test {metric}", "folds",
                                          "n (folds × seeds)"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def distill_table(agg: pd.DataFrame) -> str:
    """Per distilled student: the teacher, the same student from scratch (same data, same
    seeds), the distilled student and the difference, mean ± std over seeds."""
    ok = agg[agg["n"] > 0]
    students = ok[ok["cell"].map(lambda c: bool(c.get("distill")))]
    if students.empty:
        return ""

    def without_distill(cell):
        return json.dumps({k: v for k, v in cell.items() if k != "distill"}, sort_keys=True)

    scratch = {without_distill(c): r for c, (_, r) in zip(ok["cell"], ok.iterrows())
               if not c.get("distill")}
    labels = [c for c in label_columns(ok) if c != "axis:distill"]
    rows = []
    for _, r in students.iterrows():
        d = r["cell"]["distill"]
        base = scratch.get(without_distill(r["cell"]))
        delta = f"{100 * (r['accuracy'] - base['accuracy']):+.1f} pt" if base is not None else "–"
        rows.append([r[c] for c in labels] + [
            f"T={d['temperature']:g}, α={d['alpha']:g}",
            fmt(r.get("teacher_accuracy"), r.get("teacher_accuracy_std"), "pct"),
            fmt(base["accuracy"], base["accuracy_std"], "pct") if base is not None else "–",
            fmt(r["accuracy"], r["accuracy_std"], "pct"), delta, int(r["n"])])
    headers = [c[5:] for c in labels] + ["KD", "teacher %", "student from scratch %",
                                          "student distilled %", "Δ", "n"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def scaling_table(agg: pd.DataFrame) -> str:
    """Training throughput per backend against one CPU thread: speed-up and efficiency
    (speed-up / cores, the cores the backend took: threads x ranks). GPU cells have no
    efficiency per core."""
    backend = agg["cell"].map(lambda c: c.get("backend") or {"name": "cpu", "threads": 1})
    one_thread = backend.map(lambda b: b == {"name": "cpu", "threads": 1})
    ok = agg[(agg["n"] > 0) & ~one_thread]
    one = agg[(agg["n"] > 0) & one_thread]
    if ok.empty or one.empty or "train_samples_s" not in agg.columns:
        return ""
    base = one.iloc[0]["train_samples_s"]
    rows = [["cpu(threads=1)", 1, fmt(base, one.iloc[0].get("train_samples_s_std"), "f0"),
             "1.00", "1.00"]]
    for _, r in ok.iterrows():
        b = r["cell"]["backend"]
        cores = r.get("cores")
        if cores is None or pd.isna(cores):  # records from before cores were recorded
            cores = (b.get("threads") or 1) * b.get("world_size", 1)
        gpus = r.get("gpus")
        on_gpu = bool(gpus) and not pd.isna(gpus)
        speedup = r["train_samples_s"] / base
        rows.append([_spec_label(b, set(b) - {"name"}), int(cores),
                     fmt(r["train_samples_s"], r.get("train_samples_s_std"), "f0"),
                     f"{speedup:.2f}", "–" if on_gpu else f"{speedup / cores:.2f}"])
    return tabulate(rows, headers=["backend", "cores", "train samples/s", "speed-up ×",
                                   "efficiency"], tablefmt="github", disable_numparse=True)


def csv_table(agg: pd.DataFrame) -> pd.DataFrame:
    drop = [c for c in ("cell", "statuses") if c in agg.columns]
    return agg.drop(columns=drop)


