"""The gate's comparison as a pull-request comment: a one-line summary, the table of what
changed (each figure with its interval, tolerance and test), and how the gate decides."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelopt.results import metrics as M
from modelopt.results.compare import CLEAR, LATENCY
from modelopt.results.stats import ALPHA, GATE_LEVEL

if TYPE_CHECKING:
    from modelopt.results.compare import Comparison, Row


def _num(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:,.0f}" if abs(v) >= 1000 or float(v).is_integer() else f"{v:.4g}"


def _fmt_change(r: Row, metric: M.Metric | None) -> str:
    """The change in its units, with its interval where it has one."""
    if r.change is None or metric is None:
        return "–"
    if metric.kind == "relative":
        text, unit = (lambda x: f"{100 * x:+.1f}"), " %"
    elif metric.kind == "points":
        text, unit = (lambda x: f"{100 * x:+.2f}"), " pt"
    else:
        text, unit = (lambda x: f"{x:+.4g}"), ""
    ci = f" [{text(r.ci[0])}, {text(r.ci[1])}]" if r.ci is not None else ""
    return text(r.change) + unit + ci


def _fmt_tolerance(metric: M.Metric | None) -> str:
    if metric is None or metric.kind == "exact":
        return "any seed" if metric is None else "exact"
    unit = {"relative": " %", "points": " pt"}.get(metric.kind)
    return f"{100 * metric.tolerance:g}{unit}" if unit else f"{metric.tolerance:g}"


def markdown(cmp: Comparison, rules: dict[str, M.Metric] | None = None,
             all_rows: bool = False) -> str:
    """A table for a pull-request comment, and the method under it."""
    from tabulate import tabulate

    rules = {**M.TABLE, **(rules or {})}
    icon = {"regressed": "❌ regressed", "improved": "✅ improved", "noise": "〰 within noise",
            "worse": "↘ worse, within tolerance", "ok": "ok", "not gated": "not gated"}
    shown = [r for r in cmp.rows if all_rows or r.verdict not in ("ok", "not gated")]
    body = []
    for r in shown:
        metric = rules.get(r.metric)
        p = "–" if r.p_value is None else "< 0.001" if r.p_value < 0.001 else f"{r.p_value:.3f}"
        name = r.metric + (f" ({r.note})" if r.note and r.metric != "status" else "")
        verdict = icon[r.verdict] + (f": {r.note}" if r.metric == "status" else "")
        body.append([cmp.labels.get(r.cell_id, r.cell_id[:8]), name, _num(r.baseline),
                     _num(r.current), _fmt_change(r, metric), _fmt_tolerance(metric), p,
                     r.n or "–", verdict])
    lines = [summary(cmp), ""] + [x for note in (cmp.machines, cmp.data, cmp.tolerances)
                                  if note for x in (note, "")]
    if body:
        lines.append(tabulate(body, headers=["cell", "metric", "baseline", "current",
                                             "change [interval]", "tolerance", "p",
                                             "n", "verdict"],
                              tablefmt="github", disable_numparse=True))
    elif cmp.rows:
        lines.append(f"All {len(cmp.rows)} compared figure{'s' * (len(cmp.rows) != 1)} are "
                     "within their tolerances.")
    if any(r.n == 2 and r.ci is not None and r.metric not in LATENCY.values() for r in cmp.rows):
        lines += ["", "Two seeds a side give the paired test one degree of freedom: a change "
                  "is significant only where the two seeds' changes differ by less than about a "
                  "third of their mean (t = 6.3). Gate with 3 or more seeds "
                  "(`seeds: [0, 1, 2]`) to catch smaller regressions."]
    for title, ids in (("Only in the baseline", cmp.only_baseline),
                       ("Only in the current run", cmp.only_current)):
        if ids:
            lines += ["", f"{title}"
                      + (" (allowed by --allow-missing)" if cmp.allow_missing else
                         " (fails the gate; --allow-missing to accept)") + ": "
                      + "; ".join(cmp.labels.get(i, i[:8]) for i in ids)]  # labels hold commas
    lines += ["", _method(cmp)]
    return "\n".join(lines)


def _method(cmp: Comparison) -> str:
    """How the gate decides, under the table."""
    return ("How the gate decides: a cell with a seed that was ok in the baseline and is "
              "failed, timed out, diverged or absent now regresses. A figure regresses when it "
              "is worse than its tolerance and a one-sided paired t-test over the seeds (is it "
              f"worse?) gives p < {ALPHA}, i.e. its {100 * GATE_LEVEL:.0f} % interval excludes no change "
              "(worse but not significant: within noise; within its tolerance but worse by at "
              f"least half of it with p < {CLEAR}, or a re-timed latency whose interval "
              "excludes no change: worse, within tolerance, which never fails). Where seeds "
              "cannot test it (one seed a side, or seeds whose figures tie: a loaded model's "
              "copies, counted once, or ties by chance, averaged sample by sample), it is "
              "tested on the test samples "
              "where both records kept them: accuracy by McNemar's exact test on those one run "
              "got right and the other wrong (its sign-flip form over seeds averaged), macro "
              "F1, precision and recall by swapping the two runs' classes chosen at random "
              "(approximate randomization; with seeds, their mean, a sample swapped in every "
              "seed at once), R², MSE, RMSE, "
              "perplexity and the loss of a regression or a text model by a paired t-test of "
              "per-sample losses; other figures: the tolerance alone. "
              "Counts (params, FLOPs, size) are exact. train_samples_s is compared per unit of "
              "the machine's speed (× machine_probe_ms, a fixed workload timed in the cell's "
              "own process before and after training), with Welch's t-test: seeds pair what "
              f"training produces, not its speed. Latency: {cmp.latency}.")


def summary(cmp: Comparison) -> str:
    n_reg = sum(r.cell_id not in cmp.not_run for r in cmp.regressions)  # not run: said apart
    n_imp = sum(r.verdict == "improved" for r in cmp.rows)
    compared = [r for r in cmp.rows if r.cell_id not in cmp.not_run]
    cells = len({r.cell_id for r in compared})
    missing = len(cmp.only_baseline) + len(cmp.only_current)
    status = "REGRESSION" if cmp.failed else "OK"
    unrun = f"; {len(cmp.not_run)} not run, though the current suite lists them" * bool(
        cmp.not_run)
    if cmp.common == 0:
        return (f"**{status}**: the two sides have no cell in common "
                f"({len(cmp.only_baseline) + len(cmp.not_run)} in the baseline, "
                f"{len(cmp.only_current)} in the current run): nothing was compared{unrun}")
    # latency left ungated is said here, not only under the table: a green line read alone
    some = any(r.metric in LATENCY.values() for r in cmp.rows)  # e.g. on a run's own timing
    unsure = (f"latency {'partly ' * some}not gated (the note says why)"
              if cmp.latency.startswith("not gated")
              else f"latency of {len(cmp.not_retimed)} cell(s) not gated" * bool(cmp.not_retimed))
    n_worse = sum(r.verdict == "worse" for r in cmp.rows)
    return (f"**{status}**: {n_reg} regressed, {n_imp} improved"
            + (f", {n_worse} worse within tolerance" if n_worse else "")
            + f", {len(compared)} figure{'s' * (len(compared) != 1)} "
            f"over {cells} cell{'s' * (cells != 1)} compared{unrun}"
            + (f"; {unsure}" if unsure else "")
            + (f"; {missing} cell{'s' * (missing != 1)} on one side only"
               + (" (allowed)" if cmp.allow_missing else "") if missing else ""))
