"""The user's own architecture: the same function builds it for training (train.py) and for
modelopt (the suite names it by import path, `my_model:small_cnn`)."""

from torch import nn


def small_cnn(input_shape: tuple, num_outputs: int, /, width: int = 16) -> nn.Module:
    """Three conv-batchnorm-relu blocks, global pooling, a linear head."""
    c = input_shape[0]
    blocks, prev = [], c
    for i, w in enumerate((width, width * 2, width * 2)):
        blocks += [nn.Conv2d(prev, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
        blocks += [nn.MaxPool2d(2)] if i < 2 else []
        prev = w
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(prev, num_outputs))
