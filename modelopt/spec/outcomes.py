"""Which test samples a model got right, as a record keeps them (its `extra`, under KEY).

A figure says how many samples a model got right, not which: two models evaluated on the
same test split differ where one is right and the other is not, and only those samples
tell whether a difference is more than the split's luck (McNemar's test, results/stats.py).
A loaded model evaluated as it is gives every seed the same figures, so without these a
one-point drop from int8 has nothing to be tested against.

Kept as bits (a 10,000-sample split is 1,667 characters of base64). Read from a results
directory they are data: anything but the shape written here reads as absent.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import numpy as np

KEY = "test_outcomes"
MAX_SAMPLES = 10_000_000  # a split larger than this keeps no outcomes (a 1.7 MB line)


@dataclass(frozen=True)
class Outcomes:
    figure: str  # the figure they are the mean of (a task's: classification's "accuracy")
    right: np.ndarray  # bool, one per test sample, in the split's order

    @property
    def n(self) -> int:
        return len(self.right)

    def as_dict(self) -> dict:
        bits = base64.b64encode(np.packbits(self.right).tobytes()).decode("ascii")
        return {"figure": self.figure, "n": self.n, "bits": bits}

    @classmethod
    def read(cls, doc) -> "Outcomes | None":
        """What `as_dict` wrote, or None for anything else (absent, another shape, bits that
        do not decode or do not hold `n` samples)."""
        if not isinstance(doc, dict) or not isinstance(doc.get("figure"), str):
            return None
        n, bits = doc.get("n"), doc.get("bits")
        if (not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= MAX_SAMPLES
                or not isinstance(bits, str) or len(bits) != 4 * (((n + 7) // 8 + 2) // 3)):
            return None
        try:
            raw = base64.b64decode(bits, validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(raw) != (n + 7) // 8:
            return None
        return cls(doc["figure"], np.unpackbits(np.frombuffer(raw, np.uint8))[:n].astype(bool))


def kept(figure: str, right) -> dict:
    """A split's outcomes as a record keeps them ({} past MAX_SAMPLES)."""
    right = np.asarray(right, dtype=bool).reshape(-1)
    if not 0 < len(right) <= MAX_SAMPLES:
        return {}
    return {KEY: Outcomes(figure, right).as_dict()}
