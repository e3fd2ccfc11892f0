"""Counts of the models a cell ships: parameters (nonzero, and above a stated threshold),
size on disk, FLOPs. Static figures: they do not depend on the machine's speed."""

from __future__ import annotations

import copy

import torch
from torch import nn

from modelopt.run import backends, measure

# L1 drives weights towards zero, but an optimizer keeps them hovering around it rather than
# on it: params_above_1e-3 counts the weights that matter at this (stated) threshold.
SMALL_WEIGHT = 1e-3


def static_metrics(deploy: nn.Module, fp32: nn.Module, example: torch.Tensor) -> dict:
    """Counts of the deployed model. Parameters and FLOPs are its float version's (on the
    CPU): an int8 or half model holds the same weights in fewer bits (the zeros rounding
    makes are not pruning's), FlopCounterMode has no formulas for quantized kernels, and
    an int8 model performs the same multiply-adds. Its size is its own."""
    params, nonzero = measure.count_params(fp32)
    _, above = measure.count_params(fp32, threshold=SMALL_WEIGHT)
    counted = copy.deepcopy(fp32).cpu()
    return {"params": params, "params_nonzero": nonzero, "sparsity": 1 - nonzero / max(params, 1),
            "params_above_1e-3": above,
            "size_bytes": measure.size_bytes(deploy),
            "size_bytes_compressed": measure.size_bytes_compressed(deploy),
            "flops": measure.flops(counted, example),
            "flops_nonzero": measure.flops_nonzero(counted, example)}


def model_counts(model: nn.Module, example: torch.Tensor) -> dict:
    """Counts of a model other than the shipped one (the physically smaller model structured
    pruning built)."""
    params, _ = measure.count_params(model)
    example = example.to(backends.on_device_of(model).device)  # a CUDA cell's is on the GPU
    return {"params": params, "flops": measure.flops(model, example),
            "size_bytes": measure.size_bytes(model)}
