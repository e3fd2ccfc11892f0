"""How a model did on each test sample, as a record keeps it, and the paired tests that read
it: McNemar's for right-or-wrong answers (only the samples one model alone got right count),
a paired t-test for per-sample losses, a randomization test for a classifier's macro
figures; seeds pooled where their figures tie but their answers differ."""

import numpy as np
import pytest
import torch

from modelopt.results import paired, resample
from modelopt.results.headline import p_words
from modelopt.results.stats import mcnemar_p
from modelopt.spec.outcomes import KEY, MAX_SAMPLES, Choices, Outcomes, PerSample, kept, split_print
from modelopt.techniques import tasks
from modelopt.techniques.data import Data

Y = np.arange(12345) % 3  # test targets


def right(values, y):
    """A classifier's rights, read back as a record keeps them."""
    return Outcomes.read(kept(PerSample(values, "accuracy", ("accuracy",)), y)[KEY])


def losses(values, y):
    return Outcomes.read(kept(PerSample(values, "mse", ("r2", "mse")), y)[KEY])


def pair(a: Outcomes, b: Outcomes, figure: str):
    """Two single-seed records' outcomes, tested (their figures unknown: not checked)."""
    return paired.on_samples([(a, {})], [(b, {})], figure)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 360, 12345])
@pytest.mark.parametrize("kind", [bool, np.float32])
def test_outcomes_read_back_as_written(n, kind):
    values = np.random.default_rng(n).random(n)
    values = (values > 0.3) if kind is bool else values.astype(np.float32)
    back = (right if kind is bool else losses)(values, Y[:n])
    assert back.n == n and (back.values == values).all() and back.decides[0] in ("accuracy", "r2")
    assert back.values.dtype == values.dtype and back.split == split_print(Y[:n])


GOOD = {"mean_of": "accuracy", "decides": ["accuracy"], "n": 3, "split": "", "bits": "AA=="}


@pytest.mark.parametrize("change", [
    {"bits": None}, {"decides": "accuracy"}, {"decides": []}, {"decides": [1]},
    {"mean_of": 1}, {"split": None},
    {"n": True},  # a bool is no count
    {"n": "3"}, {"n": 0, "bits": ""}, {"n": MAX_SAMPLES["bits"] + 1},
    {"bits": "!!!!"},  # not base64
    {"bits": "AAA="},  # two bytes for three samples
    {"n": 30},  # one byte for thirty
    {"bits": None, "losses": "AACAfw==", "n": 1},  # an infinite loss
    {"bits": None, "losses": "AACAPw==", "n": 2},  # one loss for two
    {"classes": 3, "predicted": "AAA=", "wrong_targets": "AAA="},  # two bytes a class: 6 for 3
])
def test_outcomes_of_another_shape_read_as_absent(change):
    """Read from a results directory they are data: anything else tests nothing."""
    assert Outcomes.read(GOOD) is not None
    doc = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    assert Outcomes.read(doc) is None


def test_mcnemar_counts_only_the_samples_one_model_alone_got_right():
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(10, 0) == pytest.approx(2 * 0.5 ** 10)  # ten lost, none gained
    assert mcnemar_p(3, 3) == 1.0
    both = np.array([True] * 900 + [False] * 100)
    other = both.copy()
    other[:5], other[900:910] = False, True  # five lost, ten gained; the rest as both had
    y = Y[:1000]
    d = pair(right(both, y), right(other, y), "accuracy")
    assert (d.test, d.worse, d.better, d.n) == ("McNemar", 5, 10, 1000)
    assert d.p == pytest.approx(mcnemar_p(5, 10))
    assert pair(right(both, y), right(other, y), "f1_macro") is None  # no choices kept
    assert paired.on_samples([(right(both, y), {})], [(None, {})], "accuracy") is None
    # as many samples, other samples (their targets differ): nothing to pair
    assert pair(right(both, y), right(other, y[::-1]), "accuracy") is None


def test_losses_are_paired_sample_by_sample():
    """Per-sample losses: a paired t-test, which a shift far below their spread passes
    only because the samples are paired."""
    rng = np.random.default_rng(0)
    base = rng.exponential(1.0, 400).astype(np.float32)
    y = Y[:400]
    worse = pair(losses(base, y), losses(base + 0.01, y), "r2")
    assert (worse.test, worse.worse, worse.better) == ("paired t", 400, 0) and worse.p < 1e-6
    noise = pair(losses(base, y), losses(base + rng.normal(0, 0.01, 400), y), "mse")
    assert noise.p > 0.01 and noise.worse + noise.better == 400
    same = pair(losses(base, y), losses(base, y), "r2")
    assert same.p == 1.0 and same.alike
    assert pair(losses(base, y), losses(base, y), "rmse") is None  # a figure it does not decide


def _data(task, y, num_classes=0):
    x = torch.zeros(len(y), 1)
    return Data(x, y, x[:0], y[:0], x, y, num_classes, task=task)


@pytest.mark.parametrize("task", ["classification", "regression", "language_modelling"])
def test_each_built_in_task_keeps_outcomes_that_fit_its_figures(task):
    """What a test judges is what the figures are made of: accuracy the mean of the right
    choices, the MSE (in the target's units) the mean of the squared errors, the loss in
    nats the mean of the windows' cross-entropies; each record's outcomes fit its figures."""
    torch.manual_seed(0)
    if task == "language_modelling":
        y, out = torch.randint(0, 5, (6, 4)), torch.randn(6, 4, 5)
    elif task == "classification":
        y, out = torch.randint(0, 3, (50,)), torch.randn(50, 3)
    else:
        y, out = torch.randn(50), torch.randn(50, 1)
    data = _data(task, y, 5 if task == "language_modelling" else 3)
    data.info["chars_per_token"] = 1.0
    if task == "regression":
        data = tasks.get(task).standardize(data)
    t = tasks.get(task)
    figures = {**t.metrics(out, data), "test_samples": len(y)}
    each = Outcomes.read(kept(t.outcomes(out, data), data.y_test, data.num_classes)[KEY])
    assert each.decides[0] == t.info.headline and each.n == len(y)
    assert each.fits(figures) and not each.fits({**figures, "test_samples": len(y) + 1})
    assert not each.fits({**figures, each.mean_of: figures[each.mean_of] * 1.01 + 0.01})
    if task == "language_modelling":  # perplexity is e to their mean
        assert np.exp(each.values.mean(dtype=np.float64)) == pytest.approx(
            figures["perplexity"], rel=1e-5)


def test_seeds_whose_figures_tie_are_averaged_per_sample_unless_they_are_copies():
    """Seeds that went alike on every sample are one evaluation (a loaded model's copies):
    one seed stands for them. Seeds whose accuracies tie but whose answers differ are
    replicates, and a t-test over them would read their tie as p = 0; the samples stay the
    replicates, each sample's share of right answers averaged over the seeds (laid end to
    end, three seeds read five lost samples as fifteen). Outcomes that are not their
    record's (another count, another mean) test nothing."""
    y = Y[:100]
    ok = np.arange(100) < 90
    worse = ok & (np.arange(100) > 5)  # six lost
    base = [(right(ok, y), {"accuracy": 0.9, "test_samples": 100})] * 3
    cur = [(right(worse, y), {"accuracy": 0.84, "test_samples": 100})] * 3
    d = paired.on_samples(base, cur, "accuracy")
    assert (d.worse, d.seeds, d.n) == (6, 1, 100)
    other = right(np.roll(worse, 1), y)  # as many right (84 %), other samples
    tied = paired.on_samples(base, [cur[0], (other, cur[0][1]), cur[0]], "accuracy")
    # samples 0-5 now never right (-1 each), 6 right in 2 of 3 seeds (-1/3), 90 in 1 of 3
    # (+1/3): of the 2^8 sign flips, |sum| >= 6 only with the six -1 alike (2 of 64) and
    # the two thirds not against them (3 of 4)
    assert (tied.test, tied.seeds, tied.n, tied.worse, tied.better) == (
        "randomization", 3, 100, 7, 1)
    assert tied.p == pytest.approx(2 / 64 * 3 / 4)
    assert paired.on_samples(base, [(cur[0][0], {"accuracy": 0.9})], "accuracy") is None
    assert paired.on_samples(base, [(cur[0][0], {"test_samples": 360})], "accuracy") is None
    assert "each averaged over 3 seeds" in tied.words()
    # two seeds that lose the same five samples and swap one more pair are five samples
    # lost (and two halves), not eleven against one laid end to end (McNemar p 0.006)
    a = ok & (np.arange(100) >= 5)
    b = a.copy()
    b[10], b[95] = False, True
    two = paired.on_samples(base[:2], [(right(a, y), {}), (right(b, y), {})], "accuracy")
    assert two.p == pytest.approx(2 / 32 * 3 / 4) and two.p > 5 * mcnemar_p(11, 1)


def test_a_classifiers_choices_are_kept_and_its_macro_figures_randomized():
    """The class chosen per sample, beside the targets: the macro figures computed from
    them are scikit-learn's (classes never seen count, as zero), and two classifiers'
    difference is tested by swapping their answers at random (approximate randomization),
    which on a right-or-wrong split reads as McNemar's exact test does."""
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 6, 500)  # of 7 classes: one never seen
    chosen = np.where(rng.random(500) < 0.8, targets, rng.integers(0, 7, 500))
    decides = ("accuracy", *resample.MACRO)
    keep = lambda c: Outcomes.read(kept(PerSample(c, "accuracy", decides), targets, 7)[KEY])  # noqa: E731
    back = keep(chosen)
    assert (back.choices.predicted == chosen).all() and back.values.mean() == (
        chosen == targets).mean()
    p, r, f, _ = precision_recall_fscore_support(targets, chosen, labels=list(range(7)),
                                                 average="macro", zero_division=0)
    assert resample.macro(back.choices) == pytest.approx(
        {"precision_macro": p, "recall_macro": r, "f1_macro": f}, abs=1e-12)
    worse = chosen.copy()
    worse[np.flatnonzero(chosen == targets)[:40]] = 6  # 40 right answers, now the unseen class
    figures = {"f1_macro": f, "test_samples": 500}
    d = paired.on_samples([(back, figures)], [(keep(worse), {})], "f1_macro")
    assert (d.test, d.worse, d.better) == ("randomization", 40, 0) and d.p < 0.01
    assert paired.on_samples([(back, figures)], [(back, {})], "f1_macro").p == 1.0
    # a recorded F1 its choices do not make: not its record's outcomes
    assert paired.on_samples([(back, {"f1_macro": f + 0.01})], [(back, {})], "f1_macro") is None
    # choices that are not the right answers they came with read as absent
    doc = kept(PerSample(chosen, "accuracy", decides), targets, 7)[KEY]
    hostile = dict(doc, predicted=kept(PerSample(worse, "accuracy", decides), targets, 7)[KEY][
        "predicted"])
    assert Outcomes.read(hostile) is None and Outcomes.read(dict(doc, classes=3)) is None
    # four samples lost, none gained, of 240: randomization reads it as McNemar does
    t = np.arange(240) % 3
    lost = t.copy()
    lost[:4] = (t[:4] + 1) % 3
    p4 = resample.randomization_p([Choices(t, t, 3)], [Choices(lost, t, 3)], "f1_macro")
    assert abs(p4 - mcnemar_p(4, 0)) < 0.03


def test_seeds_whose_macro_figures_tie_are_tested_on_their_samples():
    """Two seeds a side whose answers differ but whose confusion matrices match (answers
    moved between samples of one class): each side's macro figures tie, so a t-test over the
    seeds read their alike differences as p = 0. Each seed keeps its own figure, the
    difference is the seeds' mean, and a swap exchanges a sample's answers in both seeds:
    five lost and two gained per seed is within noise, forty lost is not; copies count once."""
    targets = np.arange(300) % 3
    first = targets.copy()
    first[:60] = (targets[:60] + 1) % 3  # 60 wrong, 20 a class
    second = first.copy()
    second[:150] = np.roll(first[:150].reshape(-1, 3), 7, axis=0).ravel()  # within each class
    decides = ("accuracy", *resample.MACRO)
    keep = lambda c: Outcomes.read(kept(PerSample(c, "accuracy", decides), targets, 3)[KEY])  # noqa: E731

    def changed(c, lost, gained):
        c = c.copy()
        right, wrong = np.flatnonzero(c == targets), np.flatnonzero(c != targets)
        c[right[-lost:]] = (targets[right[-lost:]] + 2) % 3
        c[wrong[:gained]] = targets[wrong[:gained]]
        return c

    base = [(keep(c), {}) for c in (first, second)]
    assert resample.macro(base[0][0].choices) == resample.macro(base[1][0].choices)
    assert not base[0][0].same(base[1][0])
    for lost, gained, within in ((5, 2, True), (40, 0, False)):
        cur = [(keep(changed(c, lost, gained)), {}) for c in (first, second)]
        assert resample.macro(cur[0][0].choices) == resample.macro(cur[1][0].choices)
        d = paired.on_samples(base, cur, "f1_macro")
        assert (d.test, d.seeds, d.n) == ("randomization", 2, 300)
        assert (d.p > 0.2) if within else (d.p < 0.01), d
        assert "averaged over 2 seeds" in d.words() and "in some seed" in d.words()
    copies = paired.on_samples(base[:1] * 2, [cur[0]] * 2, "f1_macro")
    assert copies.seeds == 1 and copies.p == pair(base[0][0], cur[0][0], "f1_macro").p


def test_a_p_value_is_never_rounded_across_the_threshold():
    assert (p_words(0.0496), p_words(0.0504), p_words(0.013), p_words(1.0), p_words(1e-30)) == (
        "0.0496", "0.05", "0.013", "1", "< 0.001")


def test_a_class_count_past_any_dataset_is_refused_before_counting():
    """A macro figure counts per class: 2^30 classes from a results file would allocate
    gigabytes; a class count past a uint16 reads as absent (the same choices read with
    60,000)."""
    import base64

    ones = base64.b64encode(np.ones(3, "<u2").tobytes()).decode()
    doc = {**GOOD, "split": split_print(np.ones(3, dtype=np.int64)),
           "predicted": base64.b64encode(np.zeros(3, "<u2").tobytes()).decode(),
           "wrong_targets": ones}
    assert Outcomes.read({**doc, "classes": 60_000}).choices.classes == 60_000
    assert Outcomes.read({**doc, "classes": 70_000}) is None
    assert Outcomes.read({**doc, "classes": 1 << 30}) is None


def test_wrong_answers_that_change_class_are_a_change():
    """Right and wrong alike, but 30 wrong answers now another wrong class: the macro
    precision moved, and the pair is not 'alike' (the gate read p 1 from the rights alone)."""
    targets = np.arange(300) % 3
    chosen = targets.copy()
    chosen[:60] = (targets[:60] + 1) % 3  # 60 wrong
    moved = chosen.copy()
    moved[:30] = (targets[:30] + 2) % 3  # 30 of them wrong otherwise
    decides = ("accuracy", *resample.MACRO)
    a, b = (Outcomes.read(kept(PerSample(c, "accuracy", decides), targets, 3)[KEY])
            for c in (chosen, moved))
    d = paired.on_samples([(a, {})], [(b, {})], "precision_macro")
    assert (d.worse, d.better, d.moved) == (0, 0, 30) and not d.alike
    assert pair(a, a, "precision_macro").alike
