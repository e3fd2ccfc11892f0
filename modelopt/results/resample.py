"""A classifier's macro figures (F1, precision, recall: each class's, averaged over the
dataset's classes, as scikit-learn's `average="macro"` with `zero_division=0`) from the
class it chose per test sample, and the paired test of two classifiers' difference on the
same samples. Such a figure is no mean of per-sample parts, so neither McNemar's test nor
a t-test over the samples applies; an approximate randomization test does (Noreen 1989):
under "no difference" the two models' answers to a sample are exchangeable, so each
sample's pair is swapped at random, RESAMPLES times, and p is the share of swaps whose
difference is at least the observed one. On accuracy it estimates McNemar's exact p (Monte
Carlo, RESAMPLES swaps: 0.11 against 0.125 for 4 lost of 240); the paired
bootstrap's percentile test reads far too sure where few samples differ (4 samples lost
and none gained: p 0.03 against McNemar's 0.125)."""

from __future__ import annotations

import functools

import numpy as np

from modelopt.spec.outcomes import Choices

MACRO = ("f1_macro", "precision_macro", "recall_macro")
RESAMPLES = 1000  # a p-value's resolution: 1 / 1001
_CELLS = 4_000_000  # swaps x differing samples drawn at a time (memory)


def macro(choices: Choices) -> dict[str, float]:
    """The macro figures of `choices` on the whole split."""
    k, t = choices.classes, choices.targets
    zero = np.zeros(k, dtype=np.int64)
    rows = _rows(zero, zero, np.bincount(t, minlength=k), choices.predicted[None, :], t)
    return {name: float(v[0]) for name, v in rows.items()}


def _rows(tp0: np.ndarray, chosen0: np.ndarray, held: np.ndarray, predicted: np.ndarray,
          targets: np.ndarray) -> dict[str, np.ndarray]:
    """The macro figures of each row of `predicted` (rows x samples) against `targets`,
    beside counts every row shares (`tp0`, `chosen0`: of samples not in the rows; `held`:
    every target)."""
    rows, k = len(predicted), len(held)
    offset = k * np.arange(rows)[:, None]  # each row counts into its own k bins
    count = lambda keys: np.bincount(keys.ravel(), minlength=rows * k).reshape(rows, k)  # noqa: E731
    tp = tp0 + count((targets + offset)[predicted == targets])
    chosen = chosen0 + count(predicted + offset)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(chosen > 0, tp / chosen, 0.0)
        recall = np.where(held > 0, tp / held, 0.0)
        f1 = np.where(chosen + held > 0, 2 * tp / (chosen + held), 0.0)
    return {"precision_macro": precision.mean(1), "recall_macro": recall.mean(1),
            "f1_macro": f1.mean(1)}


def randomization_p(base: list[Choices], other: list[Choices], figure: str) -> float:
    """Two-sided p of the approximate randomization test of `figure`'s difference: (the
    swaps at least as far from zero as the observed difference + 1) / (RESAMPLES + 1); 1
    where the two chose alike on every sample. With seeds (the two lists as long, seed k
    against seed k), the difference is the seeds' mean and a swap exchanges a sample's
    answers in every seed at once: the sample is the unit drawn. The same swaps each time:
    the same choices give the same p."""
    return _randomized(tuple(c.predicted.tobytes() for c in base),
                       tuple(c.predicted.tobytes() for c in other),
                       base[0].targets.tobytes(), base[0].classes)[figure]


@functools.lru_cache(maxsize=16)  # the three figures of one pair come from the same swaps
def _randomized(base: tuple[bytes, ...], other: tuple[bytes, ...], targets: bytes,
                classes: int) -> dict[str, float]:
    a, b = (np.stack([np.frombuffer(x, np.int64) for x in side]) for side in (base, other))
    t = np.frombuffer(targets, np.int64)
    differ = (a != b).any(0)
    if not differ.any():
        return dict.fromkeys(MACRO, 1.0)
    # a swap moves only the samples the two chose differently (in some seed): the rest
    # count once, per seed
    alike, td, held = ~differ, t[differ], np.bincount(t, minlength=classes)
    fixed = [(np.bincount(t[alike & (s == t)], minlength=classes),
              np.bincount(s[alike], minlength=classes)) for s in a]
    ad, bd = a[:, differ], b[:, differ]

    def gap(swap: np.ndarray) -> dict[str, np.ndarray]:
        """The figures' difference (other - base), the seeds' mean, per row of `swap`."""
        out = dict.fromkeys(MACRO, 0.0)
        for (tp0, chosen0), x, y in zip(fixed, ad, bd):
            mine = _rows(tp0, chosen0, held, np.where(swap, y, x), td)
            theirs = _rows(tp0, chosen0, held, np.where(swap, x, y), td)
            out = {name: out[name] + (theirs[name] - mine[name]) / len(a) for name in MACRO}
        return out

    seen = gap(np.zeros((1, len(td)), dtype=bool))
    far = {name: abs(seen[name][0]) - 1e-12 for name in MACRO}
    rng, hits = np.random.default_rng(0), dict.fromkeys(MACRO, 0)
    step = max(1, _CELLS // max(len(td), classes))  # rows x classes counts, too
    for start in range(0, RESAMPLES, step):
        moved = gap(rng.random((min(step, RESAMPLES - start), len(td))) < 0.5)
        for name in MACRO:
            hits[name] += int((np.abs(moved[name]) >= far[name]).sum())
    return {name: (hits[name] + 1) / (RESAMPLES + 1) for name in MACRO}
