"""Baseline vs current: per-metric direction and tolerance, a Welch t-test over seeds, verdicts."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class CompareError(ValueError):
    """Input that cannot be compared (missing file, corrupt line, different suites)."""


@dataclass(frozen=True)
class Rule:
    higher_is_better: bool
    tolerance: float  # how much worse is still fine
    relative: bool  # tolerance as a fraction of the baseline, else in the metric's units
    unit: str = ""

    @property
    def exact(self) -> bool:
        return self.tolerance == 0


# Defaults: accuracy-like fractions in absolute points, timings and memory relative,
# counts exact. Noise-aware on top: see `verdict`.
RULES: dict[str, Rule] = {
    "accuracy": Rule(True, 0.01, False, "fraction"),
    "accuracy_best_val": Rule(True, 0.01, False, "fraction"),
    "f1_macro": Rule(True, 0.01, False, "fraction"),
    "precision_macro": Rule(True, 0.01, False, "fraction"),
    "recall_macro": Rule(True, 0.01, False, "fraction"),
    "r2": Rule(True, 0.01, False, ""),
    "r2_best_val": Rule(True, 0.01, False, ""),
    "mse": Rule(False, 0.05, True, ""),
    "rmse": Rule(False, 0.05, True, ""),
    "mae": Rule(False, 0.05, True, ""),
    "latency_ms_p50": Rule(False, 0.10, True, "ms"),
    "latency_ms_p90": Rule(False, 0.10, True, "ms"),
    "latency_ms_batch_p50": Rule(False, 0.10, True, "ms"),
    "throughput_samples_s": Rule(True, 0.10, True, "samples/s"),
    "train_samples_s": Rule(True, 0.10, True, "samples/s"),
    "train_seconds": Rule(False, 0.10, True, "s"),
    "peak_rss_mb": Rule(False, 0.05, True, "MB"),
    "params": Rule(False, 0.0, False, ""),
    "params_nonzero": Rule(False, 0.0, False, ""),
    "flops": Rule(False, 0.0, False, "FLOPs"),
    "flops_nonzero": Rule(False, 0.0, False, "FLOPs"),
    "size_bytes": Rule(False, 0.0, False, "bytes"),
}
FRACTIONS = {k for k, r in RULES.items() if r.unit == "fraction"}
ALPHA = 0.05  # Welch t-test significance level
BLOCKS = "latency_ms_p50:blocks"  # batch-1 block times, the samples behind latency_ms_p50


def parse_threshold(text: str) -> tuple[str, Rule]:
    """`latency_ms_p50:15%` (relative) or `accuracy:0.5` (absolute; points for accuracy-like
    fractions) -> (metric, rule with that tolerance)."""
    m = re.fullmatch(r"([A-Za-z0-9_]+):([0-9]*\.?[0-9]+)(%?)", text.strip())
    if not m:
        raise CompareError(f"threshold {text!r}: expected METRIC:NUMBER or METRIC:NUMBER% "
                           "(e.g. latency_ms_p50:15% or accuracy:0.5)")
    name, value, pct = m.group(1), float(m.group(2)), m.group(3) == "%"
    if name not in RULES:
        raise CompareError(f"threshold {text!r}: unknown metric '{name}'; known: "
                           f"{', '.join(RULES)}")
    base = RULES[name]
    if pct:
        return name, Rule(base.higher_is_better, value / 100, True, base.unit)
    tol = value / 100 if name in FRACTIONS else value
    return name, Rule(base.higher_is_better, tol, False, base.unit)


# ---------------------------------------------------------------- loading

def load_side(path: str | Path) -> tuple[str | None, dict[str, dict], dict[str, str]]:
    """(suite name, {cell_id: {metric: [values over seeds]}}, {cell_id: label})."""
    from modelopt import results

    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        return _load_benchmark_json(p)
    try:
        recs = results.read(p)
    except results.ResultsError as exc:
        raise CompareError(str(exc)) from None
    suites = {r.get("suite") for r in recs}
    if len(suites) > 1:
        raise CompareError(f"{p}: holds several suites ({', '.join(map(str, suites))}); "
                           "compare one at a time")
    return _collect(recs, suites.pop() if suites else None)


def _load_benchmark_json(p: Path):
    try:
        doc = json.loads(p.read_text())
        benches = doc["benchmarks"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CompareError(f"{p}: not a pytest-benchmark JSON file ({exc})") from None
    recs, suites = [], set()
    for i, b in enumerate(benches):
        info = b.get("extra_info") or {}
        if "cell_id" not in info:
            raise CompareError(f"{p}: benchmark {i} ({b.get('name')}) has no modelopt extra_info")
        suites.add((b.get("group") or "").split(":")[0])
        metrics = {k: v for k, v in info.items() if k not in ("cell_id", "seed", "status")}
        recs.append({"cell_id": info["cell_id"], "seed": info.get("seed"),
                     "status": info.get("status", "ok"), "metrics": metrics,
                     "label": b.get("group") or b.get("name")})
    return _collect(recs, suites.pop() if len(suites) == 1 else None)


def _collect(recs: list[dict], suite: str | None):
    cells: dict[str, dict] = {}
    labels: dict[str, str] = {}
    for r in recs:
        if r.get("status") != "ok":
            continue
        slot = cells.setdefault(r["cell_id"], {})
        for k, v in (r.get("metrics") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                slot.setdefault(k, []).append(float(v))
        # per-block latency times: the measurement's own spread, pooled over seeds
        for block in ((r.get("extra") or {}).get("latency_blocks_ms") or []):
            slot.setdefault(BLOCKS, []).append(float(block))
        labels[r["cell_id"]] = r.get("label") or _label(r.get("cell") or {})
    return suite, cells, labels


def _label(cell: dict) -> str:
    model = cell.get("model") or {}
    return model.get("name", "?")


# ---------------------------------------------------------------- verdicts

@dataclass
class Row:
    cell_id: str
    label: str
    metric: str
    baseline: float
    current: float
    change: float  # relative (fraction) for relative rules, absolute otherwise
    verdict: str  # ok | regressed | improved | noise
    p_value: float | None


def welch_p(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2 or len(b) < 2:
        return None
    if np.std(a) == 0 and np.std(b) == 0:
        return 0.0 if np.mean(a) != np.mean(b) else 1.0
    from scipy.stats import ttest_ind

    return float(ttest_ind(a, b, equal_var=False).pvalue)


def rank_p(a: list[float], b: list[float]) -> float | None:
    """Mann-Whitney U: timing blocks have heavy tails (a preempted block), where a t-test
    loses its power; ranks do not care how far out an outlier is."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def verdict(rule: Rule, base: list[float], cur: list[float],
            samples: tuple[list[float], list[float]] | None = None
            ) -> tuple[str, float, float | None]:
    """A change is a regression only when it is worse than the tolerance AND (where both
    sides have >= 2 values) a test says it is not noise (p < ALPHA): Welch's t-test over
    the seeds, or, given `samples` (latency: every timed block of every seed), Mann-Whitney."""
    b, c = float(np.mean(base)), float(np.mean(cur))
    delta = c - b
    change = delta / abs(b) if rule.relative and b != 0 else delta
    worse = -change if rule.higher_is_better else change  # > 0 means worse
    p = None if rule.exact else (rank_p(*samples) if samples else welch_p(base, cur))
    if worse > rule.tolerance + 1e-12:
        if p is not None and p >= ALPHA:
            return "noise", change, p
        return "regressed", change, p
    if -worse > rule.tolerance + 1e-12 and (p is None or p < ALPHA):
        return "improved", change, p
    return "ok", change, p


@dataclass
class Comparison:
    rows: list[Row]
    only_baseline: list[str]
    only_current: list[str]
    labels: dict[str, str]

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "regressed"]


def compare(baseline: str | Path, current: str | Path, thresholds: dict[str, Rule] | None = None,
            metrics: list[str] | None = None) -> Comparison:
    b_suite, b_cells, b_labels = load_side(baseline)
    c_suite, c_cells, c_labels = load_side(current)
    if b_suite and c_suite and b_suite != c_suite:
        raise CompareError(f"different suites: baseline '{b_suite}', current '{c_suite}'")
    rules = {**RULES, **(thresholds or {})}
    rows = []
    for cid in [c for c in b_cells if c in c_cells]:
        for metric in metrics or rules:
            if metric not in rules or metric not in b_cells[cid] or metric not in c_cells[cid]:
                continue
            samples = None
            if metric == "latency_ms_p50" and BLOCKS in b_cells[cid] and BLOCKS in c_cells[cid]:
                samples = (b_cells[cid][BLOCKS], c_cells[cid][BLOCKS])
            v, change, p = verdict(rules[metric], b_cells[cid][metric], c_cells[cid][metric],
                                   samples)
            rows.append(Row(cid, c_labels.get(cid) or b_labels.get(cid, cid), metric,
                            float(np.mean(b_cells[cid][metric])),
                            float(np.mean(c_cells[cid][metric])), change, v, p))
    return Comparison(rows, sorted(set(b_cells) - set(c_cells)),
                      sorted(set(c_cells) - set(b_cells)), {**b_labels, **c_labels})


def _num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 or float(v).is_integer() else f"{v:.4g}"


def markdown(cmp: Comparison, rules: dict[str, Rule] | None = None, all_rows: bool = False) -> str:
    """A table for a pull-request comment, and the method in one line under it."""
    from tabulate import tabulate

    rules = {**RULES, **(rules or {})}
    icon = {"regressed": "❌ regressed", "improved": "✅ improved", "noise": "〰 within noise",
            "ok": "ok"}
    shown = [r for r in cmp.rows if all_rows or r.verdict != "ok"]
    body = []
    for r in shown:
        rule = rules[r.metric]
        change = f"{100 * r.change:+.1f} %" if rule.relative else (
            f"{100 * r.change:+.2f} pt" if r.metric in FRACTIONS else f"{r.change:+.4g}")
        tol = (f"{100 * rule.tolerance:g} %" if rule.relative else
               f"{100 * rule.tolerance:g} pt" if r.metric in FRACTIONS else f"{rule.tolerance:g}")
        p = "–" if r.p_value is None else f"{r.p_value:.3f}"
        body.append([f"{r.label} ({r.cell_id[:8]})", r.metric, _num(r.baseline),
                     _num(r.current), change, tol, p, icon[r.verdict]])
    test = "p (Welch; latency: Mann-Whitney)"
    lines = [summary(cmp), ""]
    if body:
        lines.append(tabulate(body, headers=["cell", "metric", "baseline", "current", "change",
                                             "tolerance", test, "verdict"],
                              tablefmt="github", disable_numparse=True))
    else:
        lines.append(f"All {len(cmp.rows)} compared figures are within their tolerances.")
    for title, ids in (("Only in the baseline", cmp.only_baseline),
                       ("Only in the current run", cmp.only_current)):
        if ids:
            lines += ["", f"{title}: " + ", ".join(f"{cmp.labels.get(i, i)} ({i[:8]})" for i in ids)]
    lines += ["", f"A figure regresses when it is worse than its tolerance and a test gives "
              f"p < {ALPHA} (otherwise it is reported as within noise): Welch's t-test over the "
              "seeds, and for batch-1 latency a Mann-Whitney U test over every timed block of "
              "every seed. With one seed a side, the tolerance alone decides. Counts (params, "
              "FLOPs, size) have zero tolerance."]
    return "\n".join(lines)


def summary(cmp: Comparison) -> str:
    n_reg = len(cmp.regressions)
    n_imp = sum(r.verdict == "improved" for r in cmp.rows)
    cells = len({r.cell_id for r in cmp.rows})
    missing = len(cmp.only_baseline) + len(cmp.only_current)
    status = "REGRESSION" if n_reg else "OK"
    return (f"**{status}**: {n_reg} regressed, {n_imp} improved, {len(cmp.rows)} figures "
            f"over {cells} cells compared" + (f"; {missing} cells on one side only" if missing else ""))
