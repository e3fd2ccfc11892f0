"""Tasks, registered by name: what a network's outputs are scored with, trained against and
checked by once deployed. Classification and regression are two entries; a plugin adds a
task as it adds a model (`TASKS.register("name", headline=..., columns=...)`, the facts of
spec/tasks.py, on a function returning a `Task`).

Nothing outside a task's entry asks which task a cell has: the training loop, the test
figures, pruning's criteria, preprocessing, the deploy check and the report ask the task.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from modelopt.spec.metric import Metric
from modelopt.spec.outcomes import PerSample
from modelopt.spec.registries import TASKS
from modelopt.spec.tasks import BUILTIN, TaskInfo

if TYPE_CHECKING:
    from modelopt.techniques.data import Data


class Task:
    """A task's behaviour; `name` and `info` (its facts) are set when `get` builds it.
    Regression-like defaults: one output per input, float targets, outputs checked by value."""

    name: str = ""
    info: TaskInfo
    target_dtype: torch.dtype = torch.float32
    # a deployed artifact must compute what the model it was made from computes: its
    # outputs within this fraction of their range
    value_tolerance: float = 1e-2

    def num_outputs(self, num_classes: int) -> int:
        """Outputs of a network for this task (`num_classes`: the dataset's, 0 without)."""
        return 1

    def target(self, y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """A batch's targets as the loss takes them against the batch's outputs."""
        return y.view_as(out)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The plain task loss: what pruning's data criteria differentiate and the test loss."""
        raise NotImplementedError

    def score(self, out: torch.Tensor, y: torch.Tensor) -> float:
        """The validation score (higher is better): best-evaluation choice, tune, target."""
        raise NotImplementedError

    def metrics(self, out: torch.Tensor, data: "Data") -> dict:
        """The test figures of outputs on the test split, `loss` included."""
        raise NotImplementedError

    def outcomes(self, out: torch.Tensor, data: "Data") -> PerSample | None:
        """How each test sample went, and the figures that tells (spec/outcomes.py): what a
        paired test of two models on one split needs; None where no figure is made of
        independent per-sample parts."""
        return None

    def check(self, out: torch.Tensor, reference: torch.Tensor) -> tuple[dict, bool]:
        """A deployed artifact's test outputs against its model's: (figures, whether they agree)."""
        diff = float((out - reference).abs().max()) if len(out) else 0.0
        scale = float(reference.abs().max()) if len(reference) else 0.0
        return {}, diff <= self.value_tolerance * (1 + scale)

    def standardize(self, data: "Data") -> "Data":
        """The data with its targets scaled for training (figures are reported in the
        original units, through `data.target_scale`)."""
        return data

    def headline_of(self, score: float) -> float:
        """The headline figure a `score` stands for (the test score at the best validation
        evaluation becomes `<headline>_best_val`): the score itself where they are one."""
        return score


# ---------------------------------------------------------------- classification

def classification_metrics(outputs: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    pred = outputs.argmax(1).numpy()
    true = y.numpy()
    labels = list(range(num_classes))
    p, r, f, _ = precision_recall_fscore_support(true, pred, labels=labels, average="macro",
                                                 zero_division=0)
    return {"accuracy": float((pred == true).mean()), "f1_macro": float(f),
            "precision_macro": float(p), "recall_macro": float(r),
            "confusion": confusion_matrix(true, pred, labels=labels).tolist()}


class Classification(Task):
    target_dtype = torch.int64
    agreement = 0.99  # deployed and model classes agree on this share of the test inputs

    def num_outputs(self, num_classes: int) -> int:
        return num_classes

    def target(self, y, out):
        return y

    def loss(self, out, y):
        return nn.functional.cross_entropy(out, y)

    def score(self, out, y):
        return float((out.argmax(1) == y).double().mean())

    def metrics(self, out, data):
        figures = classification_metrics(out, data.y_test, data.num_classes)
        figures["loss"] = float(self.loss(out, data.y_test))
        return figures

    def outcomes(self, out, data):
        # the class chosen: right where it is the target's; the macro figures are its
        return PerSample(out.argmax(1), "accuracy",
                         ("accuracy", "f1_macro", "precision_macro", "recall_macro"))

    def check(self, out, reference):
        agree = float((out.argmax(1) == reference.argmax(1)).double().mean())
        return {"deploy_agreement": agree}, agree >= self.agreement


@TASKS.register("classification", **BUILTIN["classification"].facts())
def classification() -> Task:
    """Class scores per input against class labels: cross-entropy, accuracy, macro F1; a
    deployed model's classes must agree with its model's."""
    return Classification()


# ---------------------------------------------------------------- regression

def regression_metrics(outputs: torch.Tensor, y: torch.Tensor, scale: float = 1.0,
                       shift: float = 0.0) -> dict:
    """MSE, RMSE, MAE, R^2 in the target's original units (undoing standardization)."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    pred = outputs.reshape(-1).numpy() * scale + shift
    true = y.numpy() * scale + shift
    mse = float(mean_squared_error(true, pred))
    return {"mse": mse, "rmse": float(np.sqrt(mse)), "mae": float(mean_absolute_error(true, pred)),
            "r2": float(r2_score(true, pred))}


def r2(out: torch.Tensor, y: torch.Tensor) -> float:
    pred = out.reshape(-1)
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def standardized(data: "Data") -> "Data":
    """Targets to zero mean, unit std with training statistics; `target_scale` undoes it."""
    mean, std = float(data.y_train.mean()), float(data.y_train.std().clamp_min(1e-12))
    f = lambda y: (y - mean) / std  # noqa: E731
    return replace(data, y_train=f(data.y_train), y_val=f(data.y_val), y_test=f(data.y_test),
                   target_scale=(std, mean))


class Regression(Task):
    def loss(self, out, y):
        return nn.functional.mse_loss(out.reshape(-1), y)

    def score(self, out, y):
        return r2(out, y)

    def metrics(self, out, data):
        scale, shift = data.target_scale
        figures = regression_metrics(out, data.y_test, scale, shift)
        figures["loss"] = float(self.loss(out, data.y_test))
        return figures

    def outcomes(self, out, data):
        # squared errors in the target's units: their mean is the MSE; R² = 1 - SSE / SST
        # (SST the split's own) and RMSE move with it, as the test loss (standardized) does
        scale, _ = data.target_scale
        return PerSample(((out.reshape(-1) - data.y_test) * scale) ** 2, "mse",
                         ("r2", "mse", "rmse", "loss"))

    def standardize(self, data):
        return standardized(data)


@TASKS.register("regression", **BUILTIN["regression"].facts())
def regression() -> Task:
    """One value per input: mean squared error, R², RMSE, MAE in the target's units
    (trained on standardized targets); a deployed model's values must match its model's."""
    return Regression()


# ---------------------------------------------------------------- language modelling

LM_METRICS = (
    # its own figures; a text dataset's facts (vocabulary, sequence length) are the metric
    # table's, as any task's text has them
    Metric("perplexity", "perplexity", "g4", False, "relative", 0.02),
    Metric("perplexity_best_val", "ppl @best val", "g4", False),
    Metric("bits_per_char", "bits/char", "f3", False, "relative", 0.02, "bits"),
    Metric("bits_per_token", "bits/token", "f3", False, unit="bits"),
    Metric("next_token_accuracy", "next-token %", "pct", True, "points", 0.01, "fraction"),
    Metric("teacher_perplexity", "teacher perplexity", "g4", False),
    Metric("deploy_token_agreement", "deploy agreement %", "pct", True),
    # the data's count-based baselines: context beside the model's figures, no direction
    # (not a series to chart, nor a best to bold: every row of a corpus shares them)
    Metric("baseline_unigram_perplexity", "unigram ppl", "g4", None),
    Metric("baseline_bigram_perplexity", "bigram ppl", "g4", None),
    Metric("baseline_trigram_perplexity", "trigram ppl", "g4", None),
    Metric("baseline_kneser_ney_perplexity", "Kneser-Ney ppl", "g4", None),
    Metric("baseline_kneser_ney_bits_per_char", "Kneser-Ney bits/char", "f3", None),
    Metric("baseline_kneser_ney_discount", "Kneser-Ney discount", "g3", None),
)


class LanguageModelling(Task):
    """Scores over the vocabulary at every position of a window, (N, T, V), against the
    next tokens (N, T): cross-entropy in nats per token; perplexity = e^nats; bits per
    token = nats / ln 2, per character through the test text's characters per token."""

    target_dtype = torch.int64
    agreement = 0.99  # a deployed model's next-token choices agree on this share

    def num_outputs(self, num_classes: int) -> int:
        return num_classes  # the vocabulary

    def target(self, y, out):
        return y

    def loss(self, out, y):
        return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]).float(), y.reshape(-1))

    def score(self, out, y):
        return -float(self.loss(out, y))  # log-likelihood per token: higher is better

    def headline_of(self, score):
        return math.exp(-score)

    def metrics(self, out, data):
        nats = float(self.loss(out, data.y_test))
        per_token = nats / math.log(2)
        return {"loss": nats, "perplexity": math.exp(nats), "bits_per_token": per_token,
                "bits_per_char": per_token / data.info.get("chars_per_token", 1.0),
                "next_token_accuracy": float((out.argmax(-1) == data.y_test).double().mean())}

    def outcomes(self, out, data):
        # a window's mean cross-entropy: every window has as many tokens, so the split's
        # log-perplexity is their mean
        nats = nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]).float(),
                                           data.y_test.reshape(-1), reduction="none")
        return PerSample(nats.view(len(data.y_test), -1).mean(1), "loss",
                         ("perplexity", "loss", "bits_per_token", "bits_per_char"))

    def check(self, out, reference):
        agree = float((out.argmax(-1) == reference.argmax(-1)).double().mean())
        return {"deploy_token_agreement": agree}, agree >= self.agreement


@TASKS.register("language_modelling", headline="perplexity",
                columns=("perplexity", "perplexity_best_val", "bits_per_char",
                         "next_token_accuracy", "baseline_kneser_ney_perplexity"),
                class_outputs=True, default_loss="token_cross_entropy", metrics=LM_METRICS,
                score_label="log-likelihood per token (nats)")
def language_modelling() -> Task:
    """The next token at every position of a text window: perplexity, bits per character,
    next-token accuracy, beside count-based baselines (n-gram, Kneser-Ney) on the same split;
    a deployed model's next-token choices must agree with its model's."""
    return LanguageModelling()


# ---------------------------------------------------------------- lookup

@functools.cache
def get(name: str) -> Task:
    """The task registered as `name`, built once per process."""
    task = TASKS.build(name)
    task.name, task.info = name, TASKS.info(name)
    return task


def of(data: "Data") -> Task:
    return get(data.task)


def declarations(names) -> tuple[dict[str, dict], list]:
    """The facts of these tasks, as a run writes them into suite.json, and the figures they
    declare beyond the metric table (spec.metric.Metric)."""
    names = sorted(set(names))
    return ({n: TASKS.info(n).as_dict() for n in names},
            [m for n in names for m in TASKS.info(n).metrics])
