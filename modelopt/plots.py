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
    front = pareto_front(list(ok[x]), list(ok[y]))
    if len(front) > 1:
        ax.plot(ok[x].iloc[front], ok[y].iloc[front] * scale, "--", color="grey", lw=1,
                label="Pareto front", zorder=0)
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
