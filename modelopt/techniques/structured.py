"""Structured pruning of any graph with Torch-Pruning's dependency graph: residual adds,
concatenations, batch norms and depthwise convolutions stay consistent because every
channel is removed together with all that depends on it (a "group").

Each round, Torch-Pruning's pruner chooses whole channel groups on a throwaway copy of the
network (cumulative ratio: channels removed in an earlier round are the least important,
and are chosen again). Their indices become zero masks (torch.nn.utils.prune) on the
network itself, which fine-tunes with the masks on: the *masked* model, same shapes. At the
end the same groups are removed from a copy: the *slimmed* model, physically smaller, which
must compute what the masked one computes (prune.check_slimmed).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from modelopt.techniques.errors import TechniqueError, first_line
from modelopt.techniques.layers import CHANNELLED

# a use of a channel Torch-Pruning's graph does not see (said where pruning fails on one)
OUTSIDE_ITS_LAYER = ("a weight used outside its layer (shared, or transposed as "
                     "F.linear(h, layer.weight.t()))")

# one removed group: (module name, Torch-Pruning's handler, channel indices)
Record = tuple[str, Callable, list[int]]


def output_layer(model: nn.Module) -> nn.Module:
    """The classifier: the last Linear / Conv defined. Its outputs are the classes; never pruned."""
    found = [m for m in model.modules() if isinstance(m, CHANNELLED)]
    if not found:
        raise TechniqueError("structured pruning found no Linear or Conv layer in the model")
    return found[-1]


class _Dead:
    """An importance that ranks channels already zeroed (an earlier round's) below all
    others, so cumulative rounds keep them removed whatever the criterion (random included)."""

    def __init__(self, base):
        self.base = base

    def __call__(self, group, **kwargs):
        imp = self.base(group, **kwargs)
        if imp is None:
            return None
        dep, idxs = group[0]
        weight = getattr(dep.target.module, "weight", None)
        if weight is None or weight.dim() < 2 or not dep.handler.__name__.endswith("out_channels"):
            return imp
        if len(imp) != len(idxs):  # scored per consumer column (flatten -> linear): as it is
            return imp
        norms = weight.detach().flatten(1).abs().sum(1)[[int(i) for i in idxs]].to(imp.device)
        return torch.where(norms == 0, imp.min() - 1, imp)


class _Activations:
    """Mean |input| of each channel where it is consumed (the inputs of the next Linear /
    Conv layers, 1-D and 2-D), on training batches, mapped back to the group's channels
    through Torch-Pruning's root indices (a flatten spreads one channel over many columns)."""

    def record(self, model: nn.Module, batches: list[torch.Tensor]) -> None:
        def hook(module, inputs, output):
            a = inputs[0].detach().abs()
            channel = a.dim() - 1 if isinstance(module, nn.Linear) else 1
            mean = a.mean([d for d in range(a.dim()) if d != channel])
            module._importance = getattr(module, "_importance", 0) + mean

        layers = [m for m in model.modules() if isinstance(m, CHANNELLED)]
        handles = [m.register_forward_hook(hook) for m in layers]
        with torch.no_grad():
            for x in batches:
                model(x)
        for h in handles:
            h.remove()

    def __call__(self, group, **kwargs):
        roots = [int(i) for i in group[0].root_idxs]
        position = torch.full((max(roots) + 1,), -1, dtype=torch.long)
        position[roots] = torch.arange(len(roots))
        total, count = torch.zeros(len(roots)), torch.zeros(len(roots))
        for item in group:
            layer = item.dep.target.module
            if item.dep.handler.__name__ != "prune_in_channels" or not hasattr(layer, "_importance"):
                continue
            local = layer._importance[[int(i) for i in item.idxs]].float().cpu()
            at = position[torch.as_tensor([int(r) for r in item.root_idxs])]
            total.index_add_(0, at, local)
            count.index_add_(0, at, torch.ones_like(local))
        if not count.any():
            return None  # no consumer with recorded inputs: Torch-Pruning skips the group
        return total / count.clamp_min(1)


def importance(criterion: str):
    import torch_pruning as tp

    if criterion == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if criterion == "random":
        return tp.importance.RandomImportance()
    if criterion == "taylor":
        return tp.importance.TaylorImportance()
    if criterion == "activation":
        return _Activations()
    raise ValueError(f"unknown criterion {criterion}")


@dataclass(frozen=True)
class Calibration:
    """Training batches (inputs, labels; never test) for criteria that need data."""

    batches: list[tuple[torch.Tensor, torch.Tensor]]
    loss: Callable


def choose(model: nn.Module, criterion: str, ratio: float, example: torch.Tensor,
           calib: Calibration) -> list[Record]:
    """The channel groups Torch-Pruning removes at `ratio` of every layer's channels (the
    classifier's outputs kept), chosen on a copy. An earlier round's masks on `model` are
    made permanent first (its zeros stay; `mask` masks them again)."""
    import torch_pruning as tp

    make_permanent(model)  # a masked weight is computed, and cannot be deep-copied
    probe = copy.deepcopy(model).cpu().eval()
    imp = importance(criterion)
    if isinstance(imp, _Activations):
        imp.record(probe, [x for x, _ in calib.batches])
    if criterion == "taylor":  # first-order Taylor needs the loss's gradients
        probe.zero_grad()
        for x, y in calib.batches:
            calib.loss(probe(x), y).backward()
    heads = attention_heads(probe)
    # embedding tables' outputs are a transformer's residual width, shared by every block:
    # kept, so that pruning removes attention heads and MLP channels, as asked
    kept = [output_layer(probe), *(m for m in probe.modules() if isinstance(m, nn.Embedding))]
    names = {m: n for n, m in probe.named_modules()}
    chosen: list[Record] = []
    try:
        pruner = tp.pruner.BasePruner(
            probe, example.cpu(), importance=_Dead(imp), pruning_ratio=ratio,
            ignored_layers=kept, num_heads=heads, prune_num_heads=bool(heads),
            prune_head_dims=False, head_pruning_ratio=ratio if heads else 0.0)
        for group in pruner.step(interactive=True):
            dep, idxs = group[0]
            chosen.append((names[dep.target.module], dep.handler, sorted(int(i) for i in idxs)))
            group.prune()
    except TechniqueError:
        raise
    except Exception as exc:  # noqa: BLE001 - Torch-Pruning's reason, named
        raise TechniqueError(
            f"Torch-Pruning could not follow this model's graph ({first_line(exc)}); it "
            f"removes a channel from the layers that use it, and {OUTSIDE_ITS_LAYER} is one "
            "it cannot follow") from exc
    return chosen


def attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """The projections whose outputs are attention heads, with their head counts, of every
    module that declares them (a `head_projections()` method: techniques/transformers.py):
    Torch-Pruning then removes whole heads of them, and keeps every head's width. A
    submodule of that name is no declaration (torchvision's ViT calls its classifier
    `heads`: a module is callable too)."""
    found: dict[nn.Module, int] = {}
    for m in model.modules():
        declared = getattr(m, "head_projections", None)
        if callable(declared) and not isinstance(declared, nn.Module):
            found.update(declared())
    return found


def mask(model: nn.Module, chosen: list[Record], example: torch.Tensor) -> None:
    """Zero, with torch.nn.utils.prune masks, every parameter slice the chosen groups would
    remove (weight rows of a removed output channel, columns of a removed input, batch
    norms' scale and shift), on `model` itself: same shapes, the channels computing zero."""
    import torch_pruning as tp

    make_permanent(model)
    clone = copy.deepcopy(model).cpu().eval()
    dg = tp.DependencyGraph().build_dependency(clone, example_inputs=example.cpu())
    names = {m: n for n, m in clone.named_modules()}
    masks: dict[tuple[str, str], torch.Tensor] = {}
    for name, handler, idxs in chosen:
        group = dg.get_pruning_group(clone.get_submodule(name), handler, idxs)
        for dep, ids in group:
            module = dep.target.module
            if module not in names:
                continue  # a functional op (add, concat, flatten): nothing to mask
            target = model.get_submodule(names[module])
            dim = _dim(target, dg.is_out_channel_pruning_fn(dep.handler))
            for pname, param in list(target.named_parameters(recurse=False)):
                if pname not in ("weight", "bias") or (pname == "bias" and dim != 0):
                    continue
                if dim >= param.dim():
                    raise TechniqueError(f"cannot mask {names[module]}.{pname}: Torch-Pruning "
                                         f"removes its dim {dim}, which it lacks")
                m = masks.setdefault((names[module], pname), torch.ones_like(param))
                m.index_fill_(dim, torch.as_tensor([int(i) for i in ids], device=m.device), 0)
    for (name, pname), m in masks.items():
        tprune.custom_from_mask(model.get_submodule(name), pname, m)


def _dim(module: nn.Module, out: bool) -> int:
    """The parameter dimension a group's channels index: outputs are dim 0; inputs dim 1 of a
    Linear or a dense convolution, dim 0 where inputs are outputs (a depthwise convolution,
    a norm's per-channel scale)."""
    if out:
        return 0
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
        return 0
    weight = getattr(module, "weight", None)
    return 1 if weight is not None and weight.dim() >= 2 else 0


def slim(model: nn.Module, chosen: list[Record], example: torch.Tensor) -> nn.Module:
    """A physically smaller copy of the masked model: the chosen groups removed."""
    import torch_pruning as tp

    slimmed = copy.deepcopy(model).cpu().eval()
    make_permanent(slimmed)
    dg = tp.DependencyGraph().build_dependency(slimmed, example_inputs=example.cpu())
    for name, handler, idxs in chosen:
        group = dg.get_pruning_group(slimmed.get_submodule(name), handler, idxs)
        if dg.check_pruning_group(group):
            group.prune()
    return slimmed


def zeroed_channels(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Per Linear / Conv layer but the classifier: (output channels all zero, channels)."""
    out = output_layer(model)
    return {n: (int((m.weight.detach().flatten(1).abs().sum(1) == 0).sum()), m.weight.shape[0])
            for n, m in model.named_modules()
            if isinstance(m, CHANNELLED) and m is not out}


def make_permanent(model: nn.Module) -> None:
    """prune.remove on every masked tensor: weight = weight_orig * mask, masks dropped."""
    for mod in model.modules():
        for name in [k[:-5] for k, _ in list(mod.named_buffers(recurse=False)) if k.endswith("_mask")]:
            tprune.remove(mod, name)
