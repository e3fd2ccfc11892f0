"""Pruning: unstructured / structured masks (torch.nn.utils.prune), fine-tuning, physical slimming."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as tprune

from modelopt.spec.cell import Choice
from modelopt.spec.cell import chosen as as_choice
from modelopt.spec.registries import PRUNERS
from modelopt.spec.registry import Fraction, NonNegativeInt, PositiveInt
from modelopt.techniques import structured, tasks
from modelopt.techniques.data import Data, train_sample
from modelopt.techniques.errors import TechniqueError, first_line
from modelopt.techniques.layers import TORCH, tables, weighted

PRUNABLE = TORCH  # the torch layers; weights() adds transformers' Conv1D and attention
ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


@dataclass(frozen=True)
class Pruning:
    """What to prune and how; `mask(model, amount, data)` adds masks for one round."""

    amount: float
    finetune_steps: int
    rounds: int
    mask: Callable[[nn.Module, float, Data], None] | None  # unstructured: masks for one round
    structured: bool = False
    global_: bool = False  # unstructured: `amount` is of all targeted weights, not of each layer
    criterion: str | None = None  # structured: l1 | random | activation | taylor
    calibration: tuple[int, int] = (0, 0)  # structured: training batches x size for the criterion


def weights(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """The weight matrices and kernels unstructured pruning targets, as (name, module, the
    module's name for it): each Linear's and Conv's `weight` (transformers' Conv1D too,
    layers.py), and nn.MultiheadAttention's query/key/value projections (`in_proj_weight`,
    or `q_proj_weight`... where keys and values have sizes of their own; its output
    projection is a Linear already)."""
    out = []
    for n, m in model.named_modules():
        if weighted(m):
            out.append((n, m, "weight"))
        elif isinstance(m, nn.MultiheadAttention):
            out += [(f"{n}.{w}" if n else w, m, w) for w in ATTENTION_WEIGHTS
                    if getattr(m, w, None) is not None]
    # an output layer tied to the embedding table (GPT-2's lm_head) is that table: left whole
    embeddings = tables(model)
    return [(n, m, w) for n, m, w in out if id(_parameter(m, w)) not in embeddings]


def _parameter(m: nn.Module, name: str) -> torch.Tensor:
    """The parameter behind `name`: `weight_orig` once torch's pruning masks it."""
    orig = getattr(m, f"{name}_orig", None)
    return orig if orig is not None else getattr(m, name)


def layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Linear and Conv layers, by name: what a plugin pruner written before `weights`
    masks (on a model with attention the cell's check then names the projections it left)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE)]


def _unstructured(method, global_: bool):
    def mask(model: nn.Module, amount: float, data: Data) -> None:
        targets = [(m, w) for _, m, w in weights(model)]
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

def _structured_entry(criterion: str, amount: float, finetune_steps: int, rounds: int,
                      calibration_batches: int = 0, batch_size: int = 0) -> Pruning:
    return Pruning(amount, finetune_steps, rounds, None, structured=True, criterion=criterion,
                   calibration=(calibration_batches, batch_size))


@PRUNERS.register("l1_structured", structured=True)
def l1_structured(*, amount: Fraction = 0.5, finetune_steps: NonNegativeInt = 0,
                  rounds: PositiveInt = 1) -> Pruning:
    """Remove the channel groups (a channel with all that depends on it: batch norms, the
    next layers' inputs, the other side of a residual add) of smallest L1 norm; `amount` of
    every layer's channels, the classifier's outputs kept (Torch-Pruning)."""
    return _structured_entry("l1", amount, finetune_steps, rounds)


@PRUNERS.register("random_structured", structured=True)
def random_structured(*, amount: Fraction = 0.5, finetune_steps: NonNegativeInt = 0,
                      rounds: PositiveInt = 1) -> Pruning:
    """Remove randomly chosen channel groups: the control for structured criteria."""
    return _structured_entry("random", amount, finetune_steps, rounds)


@PRUNERS.register("activation_structured", structured=True)
def activation_structured(*, amount: Fraction = 0.5, calibration_batches: PositiveInt = 10,
                          batch_size: PositiveInt = 100, finetune_steps: NonNegativeInt = 0,
                          rounds: PositiveInt = 1) -> Pruning:
    """Remove the channel groups with the smallest mean |activation| where they are consumed,
    on training batches."""
    return _structured_entry("activation", amount, finetune_steps, rounds, calibration_batches,
                             batch_size)


@PRUNERS.register("taylor_structured", structured=True)
def taylor_structured(*, amount: Fraction = 0.5, calibration_batches: PositiveInt = 10,
                      batch_size: PositiveInt = 100, finetune_steps: NonNegativeInt = 0,
                      rounds: PositiveInt = 1) -> Pruning:
    """Remove the channel groups of smallest first-order Taylor importance |w x dL/dw|
    (Molchanov et al. 2019), the loss's gradients taken on training batches."""
    return _structured_entry("taylor", amount, finetune_steps, rounds, calibration_batches,
                             batch_size)


# ---------------------------------------------------------------- applying

make_permanent = structured.make_permanent


def _histogram(model: nn.Module) -> dict:
    w = torch.cat([getattr(m, a).detach().flatten().cpu()
                   for _, m, a in weights(model)]).abs().numpy()
    nz = w[w > 0]
    edges = np.logspace(-5, 1, 41)
    return {"edges": edges.tolist(), "counts": np.histogram(nz, edges)[0].tolist(),
            "zeros": int((w == 0).sum())}


# ---------------------------------------------------------------- checking

def _zeros(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Per pruned weight: (zero weights, all-zero output channels), to tell afterwards what
    the technique zeroed from what was zero already."""
    out = {}
    for name, m, a in weights(model):
        w = getattr(m, a).detach()
        out[name] = (int((w == 0).sum()), int((w.flatten(1).abs().sum(1) == 0).sum()))
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def check_unstructured(model: nn.Module, method: str, p: Pruning,
                       before: dict[str, tuple[int, int]], masked: set[str] | None = None
                       ) -> None:
    """The zeroed fraction of the targeted weights (all of them for global pruning, each layer
    otherwise) is `amount`, within torch's rounding of amount x n to whole weights each round.
    `masked`: the weights the method put masks on (a plugin written for `layers` masks no
    attention projection), else every one `weights` lists."""
    if masked is not None and not masked:
        raise TechniqueError(f"{method} put a mask on no weight of the model")
    ws = {name: getattr(m, a).detach() for name, m, a in weights(model)
          if masked is None or name in masked}
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


def check_structured(model: nn.Module, method: str, amount: float) -> float:
    """The share of the prunable layers' output channels (the classifier's excluded) now
    zero; far less than `amount` means layers the dependency graph could not reach, named
    here, since a silent skip reads as a model pruned far less than asked."""
    zeroed = structured.zeroed_channels(model)
    share = sum(z for z, _ in zeroed.values()) / max(1, sum(c for _, c in zeroed.values()))
    if share >= amount / 2:
        return share
    missed = {n: c for n, (z, c) in zeroed.items() if z == 0 and c > 1}
    # Torch-Pruning keeps int(channels x (1 - amount)) of a layer, and skips a layer it
    # would leave without one
    emptied = {n: c for n, c in missed.items() if int(c * (1 - amount)) < 1}
    if emptied:
        fewest = min(emptied.values())
        raise TechniqueError(
            f"{method} asked {_pct(amount)} of the output channels, zeroed {_pct(share)}: "
            f"{_listed([f'{n} ({c} channels)' for n, c in emptied.items()])} would keep no "
            f"channel at that amount, so Torch-Pruning leaves them whole; an amount below "
            f"{1 - 1 / fewest:.3g} (1 - 1/{fewest}) keeps one")
    raise TechniqueError(f"{method} asked {_pct(amount)} of the output channels, zeroed "
                         f"{_pct(share)}: Torch-Pruning's dependency graph did not reach "
                         f"{_listed(list(missed)) or 'the layers'}")


def _listed(names: list[str]) -> str:
    return ", ".join(names[:8]) + (" and more" if len(names) > 8 else "")


# slimmed and masked models differ only in float32 summation order (smaller matmuls), so their
# outputs agree far within 1e-4 of the output scale (the tests see < 1e-5); a slimming that
# removed the wrong channels differs by the size of the outputs themselves (11-27 seen)
SLIM_ATOL, SLIM_RTOL = 1e-4, 1e-4


def check_slimmed(slimmed: nn.Module, masked: nn.Module, x: torch.Tensor) -> float:
    """max |slimmed(x) - masked(x)|; raises TechniqueError past atol + rtol x max |masked(x)|."""
    with torch.no_grad():
        ref = masked(x)
        try:
            out = slimmed(x)
        except Exception as exc:  # noqa: BLE001 - e.g. a matmul of shapes that no longer fit
            raise TechniqueError(
                f"the slimmed model (channels removed by Torch-Pruning) does not run "
                f"({first_line(exc)}): Torch-Pruning did not follow every use of the removed "
                f"channels, as {structured.OUTSIDE_ITS_LAYER} is not followed") from None
        diff = float((out - ref).abs().max())
    tol = SLIM_ATOL + SLIM_RTOL * float(ref.abs().max())
    if not diff <= tol:  # NaN fails too
        raise TechniqueError(
            f"the slimmed model (channels removed by Torch-Pruning) differs from the masked model"
            f" by up to {diff:.3g} on {len(x)} test inputs, past the tolerance {tol:.3g}"
            f" ({SLIM_ATOL:g} + {SLIM_RTOL:g} x max |masked output|): it does not compute what the"
            " pruned model computes, so its size and latency would describe another model"
            + _likely_causes(masked))
    return diff


CHANNEL_NORMS = (nn.LayerNorm, nn.GroupNorm, getattr(nn, "RMSNorm", nn.LayerNorm))  # 2.4+


def _likely_causes(model: nn.Module) -> str:
    """What in a model masks cannot stand for: a channel masked to zero still counts in a
    normalization over channels (a removed one does not), and a bare parameter is slimmed
    by Torch-Pruning but reached by no mask (masks are on layers' weights and biases)."""
    norms = [n for n, m in model.named_modules() if isinstance(m, CHANNEL_NORMS)]
    # a layer's own tensors are weight / bias (a GRU's weight_ih_l0 ...): the rest are bare
    bare = [n for n, _ in model.named_parameters()
            if not n.rsplit(".", 1)[-1].startswith(("weight", "bias"))]
    causes = ([f"normalization over channels ({_listed(norms)}), whose statistics count a "
               "masked channel as a zero and a removed one not at all"] if norms else []) + (
        [f"parameters outside its layers ({_listed(bare)}), which Torch-Pruning slims and no "
         "mask reaches"] if bare else [])
    return f". Likely causes: {'; '.join(causes)}" if causes else ""


# ---------------------------------------------------------------- applying

@dataclass
class Pruned:
    info: dict  # metrics: the amount (and structured, the channels removed)
    finetune: object | None  # the last fine-tuning outcome (train.Outcome)
    histograms: dict  # weight magnitudes before / after
    slimmed: nn.Module | None  # structured pruning: the channels physically removed
    finetune_seconds: float = 0.0  # training seconds of every fine-tuning round
    slimmed_diff: float | None = None  # how far the slimmed model's outputs are from the masked
    finetuned_steps: int = 0  # fine-tuning steps of every round


def apply(spec: Choice | dict, model: nn.Module, data: Data, finetune) -> Pruned:
    """Prune in `rounds` (each followed by its share of fine-tuning), make it permanent, check
    that the asked sparsity was reached, and for structured pruning build the slimmed model and
    check that it computes what the masked model computes."""
    spec = as_choice("prune", spec)
    p: Pruning = spec.build()
    if p.structured:
        structurally_prunable(model, spec.name)
    before, zeros_before = _histogram(model), _zeros(model)
    example = data.x_test[:1]
    calib = _calibration(p, data) if p.structured else None  # the same batches every round
    outcome, seconds, chosen, done = None, 0.0, [], 0
    for r in range(1, p.rounds + 1):
        # cumulative sparsity after round r, geometric so each round removes the same share
        target = 1 - (1 - p.amount) ** (r / p.rounds)
        previous = 1 - (1 - p.amount) ** ((r - 1) / p.rounds)
        if p.structured:  # chosen on a copy by Torch-Pruning, masked here
            chosen = structured.choose(model, p.criterion, target, example, calib)
            structured.mask(model, chosen, example)
        else:
            p.mask(model, 1 - (1 - target) / (1 - previous), data)
            _masks_follow_attention(model)
        steps = p.finetune_steps // p.rounds
        if steps > 0:
            outcome = finetune(model, steps, f"finetune{r}" if p.rounds > 1 else "finetune")
            seconds += outcome.train_seconds
            done += outcome.steps
    masked = {n for n, m, w in weights(model) if hasattr(m, f"{w}_mask")}
    make_permanent(model)
    info: dict = {"prune_amount": p.amount}
    slimmed, diff = None, None
    if p.structured:
        share = check_structured(model, spec.name, p.amount)
        slimmed = structured.slim(model, chosen, example)
        diff = check_slimmed(slimmed, copy.deepcopy(model).cpu().eval(), data.x_test[:256].cpu())
        # slimmed and checked on the CPU; it ships where the masked model runs (a CUDA
        # cell's on the GPU, timed there beside its baseline)
        slimmed = slimmed.to(next(model.parameters()).device)
        info.update(channels_removed=share)
    else:
        check_unstructured(model, spec.name, p, zeros_before, masked)
    return Pruned(info, outcome, {"before": before, "after": _histogram(model)}, slimmed,
                  seconds, diff, done)


def _masks_follow_attention(model: nn.Module) -> None:
    """nn.MultiheadAttention reads its out_proj's weight without calling out_proj, so
    torch's pruning hook there (weight = weight_orig x mask, made anew each call) never ran:
    fine-tuning trained a stale weight and failed on its second backward. The attention
    runs out_proj's pruning hooks itself before each call."""
    for m in model.modules():
        if (isinstance(m, nn.MultiheadAttention)
                and _out_proj_masks not in m._forward_pre_hooks.values()):
            m.register_forward_pre_hook(_out_proj_masks)


def _out_proj_masks(mha: nn.MultiheadAttention, inputs) -> None:
    for hook in list(mha.out_proj._forward_pre_hooks.values()):
        if isinstance(hook, tprune.BasePruningMethod):
            hook(mha.out_proj, inputs)


def structurally_prunable(model: nn.Module, method: str) -> None:
    """nn.MultiheadAttention keeps its query/key/value projections in one bare parameter,
    which the masks (weights and biases of layers) do not reach: the slimmed model then
    differed from the masked one and the cell failed on a number that named no cause. Checked
    where the network is built, before it trains, and again where it is pruned."""
    found = [n or "the model" for n, m in model.named_modules()
             if isinstance(m, nn.MultiheadAttention)]
    if found:
        raise TechniqueError(
            f"{method}: nn.MultiheadAttention ({_listed(found)}) cannot lose channels here: its "
            "query/key/value projections are one parameter (in_proj_weight), not layers. "
            "Prune it unstructured, or write its projections as nn.Linear layers and declare "
            "its heads (head_projections(), docs/how-to/your-model-and-data.md)")


def _calibration(p: Pruning, data: Data) -> structured.Calibration:
    """Training batches for a criterion that needs data (activation, Taylor); none for L1
    and random, so a streamed split is not decoded (nor its workers started) for nothing."""
    n_batches, size = p.calibration
    loss = tasks.of(data).loss
    if not n_batches * size:
        return structured.Calibration([], loss)
    x, y = train_sample(data, n_batches * size)
    return structured.Calibration([(x[i:i + size], y[i:i + size])
                                   for i in range(0, len(x), size)], loss)
