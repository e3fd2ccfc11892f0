"""Knowledge distillation: the Hinton loss, and teachers trained once and cached on disk."""

from __future__ import annotations

import hashlib
import json
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


def teacher_key(teacher: dict, student: dict, seed: int) -> str:
    """The teacher depends on its own config, the data it sees and the seed."""
    what = {"teacher": teacher, "dataset": student["dataset"],
            "preprocess": student.get("preprocess"), "val_fraction": student["train"]["val_fraction"],
            "seed": seed}
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def get_teacher(teacher_cfg: dict, student_cfg: dict, seed: int, backend, data,
                trainer: Callable) -> tuple[nn.Module, dict]:
    """Train the teacher, or load it from the cache (state_dict, weights_only=True)."""
    from modelopt import models
    from modelopt.data import cache_dir
    from modelopt.train import predict, score

    path = cache_dir() / "teachers" / f"{teacher_key(teacher_cfg, student_cfg, seed)}.pt"
    model = models.build(teacher_cfg["model"], data.input_shape, data.num_outputs)
    info = {"teacher_cached": path.exists()}
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
        model.to(backend.device)
    else:
        model, _ = trainer(teacher_cfg, seed, backend, data)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(path)  # atomic: a parallel student never reads half a file
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    info["teacher_accuracy"] = score(predict(model, data.x_test, backend), data.y_test, data.task)
    return model, info


def loss_term(spec: dict, student_cfg: dict, data, seed: int, backend, trainer: Callable):
    """(loss term for the training loop, task-loss weight, info for the result)."""
    teacher_cfg = {**spec["teacher"]}
    teacher_cfg.setdefault("dataset", student_cfg["dataset"])
    teacher, info = get_teacher(teacher_cfg, student_cfg, seed, backend, data, trainer)
    t, alpha = spec["temperature"], spec["alpha"]

    def term(model, x, y, student_logits):
        with torch.no_grad():  # the teacher runs in eval mode without gradients
            teacher_logits = teacher(x)
        return kd_loss(student_logits.float(), teacher_logits.float(), t, alpha)

    return term, 1.0 - alpha, info
