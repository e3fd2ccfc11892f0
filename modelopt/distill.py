"""Knowledge distillation: the Hinton loss, and teachers trained once and cached on disk."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from modelopt.registry import Registry

DISTILLERS = Registry("distill")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T); the (1 - alpha) * CE part is the task loss,
    weighted by the training loop. T^2 keeps the soft gradients' scale independent of T."""
    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return alpha * t * t * kl


@DISTILLERS.register("kd")
def kd(*, teacher: dict, temperature: float = 4.0, alpha: float = 0.9) -> dict:
    """Hinton et al. (2015): the student also matches the teacher's softened outputs."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return {"teacher": teacher, "temperature": temperature, "alpha": alpha}


# Row selections: the teacher trains on the whole training split even when the student sees
# a subsample (the regime where Hinton et al. saw distillation help most).
ROW_SELECTIONS = ("subsample", "dedupe")


def teacher_config(teacher: dict, student: dict) -> dict:
    """The teacher's full cell config: its own model, optimizer and training; the student's
    dataset, validation split and input transforms (its inputs are the student's batches)."""
    train = {**teacher["train"], "val_fraction": student["train"]["val_fraction"],
             "folds": student["train"].get("folds", 0), "fold": student["train"].get("fold", 0)}
    pre = [p for p in (student.get("preprocess") or []) if p["name"] not in ROW_SELECTIONS]
    return {**teacher, "dataset": student["dataset"], "preprocess": pre, "train": train,
            "augment": None, "distill": None, "prune": None, "quantize": None,
            "backend": student["backend"]}


def teacher_key(config: dict, seed: int) -> str:
    blob = json.dumps({"teacher": config, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def get_teacher(config: dict, seed: int, backend, data, trainer: Callable
                ) -> tuple[nn.Module, dict]:
    """Train the teacher (`trainer(config, seed, backend)`), or load it from the cache
    (a state_dict, read with weights_only=True), keyed by its full config and the seed."""
    from modelopt import models
    from modelopt.data import cache_dir
    from modelopt.train import predict, score

    path = cache_dir() / "teachers" / f"{teacher_key(config, seed)}.pt"
    model = models.build(config["model"], data.input_shape, data.num_outputs)
    info = {"teacher_cached": path.exists()}
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
        model.to(backend.device)
    else:
        model, _ = trainer(config, seed, backend)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two students may train it at once
        torch.save(model.state_dict(), tmp)
        tmp.replace(path)  # atomic: a parallel student never reads half a file
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    info["teacher_accuracy"] = score(predict(model, data.x_test, backend), data.y_test, data.task)
    return model, info


def loss_term(spec: dict, student_cfg: dict, data, seed: int, backend, trainer: Callable):
    """(loss term for the training loop, task-loss weight, info for the result)."""
    teacher, info = get_teacher(teacher_config(spec["teacher"], student_cfg), seed, backend,
                                data, trainer)
    t, alpha = spec["temperature"], spec["alpha"]

    def term(model, x, y, student_logits):
        with torch.no_grad():  # the teacher runs in eval mode without gradients
            teacher_logits = teacher(x)
        return kd_loss(student_logits.float(), teacher_logits.float(), t, alpha)

    return term, 1.0 - alpha, info
