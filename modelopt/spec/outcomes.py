"""How a model did on each test sample, as a record keeps it (its `extra`, under KEY).

A figure says how well a model did over the test split, not where: two models evaluated on
the same split differ sample by sample, and only those differences tell whether a change of
the figure is more than the split's luck (results/paired.py). A loaded model evaluated as
it is gives every seed the same figures, so without these a one-point drop from int8 has
nothing to be tested against.

Two kinds, as the task's figures are made: `bits` (right or wrong per sample: accuracy is
their mean; a 10,000-sample split in 1,668 characters) and `losses` (float32 per sample,
lower is better: the regression's squared errors, whose mean is the MSE and with which R²
and RMSE move; a text window's cross-entropy, whose mean is the loss in nats and with which
perplexity and bits per character move). A classifier's also keep its `choices`, the class
it chose per sample beside the targets (up to 100,000 samples), from which its macro
figures are computed. `split` prints the test targets, so two splits of one size are not
paired. Read from a results directory they are data: anything but the shape written here
reads as absent, and readers check them against the figures they came with (`fits`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from dataclasses import dataclass

import numpy as np

KEY = "test_outcomes"
MAX_SAMPLES = {"bits": 10_000_000, "losses": 100_000}  # past these a record keeps none
MAX_CHOICES = 100_000  # past this a classifier keeps its bits alone (a 540 kB line)
# past this too: a class is a uint16, and the randomization test counts every class for each
# of its swaps
MAX_CLASSES = 1 << 16
_SPLIT = 16  # hex digits of the targets' sha256
_NAME = 64  # a figure's name, at most


@dataclass(frozen=True)
class PerSample:
    """What a task says of its outputs on the test split, sample by sample (Task.outcomes):
    `values` are bools (right or wrong), the class chosen per sample (an integer: right
    where it is the target's) or a loss per sample; `mean_of` names the recorded figure that
    is their mean (of the rights: accuracy); `decides` every figure that moves with that
    mean, or is computed from the classes chosen (the first is the task's headline)."""

    values: object  # a tensor or array, one per test sample
    mean_of: str
    decides: tuple[str, ...]


@dataclass(frozen=True)
class Choices:
    """A classifier's answers: the class chosen per test sample, and the sample's own."""

    predicted: np.ndarray  # int64, one per sample
    targets: np.ndarray
    classes: int  # how many a macro figure averages over (the dataset's, seen or not)

    def as_dict(self) -> dict:
        """The classes chosen, and the targets of the samples it got wrong alone (a right
        one's is the class chosen): a tenth of the targets at 90 % accuracy."""
        wrong = self.predicted != self.targets
        return {"classes": self.classes,
                **{k: base64.b64encode(v.astype("<u2").tobytes()).decode("ascii")
                   for k, v in (("predicted", self.predicted),
                                ("wrong_targets", self.targets[wrong]))}}

    @classmethod
    def read(cls, doc: dict, right: np.ndarray) -> "Choices | None":
        """What `as_dict` wrote into `doc`, agreeing with the right answers it came with."""
        classes = doc.get("classes")
        if (not isinstance(classes, int) or isinstance(classes, bool)
                or not 0 < classes <= MAX_CLASSES):
            return None
        arrays = [_decoded(doc.get(k), 2 * n)  # uint16: MAX_CLASSES
                  for k, n in (("predicted", len(right)), ("wrong_targets", int((~right).sum())))]
        if any(a is None for a in arrays):
            return None
        predicted, wrong = (np.frombuffer(a, "<u2").astype(np.int64) for a in arrays)
        targets = predicted.copy()
        targets[~right] = wrong
        if (max(predicted.max(), targets.max()) >= classes
                or not np.array_equal(predicted == targets, right)
                or split_print(targets) != doc.get("split")):  # the targets it was kept with
            return None
        return cls(predicted, targets, classes)


@dataclass(frozen=True)
class Outcomes:
    values: np.ndarray  # bool (right per sample) or float32 (a loss per sample)
    mean_of: str  # the recorded figure their mean is
    decides: tuple[str, ...]  # the figures they test (the first: the task's headline)
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
        return {"mean_of": self.mean_of, "decides": list(self.decides), "n": self.n,
                "split": self.split, self.field: base64.b64encode(raw).decode("ascii"),
                **(self.choices.as_dict() if self.choices is not None else {})}

    def fits(self, figures: dict) -> bool:
        """Whether they are the outcomes of the record whose figures these are: as many as
        its test samples, and a mean that is its `mean_of` figure (a record is data: its
        outcomes may have been taken from another)."""
        samples, value = figures.get("test_samples"), figures.get(self.mean_of)
        if samples is not None and samples != self.n:
            return False
        if value is None:
            return True
        mean = float(self.values.mean(dtype=np.float64))
        # rights: a count over n, as the figure is; losses: float32, summed in another order
        return math.isclose(mean, value, rel_tol=1e-12 if self.field == "bits" else 1e-5,
                            abs_tol=1e-12)

    def same(self, other: "Outcomes") -> bool:
        """Alike on every sample (a loaded model's seeds: copies of one evaluation)."""
        mine, theirs = self.choices, other.choices
        return (self.split == other.split and self.field == other.field
                and np.array_equal(self.values, other.values)
                and (mine is None) == (theirs is None)
                and (mine is None or np.array_equal(mine.predicted, theirs.predicted)))

    @classmethod
    def read(cls, doc) -> "Outcomes | None":
        """What `as_dict` wrote, or None for anything else (absent, another shape, values
        that do not decode, do not hold `n` samples or are not finite)."""
        if not isinstance(doc, dict) or not _names(doc.get("decides")) or not all(
                isinstance(doc.get(k), str) for k in ("mean_of", "split")):
            return None
        field = "bits" if "bits" in doc else "losses"
        n = doc.get("n")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= MAX_SAMPLES[field]:
            return None
        raw = _decoded(doc.get(field), (n + 7) // 8 if field == "bits" else 4 * n)
        if raw is None:
            return None
        named = (doc["mean_of"][:_NAME], tuple(doc["decides"]), doc["split"][:_SPLIT])
        if field == "losses":
            values = np.frombuffer(raw, "<f4").astype(np.float32)
            return cls(values, *named) if np.isfinite(values).all() else None
        values = np.unpackbits(np.frombuffer(raw, np.uint8))[:n].astype(bool)
        choices = None
        if "predicted" in doc:  # kept, they must be these answers'
            choices = Choices.read(doc, values) if n <= MAX_CHOICES else None
            if choices is None:
                return None
        return cls(values, *named, choices)


def _names(value) -> bool:
    return (isinstance(value, list) and 0 < len(value) <= 16
            and all(isinstance(v, str) and 0 < len(v) <= _NAME for v in value))


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


def kept(each: PerSample, targets, classes: int = 0) -> dict:
    """A split's outcomes as a record keeps them: bools as bits; the classes chosen (of
    `classes`) as bits and, up to MAX_CHOICES, the choices beside the targets; losses as
    float32 ({} past MAX_SAMPLES, or a loss that is not finite)."""
    values, targets = np.asarray(each.values).reshape(-1), np.asarray(targets)
    choices = None
    if values.dtype.kind in "iu":  # printed as Choices.read prints the targets it rebuilds
        targets = targets.reshape(-1).astype(np.int64)
        if len(values) <= MAX_CHOICES and 0 < classes <= MAX_CLASSES:
            choices = Choices(values.astype(np.int64), targets, classes)
        values = values == targets
    values = values.astype(bool) if values.dtype == bool else values.astype(np.float32)
    outcomes = Outcomes(values, each.mean_of, tuple(each.decides), split_print(targets),
                        choices)
    if not 0 < outcomes.n <= MAX_SAMPLES[outcomes.field] or (
            outcomes.field == "losses" and not np.isfinite(values).all()):
        return {}
    return {KEY: outcomes.as_dict()}
