"""Two models on the same test samples (spec/outcomes.py, in a record's `extra`): where one
seed, or seeds that are copies (a loaded model evaluated as it is), leave a difference
nothing to be tested against, the samples are the replicates. Right-or-wrong answers are
tested with McNemar's exact test, per-sample losses with a paired t-test, a classifier's
macro figures with an approximate randomization test of its choices (resample.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelopt.results.resample import MACRO, RESAMPLES, macro, randomization_p
from modelopt.results.stats import mcnemar_p, paired_p
from modelopt.spec.outcomes import Outcomes


@dataclass(frozen=True)
class Paired:
    """The other model against the baseline, sample by sample."""

    test: str  # "McNemar" (right or wrong), "paired t" (losses), "randomization" (macro)
    p: float  # two-sided
    n: int  # the samples both were tested on
    worse: int  # samples the other model did worse on (right before and wrong now)
    better: int  # and better

    def words(self) -> str:
        """What the test saw, as compare's note says it."""
        if self.test != "paired t":
            how = f"{RESAMPLES:,} random swaps of " if self.test == "randomization" else ""
            return (f"{self.test} on {how}{self.n:,} test samples: {self.worse} right before "
                    f"and wrong now, {self.better} the other way")
        return (f"paired t on {self.n:,} test samples' losses: {self.worse} worse, "
                f"{self.better} better")


# one seed's record as the paired test reads it: its outcomes as kept (spec/outcomes.py),
# the figure it recorded, and its test samples (None where it did not say)
Seen = tuple[object, "float | None", "int | None"]


def on_samples(base: list[Seen], other: list[Seen], figure: str) -> Paired | None:
    """The other model against the baseline on the same test samples, from each side's
    seeds; None unless both kept outcomes of `figure` that fit their records, on one split.
    A side of several seeds is tested only where its seeds went alike on every sample (a
    loaded model's copies): seeds whose figures agree by chance but whose answers differ
    are replicates, which one seed's samples do not stand for."""
    a, b = _one(base, figure), _one(other, figure)
    if a is None or b is None or a.n != b.n or a.split != b.split or a.field != b.field:
        return None
    if a.field == "bits":
        lost, gained = int((a.values & ~b.values).sum()), int((~a.values & b.values).sum())
        if figure not in MACRO:
            return Paired("McNemar", mcnemar_p(lost, gained), a.n, lost, gained)
        if a.choices.classes != b.choices.classes:
            return None
        return Paired("randomization", randomization_p(a.choices, b.choices, figure), a.n, lost,
                      gained)
    diff = b.values.astype(np.float64) - a.values.astype(np.float64)
    p = paired_p(a.values.tolist(), b.values.tolist()) if a.n > 1 else 1.0
    return Paired("paired t", 1.0 if p is None else p, a.n, int((diff > 0).sum()),
                  int((diff < 0).sum()))


def _one(seen: list[Seen], figure: str) -> Outcomes | None:
    """One side's outcomes: its seeds' alike, each fitting its record."""
    read = [Outcomes.read(doc) for doc, _, _ in seen]
    if not read or any(o is None or not _fits(o, figure, value, samples)
                       for o, (_, value, samples) in zip(read, seen)):
        return None
    return read[0] if all(read[0].same(o) for o in read[1:]) else None


def _fits(o: Outcomes, figure: str, value: float | None, samples: int | None) -> bool:
    """Whether `o` decides `figure` (its own, or a macro figure of its choices) and fits the
    record it came with."""
    if figure == o.figure:
        return o.fits(value, samples)
    if figure not in MACRO or o.choices is None or not o.fits(None, samples):
        return False
    return value is None or abs(macro(o.choices)[figure] - value) <= 1e-9
