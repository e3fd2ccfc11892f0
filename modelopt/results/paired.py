"""Two models on the same test samples (spec/outcomes.py, in a record's `extra`): where one
seed, or seeds whose figures tie, leave a difference nothing to be tested against over the
seeds, the samples are the replicates. Right-or-wrong answers are tested with McNemar's
exact test (with seeds that differ, each sample's share of right answers by a sign-flip
randomization test), per-sample losses with a paired t-test, a classifier's macro figures
with an approximate randomization test of its choices (resample.py; with seeds, of their
mean)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelopt.results.resample import MACRO, RESAMPLES, macro, randomization_p
from modelopt.results.stats import mcnemar_p, paired_p, sign_flip_p
from modelopt.spec.outcomes import Outcomes


@dataclass(frozen=True)
class Paired:
    """The other model against the baseline, sample by sample."""

    test: str  # "McNemar" (right or wrong), "paired t" (losses), "randomization"
    p: float  # two-sided; 1 where the two did alike on every sample
    n: int  # the test samples, the replicates
    worse: int  # samples the other model did worse on (right before and wrong now)
    better: int  # and better
    seeds: int = 1  # seeds averaged per sample (copies count once)
    moved: int = -1  # samples whose class chosen changed (a macro figure's test), or -1

    @property
    def alike(self) -> bool:
        """Alike on every sample: nothing changed, whatever a test would say."""
        return self.worse == self.better == 0 and self.moved <= 0

    def words(self) -> str:
        """What the test saw, as compare's note says it."""
        on = f"{self.n:,} test samples" + (f", each averaged over {self.seeds} seeds"
                                           if self.seeds > 1 else "")
        if self.test == "paired t":
            return f"paired t on {on}: {self.worse} worse, {self.better} better"
        if self.moved >= 0:  # a macro figure: each seed's own, then their mean
            many = self.seeds > 1
            on = f"{self.n:,} test samples" + (
                f", the figure averaged over {self.seeds} seeds" if many else "")
            counts = (f"{self.worse} right less often now, {self.better} more often" if many
                      else f"{self.worse} right before and wrong now, {self.better} the other way")
            return (f"randomization test, {RESAMPLES:,} random swaps of the answers on {on}: "
                    f"{self.moved} chose another class{' in some seed' if many else ''} "
                    f"({counts})")
        if self.seeds > 1:
            return (f"randomization test on {on}: {self.worse} right less often now, "
                    f"{self.better} more often")
        return (f"McNemar on {on}: {self.worse} right before and wrong now, {self.better} the "
                "other way")


# one seed's record as the paired test reads it: its outcomes (None where it kept none that
# read) and its figures, which they must fit
Seen = tuple["Outcomes | None", dict]


def on_samples(base: list[Seen], other: list[Seen], figure: str) -> Paired | None:
    """The other model against the baseline on the same test samples, with its seeds (the
    two lists in the same seed order); None unless every seed kept outcomes that decide
    `figure` and fit its record, on one split. The samples are the replicates: a side's
    seeds that went alike on every sample (a loaded model's copies) count once, and seeds
    that differ (whose figures tie by chance) are averaged sample by sample, never laid end
    to end (each sample is one draw from the test population, however many seeds saw it);
    a macro figure stays each seed's own, their mean tested."""
    if not base or len(base) != len(other):
        return None
    read = [o for o, figures in base + other if o is not None and _fits(o, figure, figures)]
    if len(read) != 2 * len(base) or len({(o.split, o.field, o.n) for o in read}) != 1:
        return None
    a, b = read[:len(base)], read[len(base):]
    a, b = (side[:1] if all(side[0].same(o) for o in side) else side for side in (a, b))
    return _tested(a, b, figure)


def _tested(a: list[Outcomes], b: list[Outcomes], figure: str) -> Paired | None:
    """The test of `figure` on the samples, each sample's outcomes averaged over a side's
    seeds (one seed, or copies: its own)."""
    first, seeds = a[0], max(len(a), len(b))
    mine, theirs = (np.mean([o.values for o in side], axis=0, dtype=np.float64)
                    for side in (a, b))
    diff, n = theirs - mine, first.n
    if first.field == "losses":
        worse, better = int((diff > 0).sum()), int((diff < 0).sum())
        p = 1.0 if not worse + better else paired_p(mine.tolist(), theirs.tolist())
        return Paired("paired t", 1.0 if p is None else p, n, worse, better, seeds)
    worse, better = int((diff < 0).sum()), int((diff > 0).sum())
    if figure == first.mean_of:
        if seeds == 1:
            return Paired("McNemar", mcnemar_p(worse, better), n, worse, better)
        return Paired("randomization", sign_flip_p(diff), n, worse, better, seeds)
    mine_c, theirs_c = ([o.choices for o in side] for side in (a, b))
    if any(c is None or c.classes != mine_c[0].classes for c in mine_c + theirs_c):
        return None
    # a macro figure is each seed's own (answers averaged over seeds make no figure): the
    # test swaps a sample's answers in every seed at once; seed k against seed k, a side of
    # one (copies) against each
    mine_c, theirs_c = ([side[k % len(side)] for k in range(seeds)] for side in (mine_c, theirs_c))
    moved = int(np.logical_or.reduce([x.predicted != y.predicted
                                      for x, y in zip(mine_c, theirs_c)]).sum())
    return Paired("randomization", randomization_p(mine_c, theirs_c, figure), n, worse,
                  better, seeds, moved)


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
