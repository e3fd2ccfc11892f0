"""Matplotlib figures from aggregated results: DataFrames in, Figures out (Agg, headless);
`save` is the one function that writes a file."""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from modelopt.results import metrics as M  # noqa: E402
from modelopt.results import tasks  # noqa: E402
from modelopt.results.diagnostics import (  # noqa: E402
    DPI,
    cell_labels,
    confusion,
    grad_norms,
    heatmap,
    learning_curve,
    method_of,
    weight_histograms,
)
from modelopt.results.labels import n_seeds  # noqa: E402
from modelopt.spec.metric import INT8_REFERENCE as REFERENCE  # noqa: E402


def pareto_front(xs, ys, spreads=None, xspreads=None) -> list[int]:
    """Indices on the front where lower x and higher y are better, sorted by x. With the
    points' spreads (std over seeds, of y and of x), a point leaves it only where another is
    better beyond noise on one axis and not worse beyond noise on the other (noise: the two
    spreads together, root of the sum of squares); points within noise of each other stay."""
    ny, nx = spreads or [0.0] * len(xs), xspreads or [0.0] * len(xs)

    def dominates(j: int, i: int) -> bool:
        tx, ty = math.hypot(nx[i], nx[j]), math.hypot(ny[i], ny[j])
        return (xs[j] <= xs[i] + tx and ys[j] >= ys[i] - ty
                and (xs[j] < xs[i] - tx or ys[j] > ys[i] + ty))

    front = [i for i in range(len(xs)) if not any(dominates(j, i) for j in range(len(xs))
                                                  if j != i)]
    return sorted(front, key=lambda i: (xs[i], -ys[i]))


def tradeoff(agg: pd.DataFrame, x: str, y: str = "accuracy", xlabel: str = "",
             ylabel: str = "", logx: bool = True) -> plt.Figure:
    """Scatter of y vs x with error bars from the seeds and the Pareto front."""
    ylabel = ylabel or f"test {tasks.axis_label(y)}"
    fig, ax = plt.subplots(figsize=(8, 5), dpi=DPI)
    if x not in agg.columns or y not in agg.columns:
        ax.text(0.5, 0.5, f"no {x if x not in agg.columns else y} in these results",
                ha="center", va="center", transform=ax.transAxes)
        return fig
    ok = agg[(agg["n"] > 0) & agg[x].notna() & agg[y].notna()]
    left = 0
    if M.TABLE.get(x) is not None and M.TABLE[x].timing and "text:int8_path" in ok.columns:
        # the reference path's latency is not int8's: left off a latency axis, said so
        left = int((ok["text:int8_path"] == REFERENCE).sum())
        ok = ok[ok["text:int8_path"] != REFERENCE]
    ok = ok.reset_index(drop=True)
    scale = 100 if tasks.percent(y) else 1
    labels = cell_labels(ok)
    cmap = plt.get_cmap("tab20" if len(ok) > 10 else "tab10")
    xs, ys = list(ok[x]), list(ok[y])
    spreads, xspreads = _std(ok, y), _std(ok, x)  # what the bars show, the front judges by
    for i, r in ok.iterrows():
        ax.errorbar(r[x], r[y] * scale, xerr=xspreads[i], yerr=spreads[i] * scale, fmt="o",
                    capsize=3, color=cmap(i % cmap.N), label=labels[i])
    slim_x = M.column("slimmed", x)
    if slim_x in ok.columns:  # the same weights with pruned channels removed
        slim_sd = _std(ok, slim_x)
        for i, r in ok[ok[slim_x].notna()].iterrows():
            ax.errorbar(r[slim_x], r[y] * scale, xerr=slim_sd[i], yerr=spreads[i] * scale,
                        fmt="s", mfc="none", capsize=3, color=cmap(i % cmap.N),
                        label=f"{labels[i]} (slimmed)")
            xs.append(r[slim_x])
            ys.append(r[y])
            spreads.append(spreads[i])
            xspreads.append(slim_sd[i])
    # Pareto-optimal points ringed, per dataset: no line joins points of different models
    # or datasets, and a front across datasets would compare what is not comparable
    datasets = [c["dataset"]["name"] for c in ok["cell"]]
    datasets += [datasets[i] for i, r in ok[ok[slim_x].notna()].iterrows()] if (
        slim_x in ok.columns) else []
    sign = -1 if M.TABLE[y].higher_is_better is False else 1  # perplexity: lower is better
    _ring(ax, datasets, xs, [sign * v for v in ys], spreads, xspreads, sign * scale,
          one_seed=ok["n"].min() < 2)
    if logx and xs and min(xs) > 0 and max(xs) / min(xs) > 10:  # log where it spreads them
        ax.set_xscale("log")
    ax.set_xlabel((xlabel or x) + (f"\n{left} int8 reference-path row(s) left off: their "
                                    "latency is not int8's" if left else ""))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    n = int(ok["n"].max()) if len(ok) else 0
    ax.set_title(f"{ylabel.split(' (')[0]} vs {(xlabel or x).split(' (')[0]} (mean ± std, n ≤ {n_seeds(n)})")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False,
              ncol=2 if len(ok) > 4 else 1)
    fig.tight_layout()
    return fig


def _ring(ax, datasets: list[str], xs: list, ys: list, spreads: list, xspreads: list,
          scale: float, one_seed: bool) -> None:
    """Ring each dataset's Pareto-optimal points (y: higher is better here)."""
    # a point of one seed has no spread: what rings it is not shown to be beyond noise
    label = ("Pareto-optimal (per dataset; a point of 1 seed: noise not known)" if one_seed
             else "Pareto-optimal beyond noise (per dataset)")
    for ds in dict.fromkeys(datasets):
        idx = [i for i, d in enumerate(datasets) if d == ds]
        for j in pareto_front([xs[i] for i in idx], [ys[i] for i in idx],
                              [spreads[i] for i in idx], [xspreads[i] for i in idx]):
            ax.scatter(xs[idx[j]], ys[idx[j]] * scale, s=220, facecolors="none",
                       edgecolors="black", lw=1, zorder=0, label=label)
            label = None


def _std(ok: pd.DataFrame, column: str) -> list[float]:
    """A column's spread over seeds per row, 0 where there is none to show."""
    return [float(v) if pd.notna(v) else 0.0
            for v in ok.get(f"{column}_std", pd.Series(0.0, index=ok.index))]


def score_of(agg: pd.DataFrame) -> str:
    """The figure plots of these cells show: their task's headline (accuracy, R²)."""
    return tasks.headline_of(agg.get("task", []))


def accuracy_vs_latency(agg: pd.DataFrame, y: str | None = None) -> plt.Figure:
    # at the training batch size: at batch 1 a small model's time is mostly dispatch
    return tradeoff(agg, "latency_ms_batch_p50", y or score_of(agg),
                    xlabel="latency per batch (ms, batch size of training)")


def accuracy_vs_params(agg: pd.DataFrame, y: str | None = None) -> plt.Figure:
    return tradeoff(agg, "params_nonzero", y or score_of(agg), xlabel="nonzero parameters")


def save(fig: plt.Figure, path) -> None:
    # fixed metadata so the same data gives the same bytes
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def chained(curves: list[dict], x: str) -> list[dict]:
    """A cell's evaluations in the order its phases ran (training, then pruning's fine-tune
    rounds), each phase's steps or seconds continuing from where the one before ended: a
    post-training cell's curve is its fine-tuning, not a single point."""
    out, offset, phase, last = [], 0.0, None, 0.0
    for c in curves:
        if phase is not None and c.get("phase", "train") != phase:
            offset = last
        phase = c.get("phase", "train")
        last = offset + c[x]
        out.append({**c, x: last})
    return out


def _mean_curve(curves_list: list[list[dict]], x: str) -> tuple[list, list, list]:
    """Mean and std (over seeds, ddof 1 as the tables': one seed has none) of the validation
    score, aligned by evaluation index."""
    import numpy as np

    runs = [chained(curves, x) for curves in curves_list]
    n = min(len(r) for r in runs) if runs else 0
    xs = np.mean([[r[i][x] for i in range(n)] for r in runs], axis=0) if n else []
    vals = np.array([[r[i]["val_score"] if r[i]["val_score"] is not None else np.nan
                      for i in range(n)] for r in runs], dtype=float)
    return list(xs), list(np.nanmean(vals, axis=0)) if n else [], \
        list(np.nanstd(vals, axis=0, ddof=1) if len(runs) > 1 else np.zeros(n)) if n else []


def training_curves(df: pd.DataFrame, agg: pd.DataFrame | None = None) -> plt.Figure:
    """Validation score vs step and vs training seconds, one line per cell (mean over
    seeds, band = ± std). For tuned suites, the chosen setting of each group."""
    from modelopt.results.report import aggregate
    from modelopt.results.tables import tuned

    agg = aggregate(df) if agg is None else agg
    chosen = tuned(agg)
    show = chosen if not chosen.empty else agg[agg["n"] > 0]
    show = show.reset_index(drop=True)
    labels = cell_labels(show)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=DPI, sharey=True)
    cmap = plt.get_cmap("tab20" if len(show) > 10 else "tab10")
    # the validation score is the task's headline figure unless the task says what it is
    # (a language model's: log-likelihood per token); a share is drawn in per cent
    kinds = set(show["task"])
    ylabel = (f"validation {tasks.score_label(next(iter(kinds)))}" if len(kinds) == 1
              else "validation score")
    task = next(iter(kinds)) if len(kinds) == 1 else None
    scale = 100 if task and not tasks.info(task).score_label and tasks.percent(
        tasks.headline(task)) else 1
    for i, r in show.iterrows():
        runs = df[(df["cell_id"] == r["cell_id"]) & (df["status"] == "ok")]["curves"].tolist()
        for ax, x in zip(axes, ("step", "seconds")):
            xs, mean, std = _mean_curve(runs, x)
            if not xs:
                continue
            m = [scale * v for v in mean]
            sd = [scale * v for v in std]
            ax.plot(xs, m, color=cmap(i % cmap.N), marker="o" if len(xs) < 3 else None,
                    label=labels[i] if x == "step" else None)
            ax.fill_between(xs, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)],
                            color=cmap(i % cmap.N), alpha=0.15, lw=0)
    axes[0].set_xlabel("training step (fine-tuning continues after training)")
    axes[1].set_xlabel("training time (s, evaluation excluded, log scale)")
    axes[1].set_xscale("log")
    axes[0].set_ylabel(ylabel)
    for ax in axes:
        ax.grid(alpha=0.3)
    n = int(show["n"].max()) if len(show) else 0
    fig.suptitle(f"Training curves (mean ± std over n ≤ {n_seeds(n)})")
    fig.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def _series(cell: dict) -> str:
    """A line joins cells that differ only in the pruning amount."""
    c = {k: v for k, v in cell.items() if k != "prune"}
    p = {k: v for k, v in (cell.get("prune") or {}).items() if k != "amount"}
    return json.dumps([c, p], sort_keys=True, default=str)


def sparsity_vs_accuracy(agg: pd.DataFrame, y: str | None = None) -> plt.Figure:
    """Test accuracy (the task's headline) vs measured sparsity: a panel per model and
    dataset, a line per pruning method over the cells that differ only in amount; each dense
    cell a dashed line labelled with what it is. Error bars: std over seeds."""
    y = y or score_of(agg)
    scale = 100 if tasks.percent(y) else 1
    ok = agg[agg["n"] > 0].copy()
    ok["panel"] = ok["cell"].map(lambda c: f"{c['model']['name']} · {c['dataset']['name']}")
    ok["method"] = ok["cell"].map(method_of)
    ok["series"] = ok["cell"].map(_series)
    ok["label"] = cell_labels(ok)
    panels = list(dict.fromkeys(ok["panel"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), dpi=DPI,
                             squeeze=False)
    methods = [m for m in dict.fromkeys(ok["method"]) if m != "dense"]
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    styles = ["-", ":", "-.", (0, (5, 1))]
    for ax, panel in zip(axes[0], panels):
        sub = ok[ok["panel"] == panel]
        lines = [s for s in dict.fromkeys(sub["series"])
                 if (sub[sub["series"] == s]["method"] != "dense").all()]
        for k, series in enumerate(lines):
            g = sub[sub["series"] == series].sort_values("sparsity")
            method = g["method"].iloc[0]
            label = method if len(lines) == len({*sub["method"]} - {"dense"}) else (
                f"{method}: {g['label'].iloc[0]}")
            ax.errorbar(100 * g["sparsity"], scale * g[y], yerr=scale * g[f"{y}_std"],
                        marker="o", capsize=3, color=colors[method], label=label,
                        ls=styles[k % len(styles)] if label != method else "-")
        dense = sub[sub["method"] == "dense"]
        for j, (_, d) in enumerate(dense.iterrows()):
            ax.axhline(scale * d[y], color="black", ls="--", lw=1, alpha=max(0.2, 1 - 0.2 * j),
                       label="dense" if len(dense) == 1 else f"dense: {d['label']}")
        ax.set_title(panel)
        ax.set_xlabel("sparsity (% of weights zero)")
        ax.set_ylabel(f"test {tasks.axis_label(y)}")
        ax.grid(alpha=0.3)
    legend: dict = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    handles, labels = list(legend.values()), list(legend)
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(4, len(labels)),
               bbox_to_anchor=(0.5, -0.02), frameon=False)
    n = int(ok["n"].max()) if len(ok) else 0
    fig.suptitle(f"{tasks.word(y)} vs sparsity after fine-tuning (mean ± std, n ≤ {n_seeds(n)})")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def _tradeoffs(df: pd.DataFrame, agg: pd.DataFrame) -> list[tuple[str, str, plt.Figure]]:
    """The headline figure against latency, parameters and sparsity, per task where the
    suite holds several (their figures share no axis): the first task's slugs unsuffixed."""
    kinds = list(dict.fromkeys(agg["task"])) if "task" in agg.columns else [None]
    figs = []
    for k, task in enumerate(kinds):
        part = agg if task is None else agg[agg["task"] == task]
        if not (part["n"] > 0).any():
            continue  # no cell finished ok: nothing to plot (the page lists why)
        y, end = score_of(part), f" ({task} cells)" if len(kinds) > 1 else ""
        slug = "" if k == 0 else f"_{task}"
        if "latency_ms_p50" in part.columns and part["latency_ms_p50"].notna().any():
            figs.append((f"{tasks.word(y)} vs latency{end}", f"accuracy_latency{slug}",
                         accuracy_vs_latency(part, y)))  # none before `modelopt time`
        figs.append((f"{tasks.word(y)} vs parameters{end}", f"accuracy_params{slug}",
                     accuracy_vs_params(part, y)))
        if part["cell"].map(lambda c: bool(c.get("prune"))).any():
            figs.append((f"{tasks.word(y)} vs sparsity{end}", f"sparsity{slug}",
                         sparsity_vs_accuracy(part, y)))
    return figs


def suite_figures(df: pd.DataFrame, agg: pd.DataFrame) -> list[tuple[str, str, plt.Figure]]:
    """Every figure that applies to one suite's results: (title, slug, Figure)."""
    y = score_of(agg)  # the headline figure of the cells' task (of the first, if several)
    figs = _tradeoffs(df, agg)
    optional = [("Learning curve", "learning_curve", lambda: learning_curve(agg, y)),

                ("Grid", "heatmap", lambda: heatmap(agg, y)),
                ("Gradient norms", "grad_norms", lambda: grad_norms(df, agg)),
                ("Weights before and after pruning", "weights", lambda: weight_histograms(df, agg)),
                ("Confusion matrix of the best cell", "confusion", lambda: confusion(df, agg))]
    for title, slug, make in optional:
        fig = make()
        if fig is not None:
            figs.append((title, slug, fig))
    if df["curves"].map(bool).any():  # per task: their validation scores share no axis
        kinds = list(dict.fromkeys(agg["task"])) if "task" in agg.columns else [None]
        for k, task in enumerate(kinds):
            part = agg if task is None else agg[agg["task"] == task]
            figs.append((f"Training curves{f' ({task} cells)' if len(kinds) > 1 else ''}",
                         "curves" if k == 0 else f"curves_{task}",
                         training_curves(df[df["cell_id"].isin(part["cell_id"])], part)))
    return figs
