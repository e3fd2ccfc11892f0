"""A pruning method: zero the smallest weights of every output row (each neuron keeps its
largest inputs), through torch.nn.utils.prune's masks, as the built-in methods do. The cell
prunes, fine-tunes with the masks held, checks that the asked sparsity was reached, and
reports accuracy against sparsity beside the built-in methods. One module:

    prune: {name: row_magnitude, amount: 0.5, finetune_steps: 100}
"""

import torch
import torch.nn.utils.prune as tprune
from torch import nn

from modelopt.spec.registries import PRUNERS
from modelopt.spec.registry import Fraction, NonNegativeInt, PositiveInt
from modelopt.techniques.prune import Pruning, layers


def row_mask(weight: torch.Tensor, amount: float) -> torch.Tensor:
    """1 where a weight is among the largest (1 - amount) of its output row, else 0."""
    rows = weight.detach().abs().flatten(1)
    cut = int(round(amount * rows.shape[1]))
    if cut == 0:
        return torch.ones_like(weight)
    threshold = rows.kthvalue(cut, dim=1, keepdim=True).values
    return (rows > threshold).float().view_as(weight)


@PRUNERS.register("row_magnitude")
def row_magnitude(*, amount: Fraction = 0.5, finetune_steps: NonNegativeInt = 0,
                  rounds: PositiveInt = 1) -> Pruning:
    """Zero the smallest-magnitude weights of every output row (per neuron)."""
    def mask(model: nn.Module, amount: float, data) -> None:  # one round's masks
        for _, layer in layers(model):
            tprune.custom_from_mask(layer, "weight", row_mask(layer.weight, amount))
    return Pruning(amount, finetune_steps, rounds, mask)
