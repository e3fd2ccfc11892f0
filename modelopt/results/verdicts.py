"""The gate's verdict on one figure: worse than its tolerance and significant (regressed),
worse but not significant (noise), clearly worse within it (worse, never failing), better
beyond it and significant (improved); and the row the comparison's table shows."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from modelopt.results import metrics as M
from modelopt.results.stats import ALPHA, GATE_LEVEL, paired_ci, paired_p, welch_ci, welch_p

# a figure within its tolerance whose test gives p below this, worse by at least half its
# tolerance, is shown as worse (never a failure): strict, since a table of many figures would
# show some at ALPHA by chance alone (re-timed latency has no p: its 95 % interval, over
# processes whose pairing leaves little noise, and the half-tolerance bar decide)
CLEAR = 0.001


@dataclass
class Row:
    cell_id: str
    metric: str
    baseline: float | None
    current: float | None
    change: float | None  # relative (fraction) for relative tolerances, absolute otherwise
    verdict: str  # ok | regressed | improved | noise | worse (within tolerance) | not gated
    p_value: float | None = None
    # the change's interval, in its units: 90 % paired over seeds (Welch's for training
    # speed); re-timed latency: 95 % of current/baseline over the timing processes
    ci: tuple[float, float] | None = None
    n: int = 0  # the replicates: paired seeds, test samples, or timing processes
    note: str = ""


def change_of(metric: M.Metric, b: float, c: float) -> tuple[float, float]:
    """(change as shown, how much worse it is in the tolerance's units: > 0 is worse)."""
    change = (c - b) / abs(b) if metric.kind == "relative" and b != 0 else c - b
    return change, (-change if metric.higher_is_better else change)


def verdict(metric: M.Metric, base: list[float], cur: list[float]
            ) -> tuple[str, float, float | None, tuple[float, float] | None]:
    """Worse than the tolerance AND (with >= 2 seeds a side) a one-sided p < ALPHA in the
    direction of the change (the gate asks "worse?", and "better?", never "different?"):
    regressed; worse than the tolerance but not significant: noise. Counts (exact) have no
    noise. Figures that training produces are paired by seed; timings are not (Welch). Also
    the change's 90 % interval, in its units, whose end clears 0 exactly when p < ALPHA
    (None: one seed, or a count)."""
    b, c = statistics.fmean(base), statistics.fmean(cur)
    change, worse = change_of(metric, b, c)
    test, interval = (welch_p, welch_ci) if metric.timing else (paired_p, paired_ci)
    two_sided = None if metric.kind == "exact" else test(base, cur)
    p = None if two_sided is None else two_sided / 2  # in the direction the mean moved
    ci = None if metric.kind == "exact" else interval(base, cur, GATE_LEVEL)
    if ci is not None and metric.kind == "relative" and b != 0:  # a count or a time: it
        ci = (max(ci[0] / abs(b), -1.0), ci[1] / abs(b))  # falls by 100 % at most
    return decide(worse, metric.tolerance, p is None or p < ALPHA), change, p, ci


def decide(worse: float, tolerance: float, significant: bool) -> str:
    """Beyond the tolerance and significant: regressed or improved; beyond it but not
    significant: noise (only a worse figure is worth reporting as such)."""
    if worse > tolerance + 1e-12:
        return "regressed" if significant else "noise"
    if -worse > tolerance + 1e-12 and significant:
        return "improved"
    return "ok"


def clearly_worse(verdict: str, worse: float, tolerance: float, clear: bool) -> str:
    """An ok figure clearly worse (`clear`: its test says so) by at least half its
    tolerance: "worse" (within tolerance), shown and never failing; a deterministic shift of
    a fraction of the tolerance (a megabyte of memory) is not worth a pull request's line."""
    if verdict == "ok" and clear and worse > 0 and worse >= tolerance / 2:
        return "worse"
    return verdict
