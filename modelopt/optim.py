"""Optimizers, learning-rate schedules and regularization terms, registered by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from modelopt.registry import Registry

# flags: full_batch (one step sees the whole training split), takes (which hyper-parameters
# exist, so `modelopt list` can say "adam takes no momentum")
OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("schedule")
REGULARIZERS = Registry("regularization")


@OPTIMIZERS.register("gd", full_batch=True)
def gd(params, /, lr: float = 0.1, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Full-batch gradient descent: every step uses the whole training split."""
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(params, /, lr: float = 0.01, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Plain minibatch stochastic gradient descent."""
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("momentum")
def momentum(params, /, lr: float = 0.01, momentum: float = 0.9,
             weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """SGD with heavy-ball momentum."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


@OPTIMIZERS.register("nesterov")
def nesterov(params, /, lr: float = 0.01, momentum: float = 0.9,
             weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True,
                           weight_decay=weight_decay)


@OPTIMIZERS.register("adam")
def adam(params, /, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
         eps: float = 1e-8, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam (weight_decay here is the coupled L2 form; see adamw)."""
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(params, /, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
          eps: float = 1e-8, weight_decay: float = 0.01) -> torch.optim.Optimizer:
    """Adam with decoupled weight decay."""
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


@OPTIMIZERS.register("rmsprop")
def rmsprop(params, /, lr: float = 1e-3, alpha: float = 0.99, eps: float = 1e-8,
            momentum: float = 0.0, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """RMSprop."""
    return torch.optim.RMSprop(params, lr=lr, alpha=alpha, eps=eps, momentum=momentum,
                               weight_decay=weight_decay)


@OPTIMIZERS.register("adagrad")
def adagrad(params, /, lr: float = 0.01, eps: float = 1e-10,
            weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adagrad."""
    return torch.optim.Adagrad(params, lr=lr, eps=eps, weight_decay=weight_decay)


# ---------------------------------------------------------------- schedules
# A schedule is stepped once per training step; `on_eval` ones (plateau) once per
# evaluation, with the validation accuracy.

@SCHEDULES.register("constant")
def constant(optimizer, total_steps: int, /):
    """The optimizer's learning rate throughout."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


@SCHEDULES.register("step")
def step(optimizer, total_steps: int, /, step_size: int = 1000, gamma: float = 0.1):
    """Multiply the rate by gamma every step_size steps."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


@SCHEDULES.register("exponential")
def exponential(optimizer, total_steps: int, /, gamma: float = 0.999):
    """Multiply the rate by gamma every step."""
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)


@SCHEDULES.register("cosine")
def cosine(optimizer, total_steps: int, /, eta_min: float = 0.0):
    """Cosine annealing from the initial rate to eta_min over the whole run."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps,
                                                      eta_min=eta_min)


@SCHEDULES.register("warmup_cosine")
def warmup_cosine(optimizer, total_steps: int, /, warmup_steps: int = 100,
                  eta_min: float = 0.0):
    """Linear warm-up from ~0 for warmup_steps, then cosine annealing to eta_min."""
    warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / max(1, warmup_steps),
                                             total_iters=warmup_steps)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=eta_min)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, cos],
                                                 milestones=[warmup_steps])


@SCHEDULES.register("plateau", on_eval=True)
def plateau(optimizer, total_steps: int, /, factor: float = 0.5, patience: int = 2,
            threshold: float = 1e-3):
    """Reduce the rate by factor when validation accuracy stops improving (per evaluation)."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=factor,
                                                      patience=patience, threshold=threshold)


# ---------------------------------------------------------------- regularization

@dataclass(frozen=True)
class Term:
    """What a regularizer adds to training: a loss penalty and/or a hook before optimizer.step."""

    penalty: Callable[[nn.Module], torch.Tensor] | None = None
    before_step: Callable[[nn.Module], None] | None = None


def weights(model: nn.Module) -> list[torch.Tensor]:
    """The weight matrices and kernels (biases and norm scales are not penalised)."""
    return [p for n, p in model.named_parameters() if p.dim() > 1]


@REGULARIZERS.register("l2")
def l2(*, weight: float = 1e-4) -> Term:
    """Explicit penalty weight * sum(w^2) added to the loss (unlike decoupled weight decay)."""
    return Term(penalty=lambda m: weight * sum(w.pow(2).sum() for w in weights(m)))


@REGULARIZERS.register("l1")
def l1(*, weight: float = 1e-4) -> Term:
    """Penalty weight * sum(|w|): drives weights to zero (see params_nonzero)."""
    return Term(penalty=lambda m: weight * sum(w.abs().sum() for w in weights(m)))


@REGULARIZERS.register("grad_clip")
def grad_clip(*, max_norm: float = 1.0) -> Term:
    """Clip the global gradient norm to max_norm before each step."""
    return Term(before_step=lambda m: nn.utils.clip_grad_norm_(m.parameters(), max_norm))


def build_optimizer(spec: dict, params) -> torch.optim.Optimizer:
    return OPTIMIZERS.build(spec["name"], params, **{k: v for k, v in spec.items() if k != "name"})


def build_schedule(spec: dict | None, optimizer, total_steps: int):
    if spec is None:
        return None
    return SCHEDULES.build(spec["name"], optimizer, total_steps,
                           **{k: v for k, v in spec.items() if k != "name"})


def build_terms(specs: list[dict]) -> list[Term]:
    return [REGULARIZERS.build(s["name"], **{k: v for k, v in s.items() if k != "name"})
            for s in specs]



