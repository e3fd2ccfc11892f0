"""Pruning: unstructured / structured masks (torch.nn.utils.prune), fine-tuning, physical slimming."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as tprune

from modelopt.data import Data
from modelopt.registry import Registry
from modelopt.train import rows

# flags: structured (whole channels / neurons are removed, so a slimmed model is built)
PRUNERS = Registry("prune")

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass(frozen=True)
class Pruning:
    """What to prune and how; `mask(model, amount, data)` adds masks for one round."""

    amount: float
    finetune_steps: int
    rounds: int
    mask: Callable[[nn.Module, float, Data], None]
    structured: bool = False


def _check(amount: float, rounds: int, finetune_steps: int) -> None:
    if not 0 <= amount < 1:
        raise ValueError(f"prune amount must be in [0, 1), got {amount}")
    if rounds < 1:
        raise ValueError(f"prune rounds must be >= 1, got {rounds}")
    if finetune_steps < 0:
        raise ValueError(f"finetune_steps must be >= 0, got {finetune_steps}")


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


@PRUNERS.register("l1_unstructured", structured=False)
def l1_unstructured(*, amount: float = 0.5, global_: bool = False, finetune_steps: int = 0,
                    rounds: int = 1) -> Pruning:
    """Zero the smallest-magnitude weights, per layer or globally (`global: true`)."""
    _check(amount, rounds, finetune_steps)
    return Pruning(amount, finetune_steps, rounds, _unstructured(tprune.L1Unstructured, global_))


@PRUNERS.register("random_unstructured", structured=False)
def random_unstructured(*, amount: float = 0.5, global_: bool = False, finetune_steps: int = 0,
                        rounds: int = 1) -> Pruning:
    """Zero randomly chosen weights: the control for magnitude pruning."""
    _check(amount, rounds, finetune_steps)
    return Pruning(amount, finetune_steps, rounds,
                   _unstructured(tprune.RandomUnstructured, global_))


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


@PRUNERS.register("l1_structured", structured=True)
def l1_structured(*, amount: float = 0.5, finetune_steps: int = 0, rounds: int = 1) -> Pruning:
    """Remove whole output channels / neurons with the smallest L1 norm (all but the last layer)."""
    _check(amount, rounds, finetune_steps)
    return Pruning(amount, finetune_steps, rounds, _structured(_l1_scores), structured=True)


@PRUNERS.register("random_structured", structured=True)
def random_structured(*, amount: float = 0.5, finetune_steps: int = 0, rounds: int = 1) -> Pruning:
    """Remove randomly chosen channels / neurons: the control for structured criteria."""
    _check(amount, rounds, finetune_steps)

    def scores(model, data):
        return [torch.rand(layer.weight.shape[0]) for _, layer, _ in _hidden_layers(model)]
    return Pruning(amount, finetune_steps, rounds, _structured(scores), structured=True)


@PRUNERS.register("activation_structured", structured=True)
def activation_structured(*, amount: float = 0.5, calibration_batches: int = 10,
                          batch_size: int = 100, finetune_steps: int = 0,
                          rounds: int = 1) -> Pruning:
    """Remove the channels / neurons with the smallest mean |activation| on training batches."""
    _check(amount, rounds, finetune_steps)

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


@dataclass
class Pruned:
    info: dict  # metrics: amount, slimmed_* counts
    finetune: object | None  # the last fine-tuning outcome (train.Outcome)
    histograms: dict  # weight magnitudes before / after
    slimmed: nn.Module | None  # structured pruning: the channels physically removed


def apply(spec: dict, model: nn.Module, data: Data, finetune) -> Pruned:
    """Prune in `rounds` (each followed by its share of fine-tuning), make it permanent, and for
    structured pruning build the slimmed model."""
    from modelopt.measure import count_params, flops, size_bytes

    p: Pruning = PRUNERS.build(spec["name"], **{k: v for k, v in spec.items() if k != "name"})
    before = _histogram(model)
    outcome = None
    for r in range(1, p.rounds + 1):
        # cumulative sparsity after round r, geometric so each round removes the same share
        target = 1 - (1 - p.amount) ** (r / p.rounds)
        previous = 1 - (1 - p.amount) ** ((r - 1) / p.rounds)
        step_amount = target if p.structured else 1 - (1 - target) / (1 - previous)
        p.mask(model, step_amount, data)
        steps = p.finetune_steps // p.rounds
        if steps > 0:
            outcome = finetune(model, steps, f"finetune{r}" if p.rounds > 1 else "finetune")
    make_permanent(model)
    info: dict = {"prune_amount": p.amount}
    slimmed = None
    if p.structured:
        example = data.x_test[:1]
        slimmed = slim(model, example)
        masked = copy.deepcopy(model).cpu().eval()
        with torch.no_grad():
            diff = float((slimmed(data.x_test[:256]) - masked(data.x_test[:256])).abs().max())
        params, _ = count_params(slimmed)
        info.update({"slimmed_params": params, "slimmed_flops": flops(slimmed, example),
                     "slimmed_size_bytes": size_bytes(slimmed), "slimmed_max_abs_diff": diff})
    return Pruned(info, outcome, {"before": before, "after": _histogram(model)}, slimmed)

