"""Figures of what the cells did inside: parameter heatmaps, confusion matrices, gradient
norms, weight histograms, learning curves. Pure: DataFrames in, matplotlib Figures out."""

from __future__ import annotations

import json
import re

import matplotlib

matplotlib.use("Agg")  # no display: figures are written to files
# labels are cell names read from results files: `$...$` is text, never parsed as TeX (a
# malformed one raised, a nested one took seconds)
matplotlib.rcParams["text.parse_math"] = False
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from modelopt.results import tasks  # noqa: E402
from modelopt.results.labels import joined, label_columns, n_seeds, spec_label  # noqa: E402

DPI = 120


def cell_labels(agg: pd.DataFrame) -> list[str]:
    cols = label_columns(agg)
    return [joined(r, cols, " · ", keyed=False) for _, r in agg.iterrows()]


def method_of(cell: dict) -> str:
    """A pruning cell's method without its amount: `l1_unstructured global, 4 rounds`."""
    p = cell.get("prune")
    if not p:
        return "dense"
    # unstructured methods take `global` (filled in with its default); structured ones do not
    scope = ("global" if p["global"] else "per layer") if "global" in p else ""
    extra = [x for x in (scope,
                         f"{p['rounds']} rounds" if p.get("rounds", 1) > 1 else "") if x]
    return p["name"] + (f" ({', '.join(extra)})" if extra else "")


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
    # a technique's parameter varies where cells that have it differ: one that only some
    # techniques take (adam's eps beside sgd) follows the name, and is no axis of its own
    def varies(k: str) -> bool:
        parent, _, param = k.partition(".")
        if not param:  # a whole value (a list, a number); a technique is its parameters
            return all(k in f for f in flats) and len({f[k] for f in flats}) > 1
        off = any(f.get(parent) == "null" for f in flats)  # the technique left out somewhere
        return len({f[k] for f in flats if k in f}) > 1 or (param == "name" and off)

    return [k for k in keys if not k.startswith("train.fold") and varies(k)]


NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def _ordered(values: list[str]) -> list[str]:
    """Axis values (JSON) in their order: values that differ only in their numbers (0.05,
    `subsample(fraction=0.2)`) by those numbers, others as first seen."""
    shapes = {NUMBER.sub("#", v) for v in values}
    if len(shapes) != 1 or "#" not in next(iter(shapes)):
        return values
    return sorted(values, key=lambda v: [float(x) for x in NUMBER.findall(v)])


def _tick(value: str) -> str:
    """An axis value as the tables write it: `subsample(fraction=0.2)`, `none`, `0.1`."""
    v = json.loads(value)
    if isinstance(v, (dict, list)):
        params = {k for s in (v if isinstance(v, list) else [v]) if isinstance(s, dict)
                  for k in s}
        return spec_label(v, params)
    return "none" if v is None else str(v)


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
    rv = _ordered(list(dict.fromkeys(key(_param(c, rows_p)) for c in ok["cell"])))
    cv = _ordered(list(dict.fromkeys(key(_param(c, cols_p)) for c in ok["cell"])))
    fig, axs = plt.subplots(1, len(facets), figsize=(1.2 * len(cv) * len(facets) + 3,
                                                      0.5 * len(rv) + 2), dpi=DPI, squeeze=False)
    scale = 100 if tasks.percent(metric) else 1
    vmin, vmax = ok[metric].min() * scale, ok[metric].max() * scale
    spread = ok.get(f"{metric}_std", pd.Series(np.nan, index=ok.index))
    for ax, facet in zip(axs[0], facets):
        grid, sd = np.full((len(rv), len(cv)), np.nan), np.full((len(rv), len(cv)), np.nan)
        for c, v, e, n in zip(ok["cell"], ok[metric], spread, ok["n"]):
            if facet_p and key(_param(c, facet_p)) != facet:
                continue
            at = rv.index(key(_param(c, rows_p))), cv.index(key(_param(c, cols_p)))
            grid[at], sd[at] = v * scale, (e * scale if n > 1 else np.nan)
        im = ax.imshow(grid, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        for i in range(len(rv)):
            for j in range(len(cv)):
                if not np.isnan(grid[i, j]):  # the mean, and its spread over the seeds
                    text = f"{grid[i, j]:.1f}" + ("" if np.isnan(sd[i, j]) else
                                                  f"\n± {sd[i, j]:.1f}")
                    ax.text(j, i, text, ha="center", va="center", fontsize=7,
                            color="white" if grid[i, j] < (vmin + vmax) / 2 else "black")
        ax.set_xticks(range(len(cv)), [_tick(x) for x in cv], rotation=30, ha="right")
        ax.set_yticks(range(len(rv)), [_tick(x) for x in rv])
        ax.set_xlabel(cols_p)
        if ax is axs[0][0]:
            ax.set_ylabel(rows_p)
        else:  # the first panel names the rows for all
            ax.set_yticks(range(len(rv)), [""] * len(rv))
        if facet_p:
            ax.set_title(f"{facet_p} = {_tick(facet)}", fontsize=8)
    fig.colorbar(im, ax=axs[0].tolist(), label=f"test {metric}" + (" (%)" if scale == 100 else ""))
    n = int(ok["n"].max())
    fig.suptitle(f"Mean test {metric} ± std over n ≤ {n} seeds (colour: these cells' range, "
                 "not a test)", fontsize=9)
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
    rows = df[(df["cell_id"] == best["cell_id"]) & (df["status"] == "ok")]
    names = next((n for n in rows.get("class_names", []) if isinstance(n, list)
                  and len(n) == len(m)), None)  # an image folder's class names
    ax.set_xticks(range(len(m)))
    ax.set_yticks(range(len(m)))
    if names:
        ax.set_xticklabels(names, rotation=45, ha="right")
        ax.set_yticklabels(names)
    fig.colorbar(im, label="% of the true class")
    label = joined(best, label_columns(agg), " · ", keyed=False)
    ax.set_title(f"Confusion, best cell: {label}\n(test split, counts summed over {n_seeds(len(mats))})",
                 fontsize=9)
    fig.tight_layout()
    return fig


def grad_norms(df: pd.DataFrame, agg: pd.DataFrame, max_cells: int = 6) -> plt.Figure | None:
    """Per-layer gradient norm vs step (recorded with `record: [grad_norms]`), every seed
    of up to `max_cells` cells: first and last layer, log scale."""
    import textwrap

    rows = df[df["extra"].map(lambda e: bool(e and e.get("grad_norms")))]
    if rows.empty:
        return None
    first_seed = rows.sort_values("seed").drop_duplicates("cell_id")
    # the deepest, then widest nets show vanishing or exploding gradients best
    depth = first_seed["extra"].map(lambda e: len(e["grad_norms"][0]) - 2)
    size = first_seed["params"] if "params" in first_seed else depth * 0
    cells = first_seed.assign(_d=depth, _s=size).sort_values(
        ["_d", "_s"], ascending=False, kind="stable").head(max_cells)
    labels = dict(zip(agg["cell_id"], cell_labels(agg)))
    fig, axs = plt.subplots(1, len(cells), figsize=(3.2 * len(cells) + 1, 3.8), dpi=DPI,
                            squeeze=False, sharey=True)
    for ax, cid in zip(axs[0], cells["cell_id"]):
        seeds = rows[rows["cell_id"] == cid].sort_values("seed")
        for k, (_, r) in enumerate(seeds.iterrows()):
            records = [g for g in r["extra"]["grad_norms"] if g.get("phase", "train") == "train"]
            layers = [x for x in records[0] if x not in ("step", "phase")]
            ends = (layers[0], layers[-1]) if len(layers) > 1 else tuple(layers)
            for colour, (which, layer) in zip(("C0", "C3"), zip(("first", "last"), ends)):
                ax.plot([g["step"] for g in records], [g[layer] for g in records], color=colour,
                        alpha=0.8 if k == 0 else 0.35, lw=1,
                        label=f"{which} layer ({layer})" if k == 0 else None)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(textwrap.fill(labels.get(cid, cid), 34) + f"\n(n = {len(seeds)} seeds)",
                     fontsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axs[0][0].set_ylabel("gradient norm (log)")
    fig.suptitle("Per-layer gradient norms during training (a line per seed)")
    fig.tight_layout()
    return fig


def weight_histograms(df: pd.DataFrame, agg: pd.DataFrame) -> plt.Figure | None:
    """Weight magnitudes before and after pruning for the most pruned cell of each method."""
    import numpy as np

    rows = df[df["extra"].map(lambda e: bool(e and e.get("weight_histograms")))]
    if rows.empty:
        return None
    rows = rows.assign(method=rows["cell"].map(method_of), sparsity_=rows.get("sparsity", 0))
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
        ax.set_title(f"{r['method']}, sparsity {100 * r['sparsity_']:.0f} %, seed "
                     f"{r['seed']}", fontsize=8)
        ax.legend(fontsize=7)
    axs[0][0].set_ylabel("weights")
    fig.suptitle("Weight magnitudes before and after pruning (one seed each)")
    fig.tight_layout()
    return fig


def learning_curve(agg: pd.DataFrame, y: str = "accuracy") -> plt.Figure | None:
    """Accuracy (or `y`, the task's headline) vs training samples (log x), a line per
    remaining axis; for subsample suites."""
    ok = agg[agg["n"] > 0]
    if "train_samples" not in ok.columns or ok["train_samples"].nunique() < 2 \
            or y not in ok.columns:
        return None
    others = [p for p in varying_params(list(ok["cell"])) if not p.startswith("preprocess")]
    group = ok["cell"].map(lambda c: ", ".join(f"{p}={_short(_param(c, p))}" for p in others)
                           or "all")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=DPI)
    for name, g in ok.groupby(group, sort=False):
        g = g.sort_values("train_samples")
        scale = 100 if tasks.percent(y) else 1
        ax.errorbar(g["train_samples"], scale * g[y], yerr=scale * g[f"{y}_std"],
                    marker="o", capsize=3, label=name if len(name) < 60 else name[:57] + "...")
    ax.set_xscale("log")
    ax.set_xlabel("training samples (log scale)")
    ax.set_ylabel(f"test {tasks.axis_label(y)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    n = int(ok["n"].max())
    ax.set_title(f"Learning curve (mean ± std, n ≤ {n} seeds)")
    fig.tight_layout()
    return fig
