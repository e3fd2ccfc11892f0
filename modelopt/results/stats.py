"""The tests behind verdicts, and the intervals beside them: paired t over seeds, Welch's t
for timings."""

from __future__ import annotations

import math
import statistics
import warnings

ALPHA = 0.05  # a change is significant below this p-value
# the gate's question has a direction (worse? better?): one-sided tests at ALPHA, shown with
# the two-sided interval whose end clears 0 exactly when they are significant (90 %)
GATE_LEVEL = 1 - 2 * ALPHA


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


def paired_ci(base: list[float], cur: list[float], level: float = 0.95
              ) -> tuple[float, float] | None:
    """t-interval (95 % unless `level` says) of the mean paired difference (cur - base) over
    seeds; None with one seed (no spread to estimate)."""
    n = len(base)
    if n < 2:
        return None
    diffs = [c - b for b, c in zip(base, cur)]
    half = _t(n - 1, level) * statistics.stdev(diffs) / math.sqrt(n)
    mean = statistics.fmean(diffs)
    return mean - half, mean + half


def welch_ci(base: list[float], cur: list[float], level: float = 0.95
             ) -> tuple[float, float] | None:
    """Welch interval (95 % unless `level` says) of mean(cur) - mean(base): for speed,
    unpaired."""
    if len(base) < 2 or len(cur) < 2:
        return None
    vb, vc = statistics.variance(base) / len(base), statistics.variance(cur) / len(cur)
    diff = statistics.fmean(cur) - statistics.fmean(base)
    if vb + vc == 0:
        return diff, diff
    df = (vb + vc) ** 2 / (vb ** 2 / (len(base) - 1) + vc ** 2 / (len(cur) - 1))
    half = _t(df, level) * math.sqrt(vb + vc)
    return diff - half, diff + half


def _t(df: float, level: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def mcnemar_p(lost: int, gained: int) -> float:
    """McNemar's exact test: the two-sided p that two models are right as often on one test
    split, from the samples only one of them got right (`lost`: the baseline alone,
    `gained`: the other alone). Samples both got right, or both wrong, say nothing of the
    difference; the figures' own spread over seeds is not in it."""
    if lost + gained == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(gained, lost + gained, 0.5).pvalue)


def sign_flip_p(diffs, draws: int = 10_000) -> float:
    """Two-sided p of the paired randomization (sign-flip) test of differences whose mean
    is 0 under no change: each nonzero difference's sign flipped at random, `draws` times
    (every flip where there are 12 or fewer), p the share of flips whose sum is as far from
    0 as the observed one's. On differences of -1, 0 and 1 it is McNemar's exact test where
    every flip is counted, and a Monte Carlo estimate of it (to about ±0.005) past that."""
    import numpy as np

    d = np.asarray(diffs, dtype=np.float64)
    d = d[d != 0]
    if not len(d):
        return 1.0
    far = abs(d.sum()) - 1e-9
    if len(d) <= 12:  # exact: every sign pattern
        signs = 1 - 2 * ((np.arange(1 << len(d))[:, None] >> np.arange(len(d))) & 1)
        return float((np.abs(signs @ d) >= far).mean())
    rng, hits = np.random.default_rng(0), 0
    for start in range(0, draws, 1000):
        signs = rng.choice((-1.0, 1.0), size=(min(1000, draws - start), len(d)))
        hits += int((np.abs(signs @ d) >= far).sum())
    return (hits + 1) / (draws + 1)
