"""Attention as its math, for the exporter and the flop counter.

- In eval mode without gradients, torch runs nn.MultiheadAttention (and
  nn.TransformerEncoderLayer) on a fused fast path, `aten::_native_multi_head_attention`,
  which has no ONNX symbolic (the export fails) and no FLOP formula (its projections go
  uncounted). `unfused()` turns the fast path off: the same model runs the operators it is
  made of.
- On the CPU, scaled_dot_product_attention runs `_scaled_dot_product_flash_attention_for_cpu`,
  for which torch.utils.flop_counter (torch 2.14) has no formula while it has the GPU
  kernels': q kᵀ and the weights times v went uncounted. `flop_formulas()` counts it with the
  GPU kernels' formula, so a model's FLOPs are the same wherever it is counted (an upper
  bound for causal or masked attention, torch's convention)."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def unfused():
    """The fast path off for the block, restored after."""
    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(was)


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
                    ) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_formulas() -> dict:
    """FlopCounterMode's `custom_mapping`: the CPU kernel counted as the GPU kernels are."""
    return {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
