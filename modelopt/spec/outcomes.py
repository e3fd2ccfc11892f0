"""How a model did on each test sample, as a record keeps it (its `extra`, under KEY).

A figure says how well a model did over the test split, not where: two models evaluated on
the same split differ sample by sample, and only those differences tell whether a change of
the figure is more than the split's luck (results/paired.py). A loaded model evaluated as
it is gives every seed the same figures, so without these a one-point drop from int8 has
nothing to be tested against.

Two kinds, as the task's figure is made: `right` (bool per sample: the figure, accuracy, is
their mean; kept as bits, a 10,000-sample split in 1,668 characters) and `loss` (float32
per sample, lower is better: the figure moves with their mean, as R² with squared errors
and perplexity with a text window's cross-entropy). `split` prints the test targets, so two
splits of one size are not paired. Read from a results directory they are data: anything
but the shape written here reads as absent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

import numpy as np

KEY = "test_outcomes"
MAX_SAMPLES = {"bits": 10_000_000, "losses": 100_000}  # past these a record keeps none
_SPLIT = 16  # hex digits of the targets' sha256


@dataclass(frozen=True)
class Outcomes:
    figure: str  # the figure they decide (a task's: "accuracy", "r2", "perplexity")
    values: np.ndarray  # bool (right per sample) or float32 (a loss per sample)
    split: str  # the test targets' fingerprint (split_print)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def field(self) -> str:
        return "bits" if self.values.dtype == bool else "losses"

    def as_dict(self) -> dict:
        raw = (np.packbits(self.values) if self.field == "bits"
               else self.values.astype("<f4")).tobytes()
        return {"figure": self.figure, "n": self.n, "split": self.split,
                self.field: base64.b64encode(raw).decode("ascii")}

    def fits(self, value: float | None, samples: int | None) -> bool:
        """Whether they are the outcomes of the record they came with: as many as its test
        samples, and right ones whose mean is its figure (a record is data: its outcomes
        may have been taken from another)."""
        if samples is not None and samples != self.n:
            return False
        return value is None or self.field != "bits" or abs(
            float(self.values.mean()) - value) <= 1e-9

    def same(self, other: "Outcomes") -> bool:
        return (self.split == other.split and self.figure == other.figure
                and self.values.dtype == other.values.dtype
                and np.array_equal(self.values, other.values))

    @classmethod
    def read(cls, doc) -> "Outcomes | None":
        """What `as_dict` wrote, or None for anything else (absent, another shape, values
        that do not decode, do not hold `n` samples or are not finite)."""
        if not isinstance(doc, dict) or not all(
                isinstance(doc.get(k), str) for k in ("figure", "split")):
            return None
        field = "bits" if "bits" in doc else "losses"
        n, text = doc.get("n"), doc.get(field)
        if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= MAX_SAMPLES[field]:
            return None
        size = (n + 7) // 8 if field == "bits" else 4 * n  # bytes
        if not isinstance(text, str) or len(text) != 4 * ((size + 2) // 3):
            return None
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(raw) != size:
            return None
        if field == "bits":
            values = np.unpackbits(np.frombuffer(raw, np.uint8))[:n].astype(bool)
        else:
            values = np.frombuffer(raw, "<f4").astype(np.float32)
            if not np.isfinite(values).all():
                return None
        return cls(doc["figure"], values, doc["split"][:_SPLIT])


def split_print(targets) -> str:
    """The test targets' fingerprint: the same samples in the same order have the same."""
    array = np.ascontiguousarray(np.asarray(targets))
    digest = hashlib.sha256(str(array.dtype).encode() + str(array.shape).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:_SPLIT]


def kept(figure: str, values, targets) -> dict:
    """A split's outcomes as a record keeps them: bools (right per sample) as bits, anything
    else as float32 losses ({} past MAX_SAMPLES, or a loss that is not finite)."""
    values = np.asarray(values).reshape(-1)
    values = values.astype(bool) if values.dtype == bool else values.astype(np.float32)
    outcomes = Outcomes(figure, values, split_print(targets))
    if not 0 < outcomes.n <= MAX_SAMPLES[outcomes.field] or (
            outcomes.field == "losses" and not np.isfinite(values).all()):
        return {}
    return {KEY: outcomes.as_dict()}
