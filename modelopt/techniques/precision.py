"""Half precision as a way to ship a trained model (`quantize: bf16`, `quantize: fp16`): its
weights and arithmetic in bfloat16 or float16, inputs cast on the way in and outputs given
back in float32. It is how a model trained under autocast usually ships; whether it is
faster depends on the hardware's half kernels (a GPU's; on a CPU, AMX-BF16 or AVX512-BF16
for bfloat16, while float16 there often runs slower than float32), so it is measured."""

from __future__ import annotations

import torch
from torch import nn

from modelopt.spec.registries import QUANTIZERS
from modelopt.techniques.quantize import Intent, Quantizer, float_copy

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class HalfPrecision(nn.Module):
    """A float model cast to `dtype` (its parameters and buffers): floating inputs are cast
    to it, token ids pass as they are, and the outputs come back in float32, so metrics and
    the runtimes' output checks read them as any model's."""

    def __init__(self, model: nn.Module, dtype: str):
        super().__init__()
        self.model = model.to(DTYPES[dtype])
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            x = x.to(DTYPES[self.dtype])
        return self.model(x).float()


def _cast(model: nn.Module, dtype: str) -> tuple[nn.Module, dict]:
    """A copy of the trained model (left as it was) in `dtype`, on the model's own device."""
    shipped = HalfPrecision(float_copy(model, on_cpu=False), dtype)
    return shipped, {"quantized": True, "quantized_with": f"torch ({DTYPES[dtype]})"}


@QUANTIZERS.register("bf16")
def bf16() -> Quantizer:
    """Ship in bfloat16: weights and arithmetic in bf16 (float32's range, 8 bits of
    mantissa), inputs cast, outputs in float32; on the trained model's device. Fast where
    the hardware has bf16 kernels (GPUs; CPUs with AMX-BF16 or AVX512-BF16)."""
    return Quantizer(convert=lambda model, x: _cast(model, "bf16"), intent=Intent("bf16"))


@QUANTIZERS.register("fp16")
def fp16() -> Quantizer:
    """Ship in float16: weights and arithmetic in fp16 (11 bits of mantissa, range ±65504),
    inputs cast, outputs in float32; on the trained model's device. Fast on GPUs; on most
    CPUs slower than float32."""
    return Quantizer(convert=lambda model, x: _cast(model, "fp16"), intent=Intent("fp16"))
