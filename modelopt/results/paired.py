"""Two models on the same test samples (spec/outcomes.py, in a record's `extra`): where one
seed, or seeds whose figures tie, leave a difference nothing to be tested against over the
seeds, the samples are the replicates. Right-or-wrong answers are tested with McNemar's
exact test, per-sample losses with a paired t-test, a classifier's macro figures with an
approximate randomization test of its choices (resample.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelopt.results.resample import MACRO, RESAMPLES, macro, randomization_p
from modelopt.results.stats import mcnemar_p, paired_p
from modelopt.spec.outcomes import Choices, Outcomes


@dataclass(frozen=True)
class Paired:
    """The other model against the baseline, sample by sample."""

    test: str  # "McNemar" (right or wrong), "paired t" (losses), "randomization" (macro)
    p: float  # two-sided; 1 where the two did alike on every sample
    n: int  # the samples both were tested on
    worse: int  # samples the other model did worse on (right before and wrong now)
    better: int  # and better
    seeds: int = 1  # seeds pooled: each seed's samples paired with the baseline's of it
    moved: int = 0  # samples whose class chosen changed (the randomization test's swaps)

    @property
    def alike(self) -> bool:
        return self.worse == self.better == 0

    def words(self) -> str:
        """What the test saw, as compare's note says it."""
        on = f"{self.n:,} test samples" + (f" ({self.seeds} seeds pooled)" if self.seeds > 1
                                           else "")
        if self.test == "paired t":
            return f"paired t on {on}' losses: {self.worse} worse, {self.better} better"
        if self.test == "McNemar":
            return (f"McNemar on {on}: {self.worse} right before and wrong now, "
                    f"{self.better} the other way")
        return (f"randomization test, {RESAMPLES:,} random swaps of the answers on {on}: "
                f"{self.moved} chose another class ({self.worse} right before and wrong now, "
                f"{self.better} the other way)")


# one seed's record as the paired test reads it: its outcomes (None where it kept none that
# read) and its figures, which they must fit
Seen = tuple["Outcomes | None", dict]


def on_samples(base: list[Seen], other: list[Seen], figure: str) -> Paired | None:
    """The other model against the baseline on the same test samples, seed by seed (the two
    lists in the same seed order); None unless every seed kept outcomes that decide `figure`
    and fit its record, on one split. Where each side's seeds went alike on every sample (a
    loaded model's copies) one seed stands for them; otherwise the seeds are pooled, each
    seed's samples paired with the baseline's of the same seed (seeds whose figures tie by
    chance are replicates, not copies)."""
    if not base or len(base) != len(other):
        return None
    read = [o for o, figures in base + other if o is not None and _fits(o, figure, figures)]
    if len(read) != 2 * len(base) or len({(o.split, o.field, o.n) for o in read}) != 1:
        return None
    a, b = read[:len(base)], read[len(base):]
    if all(a[0].same(o) for o in a) and all(b[0].same(o) for o in b):
        a, b = a[:1], b[:1]
    return _tested(a, b, figure)


def _tested(a: list[Outcomes], b: list[Outcomes], figure: str) -> Paired | None:
    """The test of `figure` on the seeds' samples laid end to end."""
    first, seeds = a[0], len(a)
    mine, theirs = (np.concatenate([o.values for o in side]) for side in (a, b))
    n = len(mine)
    if first.field == "losses":
        diff = theirs.astype(np.float64) - mine.astype(np.float64)
        worse, better = int((diff > 0).sum()), int((diff < 0).sum())
        p = 1.0 if not worse + better else paired_p(mine.tolist(), theirs.tolist())
        return Paired("paired t", 1.0 if p is None else p, n, worse, better, seeds)
    worse, better = int((mine & ~theirs).sum()), int((~mine & theirs).sum())
    if figure == first.mean_of:
        return Paired("McNemar", mcnemar_p(worse, better), n, worse, better, seeds)
    pooled = [_pooled(side) for side in (a, b)]
    if any(c is None for c in pooled) or pooled[0].classes != pooled[1].classes:
        return None
    moved = int((pooled[0].predicted != pooled[1].predicted).sum())
    return Paired("randomization", randomization_p(*pooled, figure), n, worse, better, seeds,
                  moved)


def _pooled(side: list[Outcomes]) -> Choices | None:
    """One side's choices, its seeds' laid end to end."""
    if any(o.choices is None for o in side):
        return None
    return Choices(np.concatenate([o.choices.predicted for o in side]),
                   np.concatenate([o.choices.targets for o in side]), side[0].choices.classes)


def _fits(o: Outcomes, figure: str, figures: dict) -> bool:
    """Whether `o` decides `figure` and fits the record whose figures these are (its count
    and mean; a classifier's macro figures, computed again from its choices)."""
    if figure not in o.decides or not o.fits(figures):
        return False
    if o.field == "losses" or figure == o.mean_of:
        return True
    if figure not in MACRO or o.choices is None:
        return False
    again = macro(o.choices)
    return all(abs(again[name] - figures[name]) <= 1e-9 for name in MACRO if name in figures)
