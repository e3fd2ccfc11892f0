"""Matplotlib figures from aggregated results. Pure: DataFrames in, Figures out (Agg, headless)."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from modelopt.results.report import label_columns  # noqa: E402

DPI = 120


def _labels(agg: pd.DataFrame) -> list[str]:
    cols = label_columns(agg)
    return [" · ".join(str(r[c]) for c in cols) for _, r in agg.iterrows()]


def pareto_front(xs, ys) -> list[int]:
    """Indices on the front where lower x and higher y are better, sorted by x."""
    order = sorted(range(len(xs)), key=lambda i: (xs[i], -ys[i]))
    front, best = [], float("-inf")
    for i in order:
        if ys[i] > best:
            front.append(i)
            best = ys[i]
    return front


def tradeoff(agg: pd.DataFrame, x: str, y: str = "accuracy", xlabel: str = "",
             ylabel: str = "test accuracy (%)", logx: bool = True) -> plt.Figure:
    """Scatter of y vs x with error bars from the seeds and the Pareto front."""
    fig, ax = plt.subplots(figsize=(8, 5), dpi=DPI)
    if x not in agg.columns or y not in agg.columns:
        ax.text(0.5, 0.5, f"no {x if x not in agg.columns else y} in these results",
                ha="center", va="center", transform=ax.transAxes)
        return fig
    ok = agg[(agg["n"] > 0) & agg[x].notna() & agg[y].notna()].reset_index(drop=True)
    scale = 100 if y.startswith("accuracy") else 1
    labels = _labels(ok)
    cmap = plt.get_cmap("tab20" if len(ok) > 10 else "tab10")
    for i, r in ok.iterrows():
        ax.errorbar(r[x], r[y] * scale, xerr=r.get(f"{x}_std", 0) or 0,
                    yerr=(r.get(f"{y}_std", 0) or 0) * scale, fmt="o", capsize=3,
                    color=cmap(i % cmap.N), label=labels[i])
    xs, ys = list(ok[x]), list(ok[y])
    slim_x = f"slimmed_{x}"
    if slim_x in ok.columns:  # the same weights with pruned channels removed
        for i, r in ok[ok[slim_x].notna()].iterrows():
            ax.errorbar(r[slim_x], r[y] * scale, xerr=r.get(f"{slim_x}_std", 0) or 0,
                        yerr=(r.get(f"{y}_std", 0) or 0) * scale, fmt="s", mfc="none",
                        capsize=3, color=cmap(i % cmap.N), label=f"{labels[i]} (slimmed)")
            xs.append(r[slim_x])
            ys.append(r[y])
    # Pareto-optimal points ringed, per dataset: no line joins points of different models
    # or datasets, and a front across datasets would compare what is not comparable
    datasets = [c["dataset"]["name"] for c in ok["cell"]]
    datasets += [datasets[i] for i, r in ok[ok[slim_x].notna()].iterrows()] if (
        slim_x in ok.columns) else []
    ringed = False
    for ds in dict.fromkeys(datasets):
        idx = [i for i, d in enumerate(datasets) if d == ds]
        for j in pareto_front([xs[i] for i in idx], [ys[i] for i in idx]):
            ax.scatter(xs[idx[j]], ys[idx[j]] * scale, s=220, facecolors="none",
                       edgecolors="black", lw=1, zorder=0,
                       label=None if ringed else "Pareto-optimal (per dataset)")
            ringed = True
    if logx and min(xs) > 0 and max(xs) / min(xs) > 10:  # log only where it spreads the data
        ax.set_xscale("log")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    n = int(ok["n"].max()) if len(ok) else 0
    ax.set_title(f"{ylabel.split(' (')[0]} vs {(xlabel or x).split(' (')[0]} (mean ± std, n ≤ {n} seeds)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False,
              ncol=2 if len(ok) > 4 else 1)
    fig.tight_layout()
    return fig


def accuracy_vs_latency(agg: pd.DataFrame) -> plt.Figure:
    # at the training batch size: at batch 1 a small model's time is mostly dispatch
    return tradeoff(agg, "latency_ms_batch_p50", xlabel="latency per batch (ms, batch size "
                    "of training)")


def accuracy_vs_params(agg: pd.DataFrame) -> plt.Figure:
    return tradeoff(agg, "params_nonzero", xlabel="nonzero parameters")


def save(fig: plt.Figure, path) -> None:
    # fixed metadata so the same data gives the same bytes
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def _mean_curve(curves_list: list[list[dict]], x: str) -> tuple[list, list, list]:
    """Mean and std of the validation score over seeds, aligned by evaluation index."""
    import numpy as np

    runs = [[c for c in curves if c.get("phase", "train") == "train"] for curves in curves_list]
    n = min(len(r) for r in runs) if runs else 0
    xs = np.mean([[r[i][x] for i in range(n)] for r in runs], axis=0) if n else []
    vals = np.array([[r[i]["val_score"] if r[i]["val_score"] is not None else np.nan
                      for i in range(n)] for r in runs], dtype=float)
    return list(xs), list(np.nanmean(vals, axis=0)) if n else [], \
        list(np.nanstd(vals, axis=0)) if n else []


def training_curves(df: pd.DataFrame, agg: pd.DataFrame | None = None) -> plt.Figure:
    """Validation score vs step and vs training seconds, one line per cell (mean over
    seeds, band = ± std). For tuned suites, the chosen setting of each group."""
    from modelopt.results.report import aggregate, tuned

    agg = aggregate(df) if agg is None else agg
    chosen = tuned(agg)
    show = chosen if not chosen.empty else agg[agg["n"] > 0]
    show = show.reset_index(drop=True)
    labels = _labels(show)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=DPI, sharey=True)
    cmap = plt.get_cmap("tab20" if len(show) > 10 else "tab10")
    scale = 100 if (show["task"] == "classification").all() else 1
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
    ylabel = "validation accuracy (%)" if scale == 100 else "validation R²"
    axes[0].set_xlabel("training step")
    axes[1].set_xlabel("training time (s, evaluation excluded, log scale)")
    axes[1].set_xscale("log")
    axes[0].set_ylabel(ylabel)
    for ax in axes:
        ax.grid(alpha=0.3)
    n = int(show["n"].max()) if len(show) else 0
    fig.suptitle(f"Training curves (mean ± std over n ≤ {n} seeds)")
    fig.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def _method(cell: dict) -> str:
    """A pruning cell's method without its amount: `l1_unstructured global, 4 rounds`."""
    p = cell.get("prune")
    if not p:
        return "dense"
    scope = "" if "structured" in p["name"] and "unstructured" not in p["name"] else (
        "global" if p.get("global") else "per layer")
    extra = [x for x in (scope,
                         f"{p['rounds']} rounds" if p.get("rounds", 1) > 1 else "") if x]
    return p["name"] + (f" ({', '.join(extra)})" if extra else "")


def _series(cell: dict) -> str:
    """A line joins cells that differ only in the pruning amount."""
    c = {k: v for k, v in cell.items() if k != "prune"}
    p = {k: v for k, v in (cell.get("prune") or {}).items() if k != "amount"}
    return json.dumps([c, p], sort_keys=True, default=str)


def sparsity_vs_accuracy(agg: pd.DataFrame) -> plt.Figure:
    """Test accuracy vs measured sparsity: a panel per model and dataset, a line per pruning
    method over the cells that differ only in amount; each dense cell a dashed line labelled
    with what it is. Error bars: std over seeds."""
    ok = agg[agg["n"] > 0].copy()
    ok["panel"] = ok["cell"].map(lambda c: f"{c['model']['name']} · {c['dataset']['name']}")
    ok["method"] = ok["cell"].map(_method)
    ok["series"] = ok["cell"].map(_series)
    ok["label"] = _labels(ok)
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
            ax.errorbar(100 * g["sparsity"], 100 * g["accuracy"], yerr=100 * g["accuracy_std"],
                        marker="o", capsize=3, color=colors[method], label=label,
                        ls=styles[k % len(styles)] if label != method else "-")
        dense = sub[sub["method"] == "dense"]
        for j, (_, d) in enumerate(dense.iterrows()):
            ax.axhline(100 * d["accuracy"], color="black", ls="--", lw=1, alpha=1 - 0.2 * j,
                       label="dense" if len(dense) == 1 else f"dense: {d['label']}")
        ax.set_title(panel)
        ax.set_xlabel("sparsity (% of weights zero)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    legend: dict = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    handles, labels = list(legend.values()), list(legend)
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(4, len(labels)),
               bbox_to_anchor=(0.5, -0.02), frameon=False)
    n = int(ok["n"].max()) if len(ok) else 0
    fig.suptitle(f"Accuracy vs sparsity after fine-tuning (mean ± std, n ≤ {n} seeds)")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def varying_params(cells: list[dict]) -> list[str]:
    """Dotted paths (`model.hidden`, `optimizer.lr`) whose value differs across cells."""
    def flat(cell: dict) -> dict:
        out = {}
        for key, value in cell.items():
            if isinstance(value, dict):
                for k, v in value.items():
                    out[f"{key}.{k}"] = json.dumps(v, sort_keys=True, default=str)
            else:
                out[key] = json.dumps(value, sort_keys=True, default=str)
        return out
    flats = [flat(c) for c in cells]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    return [k for k in keys if len({f.get(k) for f in flats}) > 1 and not k.startswith("train.fold")]


def _param(cell: dict, path: str):
    head, _, tail = path.partition(".")
    value = cell.get(head)
    return value.get(tail) if tail and isinstance(value, dict) else value


def _short(value) -> str:
    """A technique value as a person writes it: names only (`shift+noise`, `none`)."""
    if isinstance(value, dict) and "name" in value:
        return value["name"]
    if isinstance(value, list):
        return "+".join(_short(v) for v in value) or "none"
    return "none" if value is None else str(value)


def heatmap(agg: pd.DataFrame, metric: str = "accuracy") -> plt.Figure | None:
    """Mean `metric` over two varying parameters (one panel per value of a third);
    None when the suite is not such a grid."""
    import numpy as np

    ok = agg[agg["n"] > 0]
    axes_ = varying_params(list(ok["cell"]))
    if not 2 <= len(axes_) <= 3 or metric not in ok.columns:
        return None
    rows_p, cols_p = axes_[0], axes_[1]
    facet_p = axes_[2] if len(axes_) == 3 else None
    key = lambda v: json.dumps(v, sort_keys=True, default=str)  # noqa: E731
    facets = list(dict.fromkeys(key(_param(c, facet_p)) for c in ok["cell"])) if facet_p else [None]
    if len(facets) > 4:
        return None
    rv = list(dict.fromkeys(key(_param(c, rows_p)) for c in ok["cell"]))
    cv = list(dict.fromkeys(key(_param(c, cols_p)) for c in ok["cell"]))
    fig, axs = plt.subplots(1, len(facets), figsize=(1.2 * len(cv) * len(facets) + 3,
                                                      0.5 * len(rv) + 2), dpi=DPI, squeeze=False)
    scale = 100 if metric.startswith("accuracy") else 1
    vmin, vmax = ok[metric].min() * scale, ok[metric].max() * scale
    for ax, facet in zip(axs[0], facets):
        grid = np.full((len(rv), len(cv)), np.nan)
        for c, v in zip(ok["cell"], ok[metric]):
            if facet_p and key(_param(c, facet_p)) != facet:
                continue
            grid[rv.index(key(_param(c, rows_p))), cv.index(key(_param(c, cols_p)))] = v * scale
        im = ax.imshow(grid, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        for i in range(len(rv)):
            for j in range(len(cv)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=8,
                            color="white" if grid[i, j] < (vmin + vmax) / 2 else "black")
        ax.set_xticks(range(len(cv)), [json.loads(x) if x.startswith('"') else x for x in cv],
                      rotation=30, ha="right")
        ax.set_yticks(range(len(rv)), [json.loads(x) if x.startswith('"') else x for x in rv])
        ax.set_xlabel(cols_p)
        if ax is axs[0][0]:
            ax.set_ylabel(rows_p)
        else:  # the first panel names the rows for all
            ax.set_yticks(range(len(rv)), [""] * len(rv))
        if facet_p:
            ax.set_title(f"{facet_p} = {facet}")
    fig.colorbar(im, ax=axs[0].tolist(), label=f"test {metric}" + (" (%)" if scale == 100 else ""))
    fig.suptitle(f"Mean test {metric} over seeds")
    return fig


def confusion(df: pd.DataFrame, agg: pd.DataFrame) -> plt.Figure | None:
    """The confusion matrix of the cell with the best mean test accuracy, summed over seeds."""
    import numpy as np

    ok = agg[(agg["n"] > 0)]
    if "accuracy" not in ok.columns or ok["accuracy"].isna().all() or "confusion" not in df:
        return None
    best = ok.loc[ok["accuracy"].idxmax()]
    mats = [np.asarray(m) for m in df[(df["cell_id"] == best["cell_id"]) &
                                      (df["status"] == "ok")]["confusion"] if isinstance(m, list)]
    if not mats:
        return None
    m = np.sum(mats, axis=0)
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6, 5), dpi=DPI)
    im = ax.imshow(100 * share, cmap="Blues", vmin=0, vmax=100)
    for i in range(len(m)):
        for j in range(len(m)):
            if m[i, j]:
                ax.text(j, i, f"{m[i, j]}", ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_xticks(range(len(m)))
    ax.set_yticks(range(len(m)))
    fig.colorbar(im, label="% of the true class")
    label = " · ".join(str(best[c]) for c in label_columns(agg))
    ax.set_title(f"Confusion, best cell: {label}\n(test split, counts summed over {len(mats)} seeds)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def grad_norms(df: pd.DataFrame, agg: pd.DataFrame, max_cells: int = 6) -> plt.Figure | None:
    """Per-layer gradient norm vs step (recorded with `record: [grad_norms]`), seed 0 of
    up to `max_cells` cells: first and last layer, log scale."""
    rows = df[df["extra"].map(lambda e: bool(e and e.get("grad_norms")))]
    if rows.empty:
        return None
    first_seed = rows.sort_values("seed").drop_duplicates("cell_id")
    # the deepest, then widest nets show vanishing or exploding gradients best
    depth = first_seed["extra"].map(lambda e: len(e["grad_norms"][0]) - 2)
    size = first_seed["params"] if "params" in first_seed else depth * 0
    cells = first_seed.assign(_d=depth, _s=size).sort_values(
        ["_d", "_s"], ascending=False, kind="stable").head(max_cells)
    labels = dict(zip(agg["cell_id"], _labels(agg)))
    fig, axs = plt.subplots(1, len(cells), figsize=(3.2 * len(cells) + 1, 3.5), dpi=DPI,
                            squeeze=False, sharey=True)
    for ax, (_, r) in zip(axs[0], cells.iterrows()):
        records = [g for g in r["extra"]["grad_norms"] if g.get("phase", "train") == "train"]
        layers = [k for k in records[0] if k not in ("step", "phase")]
        for layer in (layers[0], layers[-1]) if len(layers) > 1 else layers:
            ax.plot([g["step"] for g in records], [g[layer] for g in records], marker=".",
                    label=layer)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(labels.get(r["cell_id"], r["cell_id"])[:40], fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axs[0][0].set_ylabel("gradient norm (log)")
    fig.suptitle("Per-layer gradient norms during training (seed 0)")
    fig.tight_layout()
    return fig


def weight_histograms(df: pd.DataFrame, agg: pd.DataFrame) -> plt.Figure | None:
    """Weight magnitudes before and after pruning for the most pruned cell of each method."""
    import numpy as np

    rows = df[df["extra"].map(lambda e: bool(e and e.get("weight_histograms")))]
    if rows.empty:
        return None
    rows = rows.assign(method=rows["cell"].map(_method), sparsity_=rows.get("sparsity", 0))
    picks = rows.sort_values(["sparsity_", "seed"], ascending=[False, True]).drop_duplicates("method")
    picks = picks.head(4)
    fig, axs = plt.subplots(1, len(picks), figsize=(4 * len(picks), 3.5), dpi=DPI, squeeze=False)
    for ax, (_, r) in zip(axs[0], picks.iterrows()):
        h = r["extra"]["weight_histograms"]
        for name, color in (("before", "grey"), ("after", "tab:blue")):
            edges = np.asarray(h[name]["edges"])
            ax.stairs(h[name]["counts"], edges, label=f"{name} ({h[name]['zeros']} zeros)",
                      color=color, fill=name == "before", alpha=0.5 if name == "before" else 1)
        ax.set_xscale("log")
        ax.set_xlabel("|weight| (nonzero)")
        ax.set_title(f"{r['method']}, sparsity {100 * r['sparsity_']:.0f} %", fontsize=8)
        ax.legend(fontsize=7)
    axs[0][0].set_ylabel("weights")
    fig.suptitle("Weight magnitudes before and after pruning (seed 0)")
    fig.tight_layout()
    return fig


def learning_curve(agg: pd.DataFrame) -> plt.Figure | None:
    """Accuracy vs training samples (log x), a line per remaining axis; for subsample suites."""
    ok = agg[agg["n"] > 0]
    if "train_samples" not in ok.columns or ok["train_samples"].nunique() < 2:
        return None
    others = [p for p in varying_params(list(ok["cell"])) if not p.startswith("preprocess")]
    group = ok["cell"].map(lambda c: ", ".join(f"{p}={_short(_param(c, p))}" for p in others)
                           or "all")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=DPI)
    for name, g in ok.groupby(group, sort=False):
        g = g.sort_values("train_samples")
        ax.errorbar(g["train_samples"], 100 * g["accuracy"], yerr=100 * g["accuracy_std"],
                    marker="o", capsize=3, label=name if len(name) < 60 else name[:57] + "...")
    ax.set_xscale("log")
    ax.set_xlabel("training samples (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    n = int(ok["n"].max())
    ax.set_title(f"Learning curve (mean ± std, n ≤ {n} seeds)")
    fig.tight_layout()
    return fig


def suite_figures(df: pd.DataFrame, agg: pd.DataFrame) -> list[tuple[str, str, plt.Figure]]:
    """Every figure that applies to one suite's results: (title, slug, Figure)."""
    figs = [("Accuracy vs latency" if (agg["task"] == "classification").any() else
             "Score vs latency", "accuracy_latency", accuracy_vs_latency(agg)),
            ("Accuracy vs parameters", "accuracy_params", accuracy_vs_params(agg))]
    if df["cell"].map(lambda c: bool(c.get("prune"))).any():
        figs.append(("Accuracy vs sparsity", "sparsity", sparsity_vs_accuracy(agg)))
    optional = [("Learning curve", "learning_curve", lambda: learning_curve(agg)),
                ("Training curves", "curves",
                 lambda: training_curves(df, agg) if df["curves"].map(bool).any() else None),
                ("Grid", "heatmap", lambda: heatmap(agg)),
                ("Gradient norms", "grad_norms", lambda: grad_norms(df, agg)),
                ("Weights before and after pruning", "weights", lambda: weight_histograms(df, agg)),
                ("Confusion matrix of the best cell", "confusion", lambda: confusion(df, agg))]
    for title, slug, make in optional:
        fig = make()
        if fig is not None:
            figs.append((title, slug, fig))
    return figs
