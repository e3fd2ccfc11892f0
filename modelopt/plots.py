"""Matplotlib figures from aggregated results. Pure: DataFrames in, Figures out (Agg, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from modelopt.report import label_columns  # noqa: E402

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
    front = pareto_front(xs, ys)
    if len(front) > 1:
        ax.plot([xs[i] for i in front], [ys[i] * scale for i in front], "--", color="grey",
                lw=1, label="Pareto front", zorder=0)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    n = int(ok["n"].max()) if len(ok) else 0
    ax.set_title(f"{ylabel.split(' (')[0]} vs {(xlabel or x).split(' (')[0]} (mean ± std, n ≤ {n} seeds)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def accuracy_vs_latency(agg: pd.DataFrame) -> plt.Figure:
    return tradeoff(agg, "latency_ms_p50", xlabel="latency p50, batch 1 (ms)")


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
    from modelopt.report import aggregate, tuned

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
            ax.plot(xs, m, color=cmap(i % cmap.N), label=labels[i] if x == "step" else None)
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


def sparsity_vs_accuracy(agg: pd.DataFrame) -> plt.Figure:
    """Test accuracy vs measured sparsity, a line per model and pruning method; the dense
    model is a dashed horizontal line. Error bars: std over seeds."""
    ok = agg[agg["n"] > 0].copy()
    ok["model_name"] = ok["cell"].map(lambda c: c["model"]["name"])
    ok["method"] = ok["cell"].map(_method)
    models = list(dict.fromkeys(ok["model_name"]))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), dpi=DPI,
                             squeeze=False)
    methods = [m for m in dict.fromkeys(ok["method"]) if m != "dense"]
    colors = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(methods)}
    for ax, model in zip(axes[0], models):
        sub = ok[ok["model_name"] == model]
        for method in methods:
            g = sub[sub["method"] == method].sort_values("sparsity")
            if g.empty:
                continue
            ax.errorbar(100 * g["sparsity"], 100 * g["accuracy"], yerr=100 * g["accuracy_std"],
                        marker="o", capsize=3, color=colors[method], label=method)
        dense = sub[sub["method"] == "dense"]
        if not dense.empty:
            ax.axhline(100 * dense["accuracy"].iloc[0], color="black", ls="--", lw=1,
                       label="dense")
        ax.set_title(f"{model}")
        ax.set_xlabel("sparsity (% of weights zero)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(4, len(labels)),
               bbox_to_anchor=(0.5, -0.02), frameon=False)
    n = int(ok["n"].max()) if len(ok) else 0
    fig.suptitle(f"Accuracy vs sparsity after fine-tuning (mean ± std, n ≤ {n} seeds)")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
