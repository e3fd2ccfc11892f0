"""Test-only techniques, loaded through MODELOPT_PLUGINS like a user's own module."""

import os
import time

from torch import nn

from modelopt.models import MODELS


class _Crash(nn.Linear):
    def __init__(self, n_in, n_out, how):
        super().__init__(n_in, n_out)
        self.how = how

    def forward(self, x):
        if self.training:
            if self.how == "exit":
                os._exit(3)
            if self.how == "raise":
                raise RuntimeError("deliberate failure in forward")
            if self.how == "sleep":
                time.sleep(60)
        return super().forward(x)


@MODELS.register("test_crash", accepts=("signal", "vector", "image"))
def test_crash(input_shape: tuple, num_outputs: int, /, how: str = "raise") -> nn.Module:
    """A model that fails on purpose in training: raise, exit (os._exit) or sleep."""
    import math

    return nn.Sequential(nn.Flatten(), _Crash(math.prod(input_shape), num_outputs, how))
