"""Pruning: unstructured / structured masks (torch.nn.utils.prune), fine-tuning, physical slimming."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as tprune

from modelopt.spec.registries import PRUNERS
from modelopt.spec.registry import Fraction, NonNegativeInt, PositiveInt
from modelopt.techniques.data import Data, rows
from modelopt.techniques.errors import TechniqueError

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass(frozen=True)
class Pruning:
    """What to prune and how; `mask(model, amount, data)` adds masks for one round."""

    amount: float
    finetune_steps: int
    rounds: int
    mask: Callable[[nn.Module, float, Data], None]
    structured: bool = False
    global_: bool = False  # unstructured: `amount` is of all targeted weights, not of each layer


def layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE)]


def _unstructured(method, global_: bool):
    def mask(model: nn.Module, amount: float, data: Data) -> None:
        targets = [(m, "weight") for _, m in layers(model)]
        if global_:  # one threshold across all layers: amount of all weights overall
            tprune.global_unstructured(targets, pruning_method=method, amount=amount)
        else:  # the same amount in every layer
            for m, name in targets:
                method.apply(m, name, amount=amount)
    return mask


@PRUNERS.register("l1_unstructured")
def l1_unstructured(*, amount: Fraction = 0.5, global_: bool = False,
                    finetune_steps: NonNegativeInt = 0, rounds: PositiveInt = 1) -> Pruning:
    """Zero the smallest-magnitude weights, per layer or globally (`global: true`)."""
    return Pruning(amount, finetune_steps, rounds, _unstructured(tprune.L1Unstructured, global_),
                   global_=global_)


@PRUNERS.register("random_unstructured")
def random_unstructured(*, amount: Fraction = 0.5, global_: bool = False,
                        finetune_steps: NonNegativeInt = 0, rounds: PositiveInt = 1) -> Pruning:
    """Zero randomly chosen weights: the control for magnitude pruning."""
    return Pruning(amount, finetune_steps, rounds,
                   _unstructured(tprune.RandomUnstructured, global_), global_=global_)


# ---------------------------------------------------------------- structured

def _hidden_layers(model: nn.Module) -> list[tuple[int, nn.Module, nn.Module | None]]:
    """(index, layer, following batch norm) for every prunable layer but the output layer."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"structured pruning needs a sequential model, not {type(model).__name__}"
                         " (the gru has no channels to remove)")
    mods = list(model)
    found = []
    for i, m in enumerate(mods):
        if isinstance(m, PRUNABLE):
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            bn = nxt if isinstance(nxt, (nn.BatchNorm1d, nn.BatchNorm2d)) else None
            found.append((i, m, bn))
    return found[:-1]  # never remove the classifier's outputs


def _mask_channels(layer: nn.Module, bn: nn.Module | None, keep: torch.Tensor) -> None:
    """Zero whole output channels: the weight rows, their bias and the batch norm after them,
    so a masked channel outputs exactly zero (and the slimmed model matches the masked one)."""
    shape = [-1] + [1] * (layer.weight.dim() - 1)
    tprune.custom_from_mask(layer, "weight", keep.view(shape).expand_as(layer.weight).float())
    if layer.bias is not None:
        tprune.custom_from_mask(layer, "bias", keep.float())
    if bn is not None:
        tprune.custom_from_mask(bn, "weight", keep.float())
        tprune.custom_from_mask(bn, "bias", keep.float())


def _current_keep(layer: nn.Module) -> torch.Tensor:
    w = layer.weight.detach()
    return w.flatten(1).abs().sum(1) > 0


def _structured(importance: Callable[[nn.Module, Data], list[torch.Tensor]]):
    def mask(model: nn.Module, amount: float, data: Data) -> None:
        hidden = _hidden_layers(model)
        scores = importance(model, data)
        for (_, layer, bn), score in zip(hidden, scores):
            alive = _current_keep(layer)
            n_remove = int(round(amount * len(alive))) - int((~alive).sum())
            if n_remove <= 0:
                continue
            score = torch.where(alive, score, torch.full_like(score, float("inf")))
            idx = torch.argsort(score, stable=True)[:n_remove]
            keep = alive.clone()
            keep[idx] = False
            if not keep.any():
                keep[torch.argmax(score.masked_fill(~alive, -1))] = True  # keep one channel
            for name in ("weight", "bias"):
                for mod in (layer, bn):
                    if mod is not None and tprune.is_pruned(mod) and hasattr(mod, f"{name}_orig"):
                        tprune.remove(mod, name)
            _mask_channels(layer, bn, keep)
    return mask


def _l1_scores(model: nn.Module, data: Data) -> list[torch.Tensor]:
    return [layer.weight.detach().flatten(1).abs().sum(1) for _, layer, _ in _hidden_layers(model)]


@PRUNERS.register("l1_structured")
def l1_structured(*, amount: Fraction = 0.5, finetune_steps: NonNegativeInt = 0,
                  rounds: PositiveInt = 1) -> Pruning:
    """Remove whole output channels / neurons with the smallest L1 norm (all but the last layer)."""
    return Pruning(amount, finetune_steps, rounds, _structured(_l1_scores), structured=True)


@PRUNERS.register("random_structured")
def random_structured(*, amount: Fraction = 0.5, finetune_steps: NonNegativeInt = 0,
                      rounds: PositiveInt = 1) -> Pruning:
    """Remove randomly chosen channels / neurons: the control for structured criteria."""

    def scores(model, data):
        return [torch.rand(layer.weight.shape[0]) for _, layer, _ in _hidden_layers(model)]
    return Pruning(amount, finetune_steps, rounds, _structured(scores), structured=True)


@PRUNERS.register("activation_structured")
def activation_structured(*, amount: Fraction = 0.5, calibration_batches: PositiveInt = 10,
                          batch_size: PositiveInt = 100, finetune_steps: NonNegativeInt = 0,
                          rounds: PositiveInt = 1) -> Pruning:
    """Remove the channels / neurons with the smallest mean |activation| on training batches."""

    def scores(model: nn.Module, data: Data) -> list[torch.Tensor]:
        hidden = _hidden_layers(model)
        mods = list(model)
        # the activation after each layer (after its batch norm, if any), per channel
        taps = []
        for i, layer, bn in hidden:
            j = i + (2 if bn is not None else 1)
            taps.append(mods[j] if j < len(mods) else (bn or layer))
        sums = [None] * len(taps)

        def hook(k):
            def fn(mod, inp, out):
                a = out.detach().abs()
                per_channel = a.transpose(0, 1).flatten(1).mean(1)
                sums[k] = per_channel if sums[k] is None else sums[k] + per_channel
            return fn

        handles = [t.register_forward_hook(hook(k)) for k, t in enumerate(taps)]
        was = model.training
        model.eval()
        dev = next(model.parameters()).device
        with torch.no_grad():  # calibration on the training split only, never test
            for b in range(calibration_batches):
                start, end = b * batch_size, min((b + 1) * batch_size, len(data.x_train))
                if start >= end:  # fewer training samples than the batches asked for
                    break
                model(rows(data.x_train, torch.arange(start, end)).to(dev))
        model.train(was)
        for h in handles:
            h.remove()
        return [s.cpu() for s in sums]
    return Pruning(amount, finetune_steps, rounds, _structured(scores), structured=True)


# ---------------------------------------------------------------- applying

def make_permanent(model: nn.Module) -> None:
    """prune.remove on every masked tensor: weight = weight_orig * mask, masks dropped."""
    for mod in model.modules():
        for name in [k[:-5] for k, _ in list(mod.named_buffers(recurse=False)) if k.endswith("_mask")]:
            tprune.remove(mod, name)


def _histogram(model: nn.Module) -> dict:
    w = torch.cat([m.weight.detach().flatten().cpu() for _, m in layers(model)]).abs().numpy()
    nz = w[w > 0]
    edges = np.logspace(-5, 1, 41)
    return {"edges": edges.tolist(), "counts": np.histogram(nz, edges)[0].tolist(),
            "zeros": int((w == 0).sum())}


def slim(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """A physically smaller copy: zeroed output channels removed with Torch-Pruning, which
    also shrinks what depends on them (the next layer's inputs, batch norms)."""
    import torch_pruning as tp

    slimmed = copy.deepcopy(model).cpu().eval()
    dg = tp.DependencyGraph().build_dependency(slimmed, example_inputs=example.cpu())
    for _, layer, _ in _hidden_layers(slimmed):
        dead = torch.nonzero(layer.weight.detach().flatten(1).abs().sum(1) == 0).flatten().tolist()
        if not dead:
            continue
        fn = tp.prune_linear_out_channels if isinstance(layer, nn.Linear) else tp.prune_conv_out_channels
        group = dg.get_pruning_group(layer, fn, idxs=dead)
        if dg.check_pruning_group(group):
            group.prune()
    return slimmed


# ---------------------------------------------------------------- checking

def _zeros(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Per prunable layer: (zero weights, all-zero output channels), to tell afterwards what the
    technique zeroed from what was zero already."""
    out = {}
    for name, m in layers(model):
        w = m.weight.detach()
        out[name] = (int((w == 0).sum()), int((w.flatten(1).abs().sum(1) == 0).sum()))
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def check_unstructured(model: nn.Module, method: str, p: Pruning,
                       before: dict[str, tuple[int, int]]) -> None:
    """The zeroed fraction of the targeted weights (all of them for global pruning, each layer
    otherwise) is `amount`, within torch's rounding of amount x n to whole weights each round."""
    ws = {name: m.weight.detach() for name, m in layers(model)}
    groups = {"over all targeted layers": list(ws)} if p.global_ else {f"layer {n!r}": [n] for n in ws}
    wrong = []
    for label, names in groups.items():
        n = sum(ws[k].numel() for k in names)
        zeros = sum(int((ws[k] == 0).sum()) for k in names)
        already = sum(before[k][0] for k in names)
        tol = p.rounds  # half a weight of rounding per round, plus the schedule's float error
        if not p.amount * n - tol <= zeros <= p.amount * n + tol + already:
            wrong.append(f"{label}: {_pct(zeros / n)} ({zeros} of {n} weights zero)")
    if wrong:
        scope = "of all targeted weights" if p.global_ else "of every layer's weights"
        raise TechniqueError(f"{method} asked {_pct(p.amount)} {scope} zeroed, reached "
                             + "; ".join(wrong))


def check_structured(model: nn.Module, method: str, amount: float,
                     before: dict[str, tuple[int, int]]) -> None:
    """Every prunable layer anywhere in the model but the output layer (the last one) has about
    round(amount x channels) output channels zeroed; a layer the method did not reach is named
    with the reason, since a silent skip reads as a model pruned far less than asked."""
    found = layers(model)
    reached = {id(layer) for _, layer, _ in _hidden_layers(model)}
    wrong, zeroed_all, channels_all = [], 0, 0
    for name, layer in found[:-1]:
        channels = layer.weight.shape[0]
        zeroed = int((layer.weight.detach().flatten(1).abs().sum(1) == 0).sum())
        zeroed_all, channels_all = zeroed_all + zeroed, channels_all + channels
        want = amount * channels
        # round() to whole channels (half a channel either way), one channel always kept
        if min(want - 0.5, channels - 1) - 1e-6 <= zeroed <= want + 0.5 + before[name][1] + 1e-6:
            continue
        what = f"layer {name!r} ({zeroed} of {channels} channels zeroed)"
        if id(layer) in reached:
            wrong.append(f"{what} was pruned to {_pct(zeroed / channels)}")
        elif "." in name:
            wrong.append(f"{what} is nested inside a block ({name.rsplit('.', 1)[0]!r}): structured"
                         " pruning here handles only a plain nn.Sequential of layers")
        else:
            wrong.append(f"{what} was not reached: the method takes the last top-level layer for"
                         f" the output layer, but the model's last prunable layer is {found[-1][0]!r}")
    if wrong:
        raise TechniqueError(
            f"{method} asked {_pct(amount)} of the output channels of every layer but the output"
            f" layer {found[-1][0]!r}, reached {_pct(zeroed_all / channels_all)} overall: "
            + "; ".join(wrong))


# slimmed and masked models differ only in float32 summation order (smaller matmuls), so their
# outputs agree far within 1e-4 of the output scale (the tests see < 1e-5); a slimming that
# removed the wrong channels differs by the size of the outputs themselves (11-27 seen)
SLIM_ATOL, SLIM_RTOL = 1e-4, 1e-4


def check_slimmed(slimmed: nn.Module, masked: nn.Module, x: torch.Tensor) -> float:
    """max |slimmed(x) - masked(x)|; raises TechniqueError past atol + rtol x max |masked(x)|."""
    with torch.no_grad():
        ref = masked(x)
        diff = float((slimmed(x) - ref).abs().max())
    tol = SLIM_ATOL + SLIM_RTOL * float(ref.abs().max())
    if not diff <= tol:  # NaN fails too
        raise TechniqueError(
            f"the slimmed model (channels removed by Torch-Pruning) differs from the masked model"
            f" by up to {diff:.3g} on {len(x)} test inputs, past the tolerance {tol:.3g}"
            f" ({SLIM_ATOL:g} + {SLIM_RTOL:g} x max |masked output|): it does not compute what the"
            " pruned model computes, so its size and latency would describe another model")
    return diff


# ---------------------------------------------------------------- applying

@dataclass
class Pruned:
    info: dict  # metrics: the amount, and how far the slimmed model's outputs are from the masked
    finetune: object | None  # the last fine-tuning outcome (train.Outcome)
    histograms: dict  # weight magnitudes before / after
    slimmed: nn.Module | None  # structured pruning: the channels physically removed
    finetune_seconds: float = 0.0  # training seconds of every fine-tuning round


def apply(spec: dict, model: nn.Module, data: Data, finetune) -> Pruned:
    """Prune in `rounds` (each followed by its share of fine-tuning), make it permanent, check
    that the asked sparsity was reached, and for structured pruning build the slimmed model and
    check that it computes what the masked model computes."""
    p: Pruning = PRUNERS.build_spec(spec)
    before, zeros_before = _histogram(model), _zeros(model)
    outcome, seconds = None, 0.0
    for r in range(1, p.rounds + 1):
        # cumulative sparsity after round r, geometric so each round removes the same share
        target = 1 - (1 - p.amount) ** (r / p.rounds)
        previous = 1 - (1 - p.amount) ** ((r - 1) / p.rounds)
        step_amount = target if p.structured else 1 - (1 - target) / (1 - previous)
        p.mask(model, step_amount, data)
        steps = p.finetune_steps // p.rounds
        if steps > 0:
            outcome = finetune(model, steps, f"finetune{r}" if p.rounds > 1 else "finetune")
            seconds += outcome.train_seconds
    make_permanent(model)
    if p.structured:
        check_structured(model, spec["name"], p.amount, zeros_before)
    else:
        check_unstructured(model, spec["name"], p, zeros_before)
    info: dict = {"prune_amount": p.amount}
    slimmed = None
    if p.structured:
        slimmed = slim(model, data.x_test[:1])
        diff = check_slimmed(slimmed, copy.deepcopy(model).cpu().eval(), data.x_test[:256])
        info["slimmed_max_abs_diff"] = diff
    return Pruned(info, outcome, {"before": before, "after": _histogram(model)}, slimmed,
                  seconds)
