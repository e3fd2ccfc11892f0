"""A backend that trains the model through torch.compile: one module, nothing else edited.

    MODELOPT_PLUGINS=compiled_backend modelopt run suite.yaml   # with this folder on PYTHONPATH

then `backend: {name: compiled, mode: default}` in a suite.
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from modelopt.run.backends import Backend
from modelopt.spec.registries import BACKENDS
from modelopt.spec.registry import PositiveInt


@dataclass(frozen=True)
class Compiled(Backend):
    mode: str = "default"

    def wrap(self, model: nn.Module) -> nn.Module:
        # training calls the compiled module; evaluation and the saved model stay the plain
        # network, so accuracy, counts and latency describe what the cell trained
        return torch.compile(model, mode=self.mode)


@BACKENDS.register("compiled")
def compiled(*, threads: PositiveInt = 1,
             mode: Literal["default", "reduce-overhead", "max-autotune"] = "default") -> Compiled:
    """Train on the CPU through torch.compile (inductor)."""
    return Compiled("compiled", "cpu", threads, mode=mode)
