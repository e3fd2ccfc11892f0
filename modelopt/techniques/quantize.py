"""Quantization (torch.ao dynamic int8) and weight clipping: each a Quantizer object."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
from torch import nn

from modelopt.spec.registries import QUANTIZERS
from modelopt.spec.registry import Positive
from modelopt.techniques.errors import TechniqueError

Hook = Callable[[nn.Module], None]


@dataclass(frozen=True)
class Quantizer:
    """What a quantize technique does: hooks after each optimizer step while training, and/or
    `convert`, which turns the trained model into the one that ships (a copy; the trained
    model is left as it was) and says what it did."""

    after_step: list[Hook] = field(default_factory=list)
    convert: Callable[[nn.Module], tuple[nn.Module, dict]] | None = None


@QUANTIZERS.register("dynamic_int8")
def dynamic_int8(*, layers: Literal["linear", "linear_gru"] = "linear_gru") -> Quantizer:
    """torch.ao dynamic quantization: int8 weights, activations quantized on the fly (CPU only)."""
    return Quantizer(convert=lambda model: _dynamic_int8(model, layers))


@QUANTIZERS.register("weight_clip")
def weight_clip(*, clip: Positive = 0.5) -> Quantizer:
    """Clip every weight to [-clip, clip] after each optimizer step."""
    def clamp(model: nn.Module) -> None:
        with torch.no_grad():
            for p in model.parameters():
                p.clamp_(-clip, clip)
    return Quantizer(after_step=[clamp])


def _dynamic_int8(model: nn.Module, layers: str) -> tuple[nn.Module, dict]:
    from torch.ao.nn.quantized import dynamic as nnqd
    from torch.ao.quantization import quantize_dynamic

    types = {nn.Linear} | ({nn.GRU} if layers == "linear_gru" else set())
    # quantized kernels exist for the CPU only: the deployed copy is measured there
    fp32 = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        # torch 2.14 warns once per layer that quantized tensors are deprecated (the README
        # says so once); the warning would flood a suite's progress output
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor",
                                category=UserWarning)
        q = quantize_dynamic(fp32, types, dtype=torch.qint8)
    # quantize_dynamic leaves a model without those layer types as it was, with no word: an
    # "int8" cell would then measure the float model
    n = sum(isinstance(m, (nnqd.Linear, nnqd.GRU)) for m in q.modules())
    for float_type, int8_type in ((nn.Linear, nnqd.Linear), (nn.GRU, nnqd.GRU)):
        had = sum(type(m) is float_type for m in fp32.modules())
        got = sum(isinstance(m, int8_type) for m in q.modules())
        if float_type in types and got < had:
            raise TechniqueError(f"dynamic_int8 quantized {got} of the model's {had} "
                                 f"{float_type.__name__} layers")
    if n == 0:
        asked = " and ".join(t.__name__ for t in sorted(types, key=lambda t: t.__name__))
        present = sorted({type(m).__name__ for m in model.modules() if not list(m.children())})
        raise TechniqueError(
            f"dynamic_int8 (layers: {layers}) quantizes {asked} layers, and the model"
            f" ({type(model).__name__}) has none (quantize_dynamic matches exact types, not"
            f" subclasses): its layers are {', '.join(present)}. Dynamic int8 has no Conv"
            " kernels; use a model with Linear layers or no quantize")
    return q, {"quantized": True, "quantized_layers": n,
               "quantized_engine": torch.backends.quantized.engine}
