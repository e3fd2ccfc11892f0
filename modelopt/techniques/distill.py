"""Knowledge distillation: the Hinton loss and the distiller (the teacher's own cell is
spec/cell.py `Cell.teacher`; trained teachers are kept by run/dense.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from modelopt.spec.registries import DISTILLERS
from modelopt.spec.registry import Positive, Probability, TeacherConfig


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T); the (1 - alpha) * CE part is the task loss,
    weighted by the training loop. T^2 keeps the soft gradients' scale independent of T."""
    t = temperature
    # one distribution per row; a language model's (N, T, V) scores are N x T rows
    student_logits = student_logits.reshape(-1, student_logits.shape[-1])
    teacher_logits = teacher_logits.reshape(-1, teacher_logits.shape[-1])
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


def frozen(model: nn.Module) -> nn.Module:
    """The teacher in eval mode, without gradients."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
