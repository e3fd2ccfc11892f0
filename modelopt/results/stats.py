"""The tests behind verdicts: paired t over seeds, Welch's t for timings."""

from __future__ import annotations

import statistics
import warnings

ALPHA = 0.05  # a change is significant below this p-value


def paired_p(base: list[float], cur: list[float]) -> float | None:
    """Two-sided paired t-test over seeds (seed k on both sides: the same data and initial
    weights). Equal differences (a deterministic change) give p = 0, none gives 1."""
    if len(base) < 2:
        return None
    diffs = [c - b for b, c in zip(base, cur)]
    if statistics.pstdev(diffs) == 0:
        return 0.0 if diffs[0] != 0 else 1.0
    from scipy.stats import ttest_rel

    with warnings.catch_warnings():  # near-constant differences: scipy warns, p is still right
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_rel(cur, base).pvalue)


def welch_p(base: list[float], cur: list[float]) -> float | None:
    """Welch's t-test: for speed, where seed k of one run shares nothing with seed k of the
    other (pairing them would only cost degrees of freedom)."""
    if len(base) < 2 or len(cur) < 2:
        return None
    if statistics.pstdev(base) == 0 and statistics.pstdev(cur) == 0:
        return 0.0 if statistics.fmean(base) != statistics.fmean(cur) else 1.0
    from scipy.stats import ttest_ind

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(cur, base, equal_var=False).pvalue)
