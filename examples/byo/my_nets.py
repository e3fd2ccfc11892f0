"""This example's own model code: a small residual network, registered under a name, and a
plain factory the suite names by its import path. Nothing here edits modelopt."""

from torch import nn

from modelopt.spec.registries import MODELS


class Block(nn.Module):
    """conv-bn-relu-conv-bn plus the input: the residual add a plain Sequential cannot express."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                  nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c))

    def forward(self, x):
        return nn.functional.relu(x + self.body(x))


class SmallResNet(nn.Module):
    def __init__(self, channels: int, classes: int, width: int, blocks: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(*[Block(width) for _ in range(blocks)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


# the signature modelopt calls: (input shape, number of outputs, /, your parameters...);
# `accepts` says which inputs it takes (image: (C, H, W))
@MODELS.register("small_resnet", accepts=("image",))
def small_resnet(input_shape: tuple, num_outputs: int, /, width: int = 16,
                 blocks: int = 2) -> nn.Module:
    """A residual CNN: a stem, `blocks` residual blocks of `width` channels, a linear head."""
    return SmallResNet(input_shape[0], num_outputs, width, blocks)


def tabular_net(input_shape: tuple, num_outputs: int, /, hidden: int = 32) -> nn.Module:
    """Named by import path in the suite (my_nets:tabular_net): no registration needed."""
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], hidden), nn.ReLU(),
                         nn.Linear(hidden, num_outputs))
