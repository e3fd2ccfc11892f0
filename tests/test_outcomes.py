"""Which test samples a model got right, as a record keeps them, and the paired test that
reads them (McNemar's: only the samples one model alone got right count)."""

import numpy as np
import pytest

from modelopt.results import paired
from modelopt.results.stats import mcnemar_p
from modelopt.spec.outcomes import KEY, MAX_SAMPLES, Outcomes, kept


@pytest.mark.parametrize("n", [1, 7, 8, 9, 360, 12345])
def test_outcomes_read_back_as_written(n):
    right = np.random.default_rng(n).random(n) > 0.3
    back = Outcomes.read(kept("accuracy", right)[KEY])
    assert back.figure == "accuracy" and back.n == n and (back.right == right).all()


@pytest.mark.parametrize("doc", [
    None, "AAAA", [], {"figure": "accuracy", "n": 3},
    {"figure": 1, "n": 3, "bits": "AA=="},
    {"figure": "accuracy", "n": True, "bits": "AA=="},  # a bool is no count
    {"figure": "accuracy", "n": 0, "bits": ""},
    {"figure": "accuracy", "n": MAX_SAMPLES + 1, "bits": "AA=="},
    {"figure": "accuracy", "n": 3, "bits": "!!!!"},  # not base64
    {"figure": "accuracy", "n": 3, "bits": "AAA="},  # two bytes for three samples
    {"figure": "accuracy", "n": 30, "bits": "AA=="},  # one byte for thirty
])
def test_outcomes_of_another_shape_read_as_absent(doc):
    """Read from a results directory they are data: anything else tests nothing."""
    assert Outcomes.read(doc) is None


def test_mcnemar_counts_only_the_samples_one_model_alone_got_right():
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(10, 0) == pytest.approx(2 * 0.5 ** 10)  # ten lost, none gained
    assert mcnemar_p(3, 3) == 1.0
    both = np.array([True] * 900 + [False] * 100)
    other = both.copy()
    other[:5], other[900:910] = False, True  # five lost, ten gained; the rest as both had
    d = paired.discordant(kept("accuracy", both), kept("accuracy", other), "accuracy")
    assert (d.lost, d.gained, d.n) == (5, 10, 1000) and d.change == pytest.approx(0.005)
    assert d.p == pytest.approx(mcnemar_p(5, 10))
    assert paired.discordant(kept("accuracy", both), kept("f1", other), "accuracy") is None
    assert paired.discordant(kept("accuracy", both), {}, "accuracy") is None
