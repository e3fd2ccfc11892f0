"""Optimizers, learning-rate schedules and regularization terms, registered by name."""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Annotated, Callable

import torch
from pydantic import Field
from torch import nn

from modelopt.spec.cell import Choice, chosen
from modelopt.spec.registries import OPTIMIZERS, REGULARIZERS, SCHEDULES
from modelopt.spec.registry import NonNegative, Positive, PositiveInt, Probability
from modelopt.techniques.layers import tables

Betas = tuple[Probability, Probability]


def decayed(model: nn.Module) -> list[torch.Tensor]:
    """Weight matrices and kernels. Biases and norm scales (1-D) and embedding tables are
    not decayed or penalised (the l2 and l1 terms below skip them too): an embedding row
    is a token's vector, and shrinking the rows of rare tokens toward zero is no
    regularization of the map (minGPT's choice)."""
    embeddings = tables(model)
    return [p for p in model.parameters() if p.dim() > 1 and id(p) not in embeddings]


def param_groups(model: nn.Module, weight_decay: float, decay_all: bool) -> list[dict]:
    """The model's trainable parameters, with weight decay on `decayed` ones only, unless
    `decay_all` (torch's own default: every parameter, biases and norm scales included)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_all or not weight_decay:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = {id(p) for p in decayed(model)}
    return [{"params": [p for p in params if id(p) in decay], "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0}]


def optimizer(name: str, weight_decay: float = 0.0, **facts):
    """Register an optimizer written as `fn(params, /, lr=..., ...)`. Every optimizer takes
    the model, as timm's create_optimizer_v2 does, so that weight decay can leave biases and
    norm scales alone: the entry gets `weight_decay` (this default) and `decay_all: true`
    (decay them as torch does) here, once, and `fn` the parameter groups they make."""
    def deco(fn: Callable) -> Callable:
        entry = taking_the_model(name, fn, weight_decay)
        OPTIMIZERS.register(name, **facts)(entry)
        fn.__modelopt_entry__ = entry  # what its import path names (Registry._import)
        return fn
    return deco


def taking_the_model(name: str, fn: Callable, weight_decay: float | None = 0.0) -> Callable:
    """The entry of `fn(params, /, ...)`: a function of the model that passes `fn` its
    parameter groups, with `weight_decay` and `decay_all` added to what a suite may set
    (`weight_decay=None`: the optimizer has none, and a suite setting it is refused when it
    loads)."""
    first = next(iter(inspect.signature(fn).parameters.values()), None)
    if first is None or first.kind is not first.POSITIONAL_ONLY:
        # else the suite would be asked for the groups, as a parameter of its own
        raise TypeError(f"optimizer '{name}': {fn.__name__} takes the parameter groups "
                        f"first, positional-only: def {fn.__name__}(params, /, lr=...)")

    def entry(model, /, *, weight_decay: float = weight_decay or 0.0, decay_all: bool = False,
              **params) -> torch.optim.Optimizer:
        made = fn(param_groups(model, weight_decay, decay_all), **params)
        if not isinstance(made, torch.optim.Optimizer):  # e.g. a `return` left out
            raise TypeError(f"optimizer '{name}': {fn.__name__} returned "
                            f"{type(made).__name__}, not a torch.optim.Optimizer")
        return made

    own = [p for p in inspect.signature(fn).parameters.values()
           if p.kind is not p.POSITIONAL_ONLY]
    kw = inspect.Parameter.KEYWORD_ONLY
    decays = [inspect.Parameter("weight_decay", kw, default=weight_decay, annotation=NonNegative),
              inspect.Parameter("decay_all", kw, default=False, annotation=bool)]
    decays = decays if weight_decay is not None else []
    entry.__signature__ = inspect.Signature([
        inspect.Parameter("model", inspect.Parameter.POSITIONAL_ONLY), *own, *decays])
    entry.__annotations__ = {**fn.__annotations__, **{p.name: p.annotation for p in decays}}
    entry.__doc__, entry.__name__, entry.__module__ = fn.__doc__, fn.__name__, fn.__module__
    return entry


def by_import_path(name: str, fn: Callable) -> Callable:
    """What an optimizer named by import path is: a plain `fn(params, /, ...)`
    (`my_pkg.optim:nadam`) works as one registered with @optimizer does, and so does a
    torch.optim.Optimizer class (`torch.optim:NAdam`), given the groups as its `params`."""
    if isinstance(fn, type) and issubclass(fn, torch.optim.Optimizer):
        return taking_the_model(name, *_groups_first(name, fn))
    return taking_the_model(name, fn)


def _groups_first(name: str, cls: type) -> tuple[Callable, float | None]:
    """`cls(params, lr=..., ...)` as `fn(params, /, lr=..., ...)`, with its own default of
    weight_decay (AdamW's 0.01), which the parameter groups carry, and the `Tensor` left
    out of annotations such as `lr: float | Tensor` (a suite writes numbers)."""
    closure = inspect.signature(cls.step).parameters.get("closure")
    if closure is not None and closure.default is closure.empty:
        raise TypeError(f"optimizer '{name}': {cls.__name__}.step needs a closure that "
                        "evaluates the loss again, which modelopt's training step does not pass")
    sig = inspect.signature(cls)
    first, *rest = sig.parameters.values() or [None]
    if first is None or first.kind not in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD):
        raise TypeError(f"optimizer '{name}': {cls.__name__}{sig} does not take the parameter "
                        "groups first, as torch.optim's optimizers do")
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that names what its module does not define
        hints = {}
    decay = sig.parameters.get("weight_decay")
    own = [p.replace(annotation=_numbers_only(hints.get(p.name, typing.Any)))
           for p in rest if p.name != "weight_decay"
           and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]  # not *args, **kwargs

    def fn(params, /, **kw) -> torch.optim.Optimizer:  # no weight decay: none in its groups
        return cls([{k: v for k, v in g.items() if k != "weight_decay" or decay}
                    for g in params], **kw)

    fn.__signature__ = inspect.Signature(
        [first.replace(kind=first.POSITIONAL_ONLY, annotation=first.empty), *own])
    fn.__annotations__ = {p.name: p.annotation for p in own}
    fn.__name__ = cls.__name__
    fn.__doc__ = (inspect.getdoc(cls) or cls.__name__).split("\n\n")[0]
    if decay is None:
        return fn, None
    return fn, float(decay.default) if decay.default is not decay.empty else 0.0


def _numbers_only(hint):
    """`float | Tensor` -> `float`, `tuple[float | Tensor, ...]` likewise (nested)."""
    args = typing.get_args(hint)
    kept = tuple(_numbers_only(a) for a in args if a is not torch.Tensor)
    if not args or kept == args:
        return hint
    if typing.get_origin(hint) is tuple:
        return tuple[kept]
    return typing.Union[kept]


OPTIMIZERS.adapt = by_import_path


@optimizer("gd", full_batch=True)
def gd(params, /, lr: Positive = 0.1) -> torch.optim.Optimizer:
    """Full-batch gradient descent: every step uses the whole training split."""
    return torch.optim.SGD(params, lr=lr)


@optimizer("sgd")
def sgd(params, /, lr: Positive = 0.01) -> torch.optim.Optimizer:
    """Plain minibatch stochastic gradient descent."""
    return torch.optim.SGD(params, lr=lr)


@optimizer("momentum")
def momentum(params, /, lr: Positive = 0.01, momentum: Probability = 0.9) -> torch.optim.Optimizer:
    """SGD with heavy-ball momentum."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum)


@optimizer("nesterov")
def nesterov(params, /, lr: Positive = 0.01, momentum: Annotated[float, Field(gt=0, le=1)] = 0.9
             ) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True)


@optimizer("adam")
def adam(params, /, lr: Positive = 1e-3, betas: Betas = (0.9, 0.999), eps: Positive = 1e-8
         ) -> torch.optim.Optimizer:
    """Adam (weight_decay here is the coupled L2 form; see adamw)."""
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps)


@optimizer("adamw", weight_decay=0.01)
def adamw(params, /, lr: Positive = 1e-3, betas: Betas = (0.9, 0.999), eps: Positive = 1e-8
          ) -> torch.optim.Optimizer:
    """Adam with decoupled weight decay."""
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps)


@optimizer("rmsprop")
def rmsprop(params, /, lr: Positive = 1e-3, alpha: Probability = 0.99, eps: Positive = 1e-8,
            momentum: Probability = 0.0) -> torch.optim.Optimizer:
    """RMSprop."""
    return torch.optim.RMSprop(params, lr=lr, alpha=alpha, eps=eps, momentum=momentum)


@optimizer("adagrad")
def adagrad(params, /, lr: Positive = 0.01, eps: Positive = 1e-10) -> torch.optim.Optimizer:
    """Adagrad."""
    return torch.optim.Adagrad(params, lr=lr, eps=eps)


# ---------------------------------------------------------------- schedules
# A schedule is stepped once per training step; `on_eval` ones (plateau) once per
# evaluation, with the validation accuracy.

@SCHEDULES.register("constant")
def constant(optimizer, total_steps: int, /):
    """The optimizer's learning rate throughout."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


@SCHEDULES.register("step")
def step(optimizer, total_steps: int, /, step_size: PositiveInt = 1000, gamma: Positive = 0.1):
    """Multiply the rate by gamma every step_size steps."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


@SCHEDULES.register("exponential")
def exponential(optimizer, total_steps: int, /, gamma: Positive = 0.999):
    """Multiply the rate by gamma every step."""
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)


@SCHEDULES.register("cosine")
def cosine(optimizer, total_steps: int, /, eta_min: NonNegative = 0.0):
    """Cosine annealing from the initial rate to eta_min over the whole run."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps,
                                                      eta_min=eta_min)


@SCHEDULES.register("warmup_cosine")
def warmup_cosine(optimizer, total_steps: int, /, warmup_steps: PositiveInt = 100,
                  eta_min: NonNegative = 0.0):
    """Linear warm-up from ~0 for warmup_steps, then cosine annealing to eta_min."""
    warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / max(1, warmup_steps),
                                             total_iters=warmup_steps)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=eta_min)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, cos],
                                                 milestones=[warmup_steps])


@SCHEDULES.register("plateau", on_eval=True)
def plateau(optimizer, total_steps: int, /, factor: Annotated[float, Field(gt=0, lt=1)] = 0.5,
            patience: Annotated[int, Field(ge=0)] = 2, threshold: NonNegative = 1e-3):
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
    """The weight matrices and kernels (biases, norm scales, embeddings are not penalised)."""
    return decayed(model)


@REGULARIZERS.register("l2")
def l2(*, weight: NonNegative = 1e-4) -> Term:
    """Explicit penalty weight * sum(w^2) added to the loss (unlike decoupled weight decay)."""
    return Term(penalty=lambda m: weight * sum(w.pow(2).sum() for w in weights(m)))


@REGULARIZERS.register("l1")
def l1(*, weight: NonNegative = 1e-4) -> Term:
    """Penalty weight * sum(|w|): drives weights to zero (see params_nonzero)."""
    return Term(penalty=lambda m: weight * sum(w.abs().sum() for w in weights(m)))


@REGULARIZERS.register("grad_clip")
def grad_clip(*, max_norm: Positive = 1.0) -> Term:
    """Clip the global gradient norm to max_norm before each step."""
    return Term(before_step=lambda m: nn.utils.clip_grad_norm_(m.parameters(), max_norm))


def build_optimizer(spec: Choice | dict, model: nn.Module) -> torch.optim.Optimizer:
    return chosen("optimizer", spec).build(model)


def build_schedule(spec: Choice | dict | None, optimizer, total_steps: int):
    return None if spec is None else chosen("schedule", spec).build(optimizer, total_steps)


def build_terms(specs) -> list[Term]:
    return [chosen("regularization", s).build() for s in specs]
