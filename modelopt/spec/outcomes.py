"""How a model did on each test sample, as a record keeps it (its `extra`, under KEY).

A figure says how well a model did over the test split, not where: two models evaluated on
the same split differ sample by sample, and only those differences tell whether a change of
the figure is more than the split's luck (results/paired.py). A loaded model evaluated as
it is gives every seed the same figures, so without these a one-point drop from int8 has
nothing to be tested against.

Two kinds, as the task's figure is made: `right` (bool per sample: the figure, accuracy, is
their mean; kept as bits, a 10,000-sample split in 1,668 characters) and `loss` (float32
per sample, lower is better: the figure moves with their mean, as R² with squared errors
and perplexity with a text window's cross-entropy). A classifier's also keep its `choices`,
the class it chose per sample beside the targets (up to 200,000 samples), from which its
macro figures (F1, precision, recall) are resampled. `split` prints the test targets, so
two splits of one size are not paired. Read from a results directory they are data: anything
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
MAX_CHOICES = 200_000  # past this a classifier keeps its bits alone (a 1 MB line)
_SPLIT = 16  # hex digits of the targets' sha256


@dataclass(frozen=True)
class Choices:
    """A classifier's answers: the class chosen per test sample, and the sample's own."""

    predicted: np.ndarray  # int64, one per sample
    targets: np.ndarray
    classes: int  # how many a macro figure averages over (the dataset's, seen or not)

    @property
    def dtype(self) -> str:
        return "<u2" if self.classes <= 1 << 16 else "<u4"

    def as_dict(self) -> dict:
        return {"classes": self.classes,
                **{k: base64.b64encode(getattr(self, k).astype(self.dtype).tobytes()
                                       ).decode("ascii") for k in ("predicted", "targets")}}

    @classmethod
    def read(cls, doc: dict, right: np.ndarray) -> "Choices | None":
        """What `as_dict` wrote into `doc`, agreeing with the right answers it came with."""
        classes = doc.get("classes")
        if not isinstance(classes, int) or isinstance(classes, bool) or not 0 < classes < 1 << 31:
            return None
        size = len(right) * (2 if classes <= 1 << 16 else 4)
        arrays = [_decoded(doc.get(k), size) for k in ("predicted", "targets")]
        if any(a is None for a in arrays):
            return None
        dtype = "<u2" if classes <= 1 << 16 else "<u4"
        predicted, targets = (np.frombuffer(a, dtype).astype(np.int64) for a in arrays)
        if (max(predicted.max(), targets.max()) >= classes
                or not np.array_equal(predicted == targets, right)):
            return None
        return cls(predicted, targets, classes)


@dataclass(frozen=True)
class Outcomes:
    figure: str  # the figure they decide (a task's: "accuracy", "r2", "perplexity")
    values: np.ndarray  # bool (right per sample) or float32 (a loss per sample)
    split: str  # the test targets' fingerprint (split_print)
    choices: Choices | None = None  # a classifier's, where kept

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
                self.field: base64.b64encode(raw).decode("ascii"),
                **(self.choices.as_dict() if self.choices is not None else {})}

    def fits(self, value: float | None, samples: int | None) -> bool:
        """Whether they are the outcomes of the record they came with: as many as its test
        samples, and right ones whose mean is its figure (a record is data: its outcomes
        may have been taken from another)."""
        if samples is not None and samples != self.n:
            return False
        return value is None or self.field != "bits" or abs(
            float(self.values.mean()) - value) <= 1e-9

    def same(self, other: "Outcomes") -> bool:
        """Alike on every sample (a loaded model's seeds: copies of one evaluation)."""
        mine, theirs = self.choices, other.choices
        return (self.split == other.split and self.figure == other.figure
                and self.values.dtype == other.values.dtype
                and np.array_equal(self.values, other.values)
                and (mine is None) == (theirs is None)
                and (mine is None or np.array_equal(mine.predicted, theirs.predicted)))

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
        raw = _decoded(text, (n + 7) // 8 if field == "bits" else 4 * n)
        if raw is None:
            return None
        if field == "losses":
            values = np.frombuffer(raw, "<f4").astype(np.float32)
            return cls(doc["figure"], values, doc["split"][:_SPLIT]) if np.isfinite(
                values).all() else None
        values = np.unpackbits(np.frombuffer(raw, np.uint8))[:n].astype(bool)
        choices = None
        if "predicted" in doc:  # kept, they must be these answers'
            choices = Choices.read(doc, values) if n <= MAX_CHOICES else None
            if choices is None:
                return None
        return cls(doc["figure"], values, doc["split"][:_SPLIT], choices)


def _decoded(text, size: int) -> bytes | None:
    """`size` bytes from base64 `text`, or None (not text, not base64, another length)."""
    if not isinstance(text, str) or len(text) != 4 * ((size + 2) // 3):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == size else None


def split_print(targets) -> str:
    """The test targets' fingerprint: the same samples in the same order have the same."""
    array = np.ascontiguousarray(np.asarray(targets))
    digest = hashlib.sha256(str(array.dtype).encode() + str(array.shape).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:_SPLIT]


def kept(figure: str, values, targets, classes: int = 0) -> dict:
    """A split's outcomes as a record keeps them: bools (right per sample) as bits; integers
    (the class chosen per sample, of `classes`) as bits and, up to MAX_CHOICES, the choices
    beside the targets; anything else as float32 losses ({} past MAX_SAMPLES, or a loss
    that is not finite)."""
    values, targets = np.asarray(values).reshape(-1), np.asarray(targets)
    choices = None
    if values.dtype.kind in "iu":
        if len(values) <= MAX_CHOICES and 0 < classes < 1 << 31:
            choices = Choices(values.astype(np.int64), targets.reshape(-1).astype(np.int64),
                              classes)
        values = values == targets.reshape(-1)
    values = values.astype(bool) if values.dtype == bool else values.astype(np.float32)
    outcomes = Outcomes(figure, values, split_print(targets), choices)
    if not 0 < outcomes.n <= MAX_SAMPLES[outcomes.field] or (
            outcomes.field == "losses" and not np.isfinite(values).all()):
        return {}
    return {KEY: outcomes.as_dict()}
