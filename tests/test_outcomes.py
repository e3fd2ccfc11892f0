"""How a model did on each test sample, as a record keeps it, and the paired tests that read
it: McNemar's for right-or-wrong answers (only the samples one model alone got right count),
a paired t-test for per-sample losses."""

import numpy as np
import pytest
import torch

from modelopt.results import paired
from modelopt.results.stats import mcnemar_p
from modelopt.spec.outcomes import KEY, MAX_SAMPLES, Outcomes, kept, split_print
from modelopt.techniques import tasks
from modelopt.techniques.data import Data

Y = np.arange(12345) % 3  # test targets


def pair(base: dict, other: dict, figure: str):
    """Two single-seed records' outcomes (kept(...) dicts), tested."""
    return paired.on_samples([(base.get(KEY), None, None)], [(other.get(KEY), None, None)],
                             figure)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 360, 12345])
@pytest.mark.parametrize("kind", [bool, np.float32])
def test_outcomes_read_back_as_written(n, kind):
    values = np.random.default_rng(n).random(n)
    values = (values > 0.3) if kind is bool else values.astype(np.float32)
    back = Outcomes.read(kept("accuracy", values, Y[:n])[KEY])
    assert back.figure == "accuracy" and back.n == n and (back.values == values).all()
    assert back.values.dtype == values.dtype and back.split == split_print(Y[:n])


@pytest.mark.parametrize("doc", [
    None, "AAAA", [], {"figure": "accuracy", "n": 3, "split": ""},
    {"figure": 1, "n": 3, "bits": "AA==", "split": ""},
    {"figure": "accuracy", "n": 3, "bits": "AA=="},  # no split
    {"figure": "accuracy", "n": True, "bits": "AA==", "split": ""},  # a bool is no count
    {"figure": "accuracy", "n": "3", "bits": "AA==", "split": ""},
    {"figure": "accuracy", "n": 0, "bits": "", "split": ""},
    {"figure": "accuracy", "n": MAX_SAMPLES["bits"] + 1, "bits": "AA==", "split": ""},
    {"figure": "accuracy", "n": 3, "bits": "!!!!", "split": ""},  # not base64
    {"figure": "accuracy", "n": 3, "bits": "AAA=", "split": ""},  # two bytes for three samples
    {"figure": "accuracy", "n": 30, "bits": "AA==", "split": ""},  # one byte for thirty
    {"figure": "r2", "n": 1, "losses": "AACAfw==", "split": ""},  # an infinite loss
    {"figure": "r2", "n": 2, "losses": "AACAPw==", "split": ""},  # one loss for two
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
    y = Y[:1000]
    d = pair(kept("accuracy", both, y), kept("accuracy", other, y), "accuracy")
    assert (d.test, d.worse, d.better, d.n) == ("McNemar", 5, 10, 1000)
    assert d.p == pytest.approx(mcnemar_p(5, 10))
    assert pair(kept("accuracy", both, y), kept("f1", other, y), "accuracy") is None
    assert pair(kept("accuracy", both, y), {}, "accuracy") is None
    # as many samples, other samples (their targets differ): nothing to pair
    assert pair(kept("accuracy", both, y), kept("accuracy", other, y[::-1]),
                             "accuracy") is None


def test_losses_are_paired_sample_by_sample():
    """Per-sample losses: a paired t-test, which a shift far below their spread passes
    only because the samples are paired."""
    rng = np.random.default_rng(0)
    base = rng.exponential(1.0, 400).astype(np.float32)
    y = Y[:400]
    worse = pair(kept("r2", base, y), kept("r2", base + 0.01, y), "r2")
    assert (worse.test, worse.worse, worse.better) == ("paired t", 400, 0) and worse.p < 1e-6
    noise = pair(kept("r2", base, y),
                              kept("r2", base + rng.normal(0, 0.01, 400), y), "r2")
    assert noise.p > 0.01 and noise.worse + noise.better == 400
    same = pair(kept("r2", base, y), kept("r2", base, y), "r2")
    assert same.p == 1.0 and same.worse == same.better == 0


def _data(task, y, num_classes=0):
    x = torch.zeros(len(y), 1)
    return Data(x, y, x[:0], y[:0], x, y, num_classes, task=task)


@pytest.mark.parametrize("task", ["classification", "regression", "language_modelling"])
def test_each_built_in_task_keeps_outcomes_that_make_its_headline(task):
    """What the test judges is what the headline figure is made of: accuracy the mean of
    the right choices, R² falling as the squared errors' mean grows, perplexity e^(mean window
    cross-entropy)."""
    torch.manual_seed(0)
    if task == "language_modelling":
        y, out = torch.randint(0, 5, (6, 4)), torch.randn(6, 4, 5)
    elif task == "classification":
        y, out = torch.randint(0, 3, (50,)), torch.randn(50, 3)
    else:
        y, out = torch.randn(50), torch.randn(50, 1)
    data = _data(task, y, 5 if task == "language_modelling" else 3)
    data.info["chars_per_token"] = 1.0
    t = tasks.get(task)
    figure, each = t.outcomes(out, data)
    figures = t.metrics(out, data)
    assert figure == t.info.headline and len(each) == len(y)
    if task == "classification":  # the class chosen per sample
        assert float((each == y).double().mean()) == pytest.approx(figures["accuracy"])
    elif task == "regression":
        assert float(each.double().mean()) == pytest.approx(figures["mse"])
    else:
        assert float(each.double().mean().exp()) == pytest.approx(figures["perplexity"],
                                                                  rel=1e-5)


def test_seeds_are_paired_only_where_they_are_copies_and_fit_their_records():
    """Several seeds stand for one evaluation only where they went alike on every sample (a
    loaded model's copies), not where their accuracies agree by chance; outcomes that are
    not their record's (another count, another mean) test nothing."""
    y = Y[:100]
    right = np.arange(100) < 90
    moved = np.roll(right, 1)  # as many right (90 %), other samples
    worse = right & (np.arange(100) > 5)  # six lost
    base = [(kept("accuracy", right, y)[KEY], 0.9, 100)] * 3
    cur = [(kept("accuracy", worse, y)[KEY], 0.84, 100)] * 3
    assert paired.on_samples(base, cur, "accuracy").worse == 6
    chance = [cur[0], (kept("accuracy", np.roll(worse, 1), y)[KEY], 0.84, 100), cur[0]]
    assert paired.on_samples(base, chance, "accuracy") is None
    assert paired.on_samples(base, [(cur[0][0], 0.9, 100)], "accuracy") is None  # mean 0.84
    assert paired.on_samples(base, [(cur[0][0], 0.84, 360)], "accuracy") is None  # 100 kept
    d = paired.on_samples([(kept("accuracy", moved, y)[KEY], 0.9, 100)], cur, "accuracy")
    assert (d.worse, d.better) == (6, 0)  # 1-5 and 90 right before; 0 wrong in both


def test_a_classifiers_choices_are_kept_and_its_macro_figures_resampled():
    """The class chosen per sample, beside the targets: the macro figures computed from
    them are scikit-learn's (classes never seen count, as zero), and two classifiers'
    difference is tested by swapping their answers at random (approximate randomization)."""
    from sklearn.metrics import precision_recall_fscore_support

    from modelopt.results import resample
    from modelopt.spec.outcomes import Choices

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 6, 500)  # of 7 classes: one never seen
    chosen = np.where(rng.random(500) < 0.8, targets, rng.integers(0, 7, 500))
    back = Outcomes.read(kept("accuracy", chosen, targets, 7)[KEY])
    assert (back.choices.predicted == chosen).all() and back.values.mean() == (
        chosen == targets).mean()
    p, r, f, _ = precision_recall_fscore_support(targets, chosen, labels=list(range(7)),
                                                 average="macro", zero_division=0)
    figures = resample.macro(back.choices)
    assert figures == pytest.approx({"precision_macro": p, "recall_macro": r, "f1_macro": f},
                                    abs=1e-12)
    worse = chosen.copy()
    worse[np.flatnonzero(chosen == targets)[:40]] = 6  # 40 right answers, now the unseen class
    a, b = kept("accuracy", chosen, targets, 7), kept("accuracy", worse, targets, 7)
    seen_b = (b[KEY], None, None)
    d = paired.on_samples([(a[KEY], f, 500)], [seen_b], "f1_macro")
    assert (d.test, d.worse, d.better) == ("randomization", 40, 0) and d.p < 0.01
    assert paired.on_samples([(a[KEY], f, 500)], [(a[KEY], None, None)], "f1_macro").p == 1.0
    # a recorded F1 its choices do not make: not its record's outcomes
    assert paired.on_samples([(a[KEY], f + 0.01, 500)], [seen_b], "f1_macro") is None
    # choices that are not the right answers they came with read as absent
    hostile = dict(a[KEY], predicted=kept("accuracy", worse, targets, 7)[KEY]["predicted"])
    assert Outcomes.read(hostile) is None
    assert Outcomes.read(dict(a[KEY], classes=3)) is None  # a class past the count
    assert isinstance(back.choices, Choices)


def test_a_p_value_is_never_rounded_across_the_threshold():
    from modelopt.results.headline import p_words

    assert (p_words(0.0496), p_words(0.0504), p_words(0.013), p_words(1.0)) == (
        "0.0496", "0.05", "0.013", "1")
