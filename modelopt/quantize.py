"""Quantization (torch.ao dynamic int8) and weight clipping."""

from __future__ import annotations

import copy
import warnings
from typing import Literal

import torch
from torch import nn

from modelopt.prune import TechniqueError
from modelopt.registry import Registry

# flags: stage ("deploy": converts the trained model; "train": a hook during training)
QUANTIZERS = Registry("quantize")


@QUANTIZERS.register("dynamic_int8", stage="deploy")
def dynamic_int8(*, layers: Literal["linear", "linear_gru"] = "linear_gru") -> dict:
    """torch.ao dynamic quantization: int8 weights, activations quantized on the fly (CPU only)."""
    return {"layers": layers}


@QUANTIZERS.register("weight_clip", stage="train")
def weight_clip(*, clip: float = 0.5) -> dict:
    """Clip every weight to [-clip, clip] after each optimizer step."""
    if clip <= 0:
        raise ValueError(f"weight_clip clip must be > 0, got {clip}")
    return {"clip": clip}


def train_hooks(spec: dict | None) -> list:
    if not spec or QUANTIZERS.get(spec["name"]).flags["stage"] != "train":
        return []
    c = QUANTIZERS.build(spec["name"], **{k: v for k, v in spec.items() if k != "name"})["clip"]

    def clip(model: nn.Module) -> None:
        with torch.no_grad():
            for p in model.parameters():
                p.clamp_(-c, c)
    return [clip]


def apply(spec: dict | None, model: nn.Module, data, backend) -> tuple[nn.Module, dict]:
    """The model to deploy: a quantized copy for deploy-stage techniques, else the model."""
    if not spec or QUANTIZERS.get(spec["name"]).flags["stage"] != "deploy":
        return model, {}
    from torch.ao.nn.quantized import dynamic as nnqd
    from torch.ao.quantization import quantize_dynamic

    opts = QUANTIZERS.build(spec["name"], **{k: v for k, v in spec.items() if k != "name"})
    types = {nn.Linear} | ({nn.GRU} if opts["layers"] == "linear_gru" else set())
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
            raise TechniqueError(f"{spec['name']} quantized {got} of the model's {had} "
                                 f"{float_type.__name__} layers")
    if n == 0:
        asked = " and ".join(t.__name__ for t in sorted(types, key=lambda t: t.__name__))
        present = sorted({type(m).__name__ for m in model.modules() if not list(m.children())})
        raise TechniqueError(
            f"{spec['name']} (layers: {opts['layers']}) quantizes {asked} layers, and the model"
            f" ({type(model).__name__}) has none (quantize_dynamic matches exact types, not"
            f" subclasses): its layers are {', '.join(present)}. Dynamic int8 has no Conv"
            " kernels; use a model with Linear layers or no quantize")
    return q, {"quantized": True, "quantized_layers": n,
               "quantized_engine": torch.backends.quantized.engine}
