"""A quantizer: ship the model in bfloat16 (half the bytes; CPUs with AVX512-BF16 or AMX run
it natively, others convert on the fly). One module, nothing else edited:

    quantize: {name: bf16}
"""

import copy

import torch
from torch import nn

from modelopt.spec.registries import QUANTIZERS
from modelopt.techniques.quantize import Quantizer


class BF16(nn.Module):
    """The network in bfloat16; float32 in and out, as the float model's callers expect."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(torch.bfloat16)).float()


@QUANTIZERS.register("bf16")
def bf16() -> Quantizer:
    """Cast every weight to bfloat16 for deployment (the trained model is left as it was)."""
    def convert(model: nn.Module, inputs: torch.Tensor) -> tuple[nn.Module, dict]:
        # inputs: training inputs (Quantizer.calibration of them), for calibrating quantizers
        return BF16(copy.deepcopy(model).cpu().eval()).eval(), {"quantized": True}

    return Quantizer(convert=convert)
