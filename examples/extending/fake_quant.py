"""A quantizer: what N-bit weights would do to accuracy, before any kernel runs them. Every
Linear and convolution weight is rounded to 2**(bits-1) - 1 symmetric levels per output
channel and kept in float, so the model runs as fast as before; only its accuracy and its
zipped size tell. One module, nothing else edited:

    quantize: {name: fake_quant, bits: 4}
"""

import copy
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from modelopt.spec.registries import QUANTIZERS
from modelopt.techniques.quantize import Quantizer

WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


def rounded(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """`weight` on a grid of 2 * levels + 1 values per output channel (row), zero included."""
    levels = 2 ** (bits - 1) - 1
    shape = (-1,) + (1,) * (weight.dim() - 1)
    scale = (weight.abs().flatten(1).amax(1).clamp(min=1e-12) / levels).view(shape)
    return torch.round(weight / scale).clamp(-levels, levels) * scale


@QUANTIZERS.register("fake_quant")
def fake_quant(*, bits: Annotated[int, Field(ge=2, le=8)] = 4) -> Quantizer:
    """Round every Linear and convolution weight to `bits`-bit symmetric levels per output
    channel, kept in float (the trained model is left as it was)."""
    def convert(model: nn.Module, inputs: torch.Tensor) -> tuple[nn.Module, dict]:
        # inputs: training inputs (Quantizer.calibration of them), for calibrating quantizers
        shipped = copy.deepcopy(model).eval()
        layers = [m for m in shipped.modules() if isinstance(m, WEIGHTED)]
        with torch.no_grad():
            for m in layers:
                m.weight.copy_(rounded(m.weight, bits))
        return shipped, {"quantized": True, "quantized_layers": len(layers),
                         "quantized_with": f"fake_quant ({bits} bits)"}

    return Quantizer(convert=convert)
