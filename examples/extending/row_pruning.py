"""A pruning method: zero the weights that are smallest *relative to their own output row*
(each neuron judged at its own scale, so no neuron loses all its inputs to a larger one's),
through torch.nn.utils.prune's masks, as the built-in methods do. The cell prunes,
fine-tunes with the masks held, checks that the asked sparsity was reached, and reports
accuracy against sparsity beside the built-in methods. One module:

    prune: {name: row_magnitude, amount: 0.5, finetune_steps: 100}
"""

import torch
import torch.nn.utils.prune as tprune
from torch import nn

from modelopt.spec.registries import PRUNERS
from modelopt.spec.registry import Fraction, NonNegativeInt, PositiveInt
from modelopt.techniques.prune import Pruning, weights


def row_mask(weight: torch.Tensor, amount: float) -> torch.Tensor:
    """0 for the round(amount x size) weights smallest against their row's largest, else 1:
    the layer's exact count, which the cell checks (a fixed count per row would round it)."""
    w = weight.detach().abs().flatten(1)
    scores = (w / w.amax(1, keepdim=True).clamp(min=1e-12)).flatten()
    mask = torch.ones_like(scores)
    mask[scores.argsort()[:int(round(amount * scores.numel()))]] = 0
    return mask.view_as(weight)


@PRUNERS.register("row_magnitude")
def row_magnitude(*, amount: Fraction = 0.5, finetune_steps: NonNegativeInt = 0,
                  rounds: PositiveInt = 1) -> Pruning:
    """Zero the weights smallest relative to their output row's largest (per neuron)."""
    def mask(model: nn.Module, amount: float, data) -> None:  # one round's masks
        for _, module, name in weights(model):  # name: "weight", or attention's in_proj_weight
            tprune.custom_from_mask(module, name, row_mask(getattr(module, name), amount))
    return Pruning(amount, finetune_steps, rounds, mask)
