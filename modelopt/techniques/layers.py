"""Which modules are weighted layers, for the techniques that prune, quantize or count them:
torch's Linear and convolutions, and transformers' Conv1D, a Linear whose weight is stored
transposed, from which GPT-2 and its kin build every block (their blocks were left out of
pruning, of FLOPs' density and of int8's count of float layers)."""

from __future__ import annotations

from torch import nn

TORCH = (nn.Linear, nn.Conv1d, nn.Conv2d)


def hf_conv1d(m: nn.Module) -> bool:
    """transformers.pytorch_utils.Conv1D, told by type without importing transformers."""
    t = type(m)
    return t.__name__ == "Conv1D" and t.__module__.startswith("transformers")


def weighted(m: nn.Module) -> bool:
    """A Linear, Conv1d/2d or transformers' Conv1D: one weight matrix or kernel."""
    return isinstance(m, TORCH) or hf_conv1d(m)


# what Torch-Pruning removes channels of: a Linear and a convolution of any dimension
CHANNELLED = (nn.Linear, nn.modules.conv._ConvNd)


def tables(model: nn.Module) -> set[int]:
    """The ids of the model's embedding tables: a token's vectors, never decayed nor pruned
    (an output layer tied to one shares its id)."""
    return {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}

