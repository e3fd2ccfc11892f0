"""Two models' answers on the same test samples (spec/outcomes.py, in a record's `extra`):
where one seed, or seeds that are copies (a loaded model evaluated as it is), leave a
difference nothing to be tested against, the samples are the replicates."""

from __future__ import annotations

from dataclasses import dataclass

from modelopt.results.stats import mcnemar_p
from modelopt.spec.outcomes import KEY, Outcomes


@dataclass(frozen=True)
class Discordant:
    lost: int  # samples the baseline got right and the other model wrong
    gained: int  # and the other way round
    n: int  # the samples both were tested on

    @property
    def change(self) -> float:
        """The difference of the two accuracies (other - baseline), as a fraction."""
        return (self.gained - self.lost) / self.n

    @property
    def p(self) -> float:
        return mcnemar_p(self.lost, self.gained)


def discordant(base: dict | None, other: dict | None, figure: str) -> Discordant | None:
    """How the other model's answers differ from the baseline's, sample by sample, from two
    records' `extra`; None unless both kept outcomes of `figure` on as many samples."""
    return between(*(e.get(KEY) if isinstance(e, dict) else None for e in (base, other)),
                   figure=figure)


def between(base, other, figure: str) -> Discordant | None:
    """`discordant` of two outcomes as a record keeps them (its `extra[KEY]`)."""
    a, b = Outcomes.read(base), Outcomes.read(other)
    if a is None or b is None or a.figure != figure or b.figure != figure or a.n != b.n:
        return None
    return Discordant(int((a.right & ~b.right).sum()), int((~a.right & b.right).sum()), a.n)
