"""An optimizer: NAdam, a function of the parameter groups. `@optimizer` registers it under a
name and gives it `weight_decay` and `decay_all`, with the groups that keep biases and norm
scales undecayed; a suite names it as a built-in:

    optimizer: [adam, {name: nadam, lr: 1.0e-3}]

Without the decorator, the same function is named by its import path
(`optimizer: {name: "nadam:nadam"}`, this file on PYTHONPATH or beside the suite).
"""

import torch

from modelopt.spec.registry import NonNegative, Positive
from modelopt.techniques.optim import optimizer


@optimizer("nadam")
def nadam(params, /, lr: Positive = 2e-3, momentum_decay: NonNegative = 4e-3):
    """NAdam (Dozat, 2016): Adam with Nesterov momentum."""
    return torch.optim.NAdam(params, lr=lr, momentum_decay=momentum_decay)
