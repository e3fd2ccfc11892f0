"""Knowledge distillation: the Hinton loss, the teacher's own cell, and teachers cached on disk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from modelopt.spec.registries import DISTILLERS, PREPROCESS
from modelopt.spec.registry import Positive, Probability, TeacherConfig


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T); the (1 - alpha) * CE part is the task loss,
    weighted by the training loop. T^2 keeps the soft gradients' scale independent of T."""
    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return alpha * t * t * kl


@dataclass(frozen=True)
class Distiller:
    """What distillation adds to a student's training: a teacher (a cell config of its own)
    and a loss against the teacher's outputs, with the task loss weighted by `task_weight`."""

    teacher: dict
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (student, teacher logits)
    task_weight: float

    def term(self, teacher: nn.Module):
        """The training loop's loss term, with the teacher in eval mode and no gradients."""
        def term(model, x, y, student_logits):
            with torch.no_grad():
                teacher_logits = teacher(x)
            return self.loss(student_logits.float(), teacher_logits.float())
        return term


@DISTILLERS.register("kd")
def kd(*, teacher: TeacherConfig, temperature: Positive = 4.0,
       alpha: Probability = 0.9) -> Distiller:
    """Hinton et al. (2015): the student also matches the teacher's softened outputs."""
    return Distiller(teacher, lambda s, t: kd_loss(s, t, temperature, alpha), 1.0 - alpha)


def teacher_config(teacher: dict, student: dict) -> dict:
    """The teacher's full cell config: its own model, optimizer and training; the student's
    dataset, validation split and input transforms (its inputs are the student's batches)."""
    train = {**teacher["train"], "val_fraction": student["train"]["val_fraction"],
             "folds": student["train"].get("folds", 0), "fold": student["train"].get("fold", 0)}
    # the teacher trains on the whole training split even when the student sees a subsample
    # (the regime where Hinton et al. saw distillation help most)
    pre = [p for p in (student.get("preprocess") or [])
           if not PREPROCESS.info(p["name"]).selects_rows]
    return {**teacher, "dataset": student["dataset"], "preprocess": pre, "train": train,
            "augment": None, "distill": None, "prune": None, "quantize": None,
            "backend": student["backend"]}


def frozen(model: nn.Module) -> nn.Module:
    """The teacher in eval mode, without gradients."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
