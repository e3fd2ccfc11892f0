"""A loss: focal loss (Lin et al., 2017), cross-entropy that down-weights the examples a
model already gets right. Registered for the task whose targets it takes; a suite names it
beside the default:

    loss: [cross_entropy, {name: focal, gamma: 2.0}]
"""

import torch
import torch.nn.functional as F
from torch import nn

from modelopt.spec.registries import LOSSES
from modelopt.spec.registry import NonNegative


class FocalLoss(nn.Module):
    def __init__(self, gamma: float):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
        return (-(1 - log_p.exp()) ** self.gamma * log_p).mean()


@LOSSES.register("focal", task="classification")
def focal(*, gamma: NonNegative = 2.0) -> nn.Module:
    """Focal loss: cross-entropy scaled by (1 - p)^gamma of the true class (gamma 0: plain)."""
    return FocalLoss(gamma)
