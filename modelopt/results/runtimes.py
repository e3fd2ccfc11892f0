"""Where each technique pays off: the same compressed model on each runtime the suite
ships it on (deploy: eager, compile, export, onnxruntime, openvino), side by side, and how each int8
row really ran. PT2E's program run eagerly is int8's *reference path* (quantize /
dequantize around float kernels): a check of its numerics, never shown as its speed."""

from __future__ import annotations

import json

import pandas as pd
from tabulate import tabulate

from modelopt.results import metrics as M
from modelopt.results.labels import joined, label_columns
from modelopt.spec.metric import INT8_REFERENCE as REFERENCE

DEPLOY_AXIS = "axis:deploy"


def runtime_of(r: pd.Series) -> str:
    """A row's runtime as its deploy column names it: with the parameters that tell two
    variants of one runtime apart (openvino(precision=bf16), compile(mode=...))."""
    label = r.get(DEPLOY_AXIS)
    if isinstance(label, str) and label:
        return label
    deploy = r["cell"].get("deploy") or {}
    return deploy.get("name", "eager") if isinstance(deploy, dict) else str(deploy)


def is_reference(r: pd.Series) -> bool:
    return r.get("text:int8_path") == REFERENCE


def speedup_words(r: pd.Series, name: str = "speedup_batch") -> str:
    """A row's speed-up with its interval; the reference path's is not int8's speed."""
    if is_reference(r):
        return "reference path"
    v, lo, hi = r.get(name), r.get(f"{name}_ci_low"), r.get(f"{name}_ci_high")
    if v is None or pd.isna(v):
        return "–"
    if lo is None or pd.isna(lo):
        return f"{v:.2f}"
    return f"{'≈ ' if lo <= 1 <= hi else ''}{v:.2f} [{lo:.2f}, {hi:.2f}]"


def _technique(r: pd.Series) -> str:
    """The cell without its runtime: what is compared across runtimes."""
    return json.dumps({k: v for k, v in r["cell"].items() if k != "deploy"}, sort_keys=True,
                      default=str)


def one_baseline(group: pd.DataFrame, bases: dict[str, pd.Series]) -> bool:
    """Whether a technique's rows on every runtime are speed-ups over the same model, so
    they rank the runtimes. Without a suite `baseline:`, each runtime's rows are compared
    with the uncompressed model on that runtime (report.baselines): ratios of different
    denominators."""
    return len({bases[c]["cell_id"] if c in bases else None for c in group["cell_id"]}) == 1


def best_runtimes(agg: pd.DataFrame, bases: dict[str, pd.Series]) -> dict[str, str]:
    """{cell_id: the runtime where its technique is fastest, with that speed-up}, for
    suites that ship on more than one runtime, against one baseline; the reference path
    never counts."""
    ok = agg[agg["n"] > 0]
    if DEPLOY_AXIS not in ok.columns or "speedup_batch" not in ok.columns:
        return {}
    out = {}
    for _, group in ok.groupby(ok.apply(_technique, axis=1), sort=False):
        timed = [r for _, r in group.iterrows()
                 if not is_reference(r) and pd.notna(r.get("speedup_batch"))]
        # a choice of runtimes to name the best of, all measured against the same model
        if len(group) > 1 and timed and one_baseline(group, bases):
            ranked = sorted(timed, key=lambda r: r["speedup_batch"], reverse=True)
            best = ranked[0]
            words = f"{runtime_of(best)} {best['speedup_batch']:.2f}×"
            # a runner-up inside the winner's interval: a tie, named as one
            if len(ranked) > 1 and not best.get("speedup_batch_ci_low", 0) > \
                    ranked[1]["speedup_batch"]:
                words += f" ≈ {runtime_of(ranked[1])}"
            out.update({cid: words for cid in group["cell_id"]})
    return out


def runtime_table(agg: pd.DataFrame, bases: dict[str, pd.Series]) -> str:
    """Technique × runtime: per technique (the cell without its deploy), on each runtime the
    batch speed-up over its baseline with its interval and the size of what ships; the best
    runtime named where one baseline serves them all. Empty unless the suite ships on more
    than one runtime."""
    ok = agg[agg["n"] > 0]
    if DEPLOY_AXIS not in ok.columns or "speedup_batch" not in ok.columns:
        return ""
    labels = [c for c in label_columns(ok) if c != DEPLOY_AXIS]
    best = best_runtimes(agg, bases)
    # shipped on one runtime only: nothing to compare, and no column for it alone
    groups = [g for _, g in ok.groupby(ok.apply(_technique, axis=1), sort=False) if len(g) > 1]
    if not groups:
        return ""
    runtimes = list(dict.fromkeys(runtime_of(r) for g in groups for _, r in g.iterrows()))
    rows, apart = [], False
    for group in groups:
        apart |= not one_baseline(group, bases)
        first = group.iloc[0]
        row = [joined(first, labels, " · ", keyed=False) if labels else "–"]
        by_runtime = {runtime_of(r): r for _, r in group.iterrows()}
        for name in runtimes:
            r = by_runtime.get(name)
            if r is None:
                row.append("–")
                continue
            base = bases.get(r["cell_id"])
            own = base is not None and base["cell_id"] == r["cell_id"]  # not ≈ 1.00 [1.00, 1.00]
            row.append(("baseline" if own else speedup_words(r)) + _size(r))
        row.append(best.get(first["cell_id"], "–"))
        rows.append(row)
    headers = ["technique"] + [f"{name}: speed-up × [95 % CI] · size" for name in runtimes]
    table = tabulate(rows, headers=headers + ["fastest"], tablefmt="github",
                     disable_numparse=True)
    if apart:
        table += ("\n\nA technique's speed-ups on different runtimes here are each over the "
                  "uncompressed model on the same runtime, so they show what the technique buys "
                  "there but do not rank the runtimes (*fastest*: –). To rank them, name one "
                  "model for every row to be compared with, e.g. `baseline: {quantize: none, "
                  "deploy: eager}`.")
    return table


def _size(r: pd.Series) -> str:
    """Bytes of what ships (`size_bytes`: the runtime's file where it has one, else the
    state_dict), the figure the headline divides too; the slimmed model's where structured
    pruning built one."""
    slimmed = pd.notna(r.get(M.column("slimmed", "params")))
    size = r.get(M.column("slimmed", "size_bytes") if slimmed else "size_bytes")
    return f" · {size / 1e3:,.1f} kB" if size is not None and pd.notna(size) else ""


def int8_notes(agg: pd.DataFrame) -> str:
    """One line: how each int8 row ran and how many of its layers are int8."""
    ok = agg[agg["n"] > 0]
    if "text:int8_path" not in ok.columns:
        return ""
    notes = []
    rows = ok[ok["text:int8_path"].notna()]
    # the techniques, and any other axis that tells the int8 rows apart (the dataset)
    short = [c for c in label_columns(ok) if c[5:] in ("model", "prune", "quantize", "deploy")
             or rows[c].astype(str).nunique() > 1]
    for _, r in rows.iterrows():
        # what the row is, without the techniques it does not use (`none · int8_dynamic`)
        label = " · ".join(str(r[c]) for c in short if r[c] != "none") or joined(
            r, label_columns(ok), " · ", keyed=False)
        layers = r.get("quantized_layers")
        floats = r.get("float_layers")
        count = (f"int8 layers: {int(layers)}" if pd.notna(layers) else "") + (
            f", float: {int(floats)}" if pd.notna(floats) else "")
        path = r["text:int8_path"]
        how = ("the reference path (quantize / dequantize around float kernels: a numerics "
               "check, not int8's speed)" if path == REFERENCE else path)
        notes.append(f"{label}: {how}" + (f" ({count})" if count else ""))
    return "int8 rows ran on: " + "; ".join(notes) + "." if notes else ""



# the instruction sets that make int8 and half precision fast on an x86 CPU (measure.CPU_FLAGS
# names the flags a record looks for); without them those kernels may run slower than float32
KERNEL_FLAGS = {"int8": ("avx512_vnni", "avx_vnni", "amx_int8"),
                "bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}


def _precisions(cell: dict) -> set[str]:
    """The reduced precisions a cell ships in: int8, bf16, fp16."""
    quantize, deploy = cell.get("quantize") or {}, cell.get("deploy") or {}
    names = {q.get("name", "") for q in (quantize if isinstance(quantize, list) else [quantize])
             if isinstance(q, dict)}
    out = {kind for kind in KERNEL_FLAGS if any(kind in n for n in names)}
    if isinstance(deploy, dict) and deploy.get("precision") in KERNEL_FLAGS:
        out.add(deploy["precision"])  # openvino's own choice of arithmetic
    return out


def kernels_note(df: pd.DataFrame) -> str:
    """A line for a page whose cells ship int8 or half precision on the CPU: the instruction
    sets their speed needs, and which of them the records' CPU has."""
    kinds = set().union(*(_precisions(c or {}) for c in df["cell"]))
    envs = [e for e in df["env"] if e and e.get("cpu_flags_checked")]
    if not kinds or not envs:
        return ""
    have = set(str(envs[0].get("cpu_flags") or "").split())
    checked = set(str(envs[0]["cpu_flags_checked"]).split())
    parts = []
    for kind in sorted(kinds):
        flags = [f for f in KERNEL_FLAGS[kind] if f in checked]
        if not flags:  # a record that did not look for them: nothing to say of this CPU
            continue
        found = [f for f in flags if f in have]
        parts.append(f"{kind} needs {' or '.join(flags)}; this CPU has "
                     + (" · ".join(found) if found else f"none of them: expect {kind} no faster "
                        "than float32, or slower"))
    if not parts:
        return ""
    return ("- **instruction sets** (on the CPU; a GPU has its own): " + "; ".join(parts)
            + ". Another CPU's speed-ups differ: `compare` names a baseline made on another.")
