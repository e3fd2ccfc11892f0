"""How a cell is named, everywhere it is named (progress lines, plan, report, plots,
compare, export): by the axes that vary across the cells it is shown with, never by its
hash alone. One labeller: `axis_labels` makes the columns, `joined` a row's words."""

from __future__ import annotations

from pathlib import PurePath

import pandas as pd

from modelopt.spec.keys import IMPLIED, UNNAMED
from modelopt.spec.keys import NAMES as CELL_KEYS

# parameters named whenever set, even where every cell shares them: a lone `ddp` hid how
# many processes its figures (samples/s, memory) are of
ALWAYS_NAMED: dict[str, set[str]] = {"backend": {"world_size"}}


def spec_label(spec, differing: set[str]) -> str:
    if spec is None:
        return "none"
    if isinstance(spec, list):
        return "+".join(spec_label(s, differing) for s in spec) or "none"
    if isinstance(spec, dict) and "name" not in spec:  # a parameter's value (a teacher)
        return _fmt_param(spec) if "model" in spec or "sha256" in spec else ", ".join(
            f"{k}={_fmt_param(v)}" for k, v in sorted(spec.items()))
    # by name: two cells that wrote them in another order read alike
    params = [f"{k}={_fmt_param(v)}" for k, v in sorted(spec.items())
              if k != "name" and k in differing]
    return f"{spec['name']}({', '.join(params)})" if params else spec["name"]


def _fmt_param(v) -> str:
    if isinstance(v, dict) and "model" in v:  # a distillation teacher
        return spec_label(v["model"], set(k for k in v["model"] if k != "name"))
    if isinstance(v, dict) and "sha256" in v and "path" in v:  # trained weights: the file
        return file_label(v)
    if isinstance(v, float) and abs(v) >= 1e6:  # 1e+12, not 1000000000000.0
        return f"{v:.6g}"
    return str(v)


def file_label(weights: dict) -> str:
    """A trained weights file as labels name it: `model.pth@1a2b3c4d` (name and content)."""
    return f"{PurePath(str(weights.get('path', ''))).name}@{str(weights.get('sha256', ''))[:8]}"


def _train_value(v) -> str:
    """A training setting; one that names a technique (finetune_optimizer) by name and every
    parameter it sets: `adam` beside the cell's `adam(lr=0.001)` would read as that one."""
    if not isinstance(v, dict) or "name" not in v:
        return "none" if v is None else str(v)
    return spec_label(v, {k for k in v if k != "name"})


def _shared(by_name: dict[str, list[dict]]) -> set[str]:
    """The parameters several techniques of a column share (lr, weight_decay) whose values
    differ among them: shown on every label that has them, since a bare `adam` beside
    `sgd(lr=0.1)` would read as adam's default, which the records cannot tell apart."""
    specs = [s for group in by_name.values() for s in group]
    return {k for k in {k for s in specs for k in s if k != "name"}
            if len({str(s[k]) for s in specs if k in s}) > 1
            and len({s["name"] for s in specs if k in s}) > 1}


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
            labels = [", ".join(f"{k}={_train_value(v[k])}"
                                for k in sorted(differing)) for v in values]
        else:
            differing = set()
            by_name: dict[str, list[dict]] = {}
            if key in IMPLIED and any(v is None for v in values):  # eager where none is named
                by_name[IMPLIED[key]] = [{"name": IMPLIED[key]}]
            for s in specs:
                if isinstance(s, dict):
                    by_name.setdefault(s["name"], []).append(s)
            for group in by_name.values():
                for k in {k for s in group for k in s if k != "name"}:
                    if len({str(s.get(k)) for s in group}) > 1:
                        differing.add(k)
            differing |= _shared(by_name) | ALWAYS_NAMED.get(key, set())
            labels = [spec_label(v, differing) if v is not None else UNNAMED.get(key, "none")
                      for v in values]
        if len(set(labels)) > 1:
            cols[key] = labels
    if not cols:
        cols["model"] = [c["model"]["name"] for c in cells]
    # a name and a parameter, each inert as read (results/files.py), joined as `name(k=v)`
    # must not make a link or image of them
    return pd.DataFrame({f"axis:{k}": [str(x).replace("](", "] (") for x in v]
                         for k, v in cols.items()})


def label_columns(agg: pd.DataFrame) -> list[str]:
    """The axis columns of an aggregate (named `axis:<cell key>`)."""
    return [c for c in agg.columns if str(c).startswith("axis:")]


def joined(row, columns: list[str], sep: str = ", ", keyed: bool = True) -> str:
    """One cell's label from its axis columns: `model=cnn, prune=l1_unstructured` (keyed),
    or the values alone (`cnn · l1_unstructured`)."""
    return sep.join(f"{c[5:]}={row[c]}" if keyed else str(row[c]) for c in columns)


def names(configs: dict[str, dict]) -> dict[str, str]:
    """Each cell id named by the axes that differ between these cells (their resolved
    configs)."""
    ids = [c for c, cfg in configs.items() if cfg]
    if not ids:
        return {}
    table = axis_labels([configs[c] for c in ids])
    cols = label_columns(table)
    return {cid: joined(row, cols) for cid, (_, row) in zip(ids, table.iterrows())}


def n_seeds(n: int) -> str:
    """`1 seed`, `3 seeds`: how many seeds a figure is of, in titles and export notes."""
    return f"{n} seed{'' if n == 1 else 's'}"
