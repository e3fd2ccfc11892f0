"""Built-in models: linear, mlp, cnn (1-D), gru, cnn2d; width, separable, dropout, batchnorm, activation."""

from __future__ import annotations

import json
import math
from typing import Literal

import torch
from torch import nn

from modelopt.spec.cell import Choice, chosen
from modelopt.spec.registries import MODELS
from modelopt.spec.registry import Fraction, NonNegativeInt, Positive, PositiveInt
from modelopt.techniques.errors import TechniqueError, first_line

Activation = Literal["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu"]


def make_activation(name: str, negative_slope: float = 0.01) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope)
    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU,
            "silu": nn.SiLU}[name]()


def _scaled(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


def _flat_size(layers: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(layers(torch.zeros(1, *input_shape)).numel())


class AsSignal(nn.Module):
    """(N, F) vectors -> (N, 1, F), so 1-D models also take tabular data."""

    def forward(self, x):
        return x.unsqueeze(1) if x.dim() == 2 else x


@MODELS.register("linear", accepts=("signal", "vector", "image"))
def linear(input_shape: tuple, num_outputs: int, /) -> nn.Module:
    """Logistic / linear regression on the flattened input."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs))


@MODELS.register("mlp", accepts=("signal", "vector", "image"))
def mlp(input_shape: tuple, num_outputs: int, /, hidden: PositiveInt = 100, depth: NonNegativeInt = 2,
        width: Positive = 1.0, dropout: Fraction = 0.0, batchnorm: bool = False,
        activation: Activation = "relu", negative_slope: float = 0.01) -> nn.Module:
    """Fully connected net: `depth` hidden layers of `hidden` x `width` units."""
    h = _scaled(hidden, width)
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(input_shape)
    for _ in range(depth):
        layers.append(nn.Linear(fan_in, h))
        if batchnorm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(make_activation(activation, negative_slope))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        fan_in = h
    layers.append(nn.Linear(fan_in, num_outputs))
    return nn.Sequential(*layers)


def _conv(dim: int, c_in: int, c_out: int, k: int, stride: int, padding: int,
          separable: bool) -> list[nn.Module]:
    conv = nn.Conv1d if dim == 1 else nn.Conv2d
    if not separable:
        return [conv(c_in, c_out, k, stride=stride, padding=padding)]
    # depthwise (one filter per input channel) then pointwise 1x1 mixing
    return [conv(c_in, c_in, k, stride=stride, padding=padding, groups=c_in),
            conv(c_in, c_out, 1)]


def _block(dim, c_in, c_out, k, stride, padding, separable, batchnorm, activation, slope):
    layers = _conv(dim, c_in, c_out, k, stride, padding, separable)
    if batchnorm:
        layers.append((nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d)(c_out))
    layers.append(make_activation(activation, slope))
    return layers


@MODELS.register("cnn", accepts=("signal", "vector"))
def cnn(input_shape: tuple, num_outputs: int, /, channels: PositiveInt = 25, kernel_size: PositiveInt = 5,
        width: Positive = 1.0, separable: bool = False, dropout: Fraction = 0.0,
        batchnorm: bool = False, activation: Activation = "relu",
        negative_slope: float = 0.01) -> nn.Module:
    """1-D conv net in the MNIST-1D paper's shape: 3 strided conv layers and a linear head."""
    shape = input_shape if len(input_shape) == 2 else (1, *input_shape)
    c = _scaled(channels, width)
    layers: list[nn.Module] = [AsSignal()]
    layers += _block(1, shape[0], c, kernel_size, 2, 1, False, batchnorm, activation,
                     negative_slope)  # the first layer sees one channel: nothing to separate
    for _ in range(2):
        layers += _block(1, c, c, 3, 2, 1, separable, batchnorm, activation, negative_slope)
    layers.append(nn.Flatten())
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    body = nn.Sequential(*layers)
    return nn.Sequential(*layers, nn.Linear(_flat_size(body, input_shape), num_outputs))


class GRUNet(nn.Module):
    """GRU over the signal's time steps; every step's state feeds the linear head (as in MNIST-1D)."""

    def __init__(self, input_shape: tuple, num_outputs: int, hidden: int, bidirectional: bool):
        super().__init__()
        channels, steps = (input_shape if len(input_shape) == 2 else (1, input_shape[0]))
        self.gru = nn.GRU(channels, hidden, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1) * steps, num_outputs)

    def forward(self, x):
        x = x.unsqueeze(1) if x.dim() == 2 else x
        out, _ = self.gru(x.transpose(1, 2))  # (N, C, L) -> (N, L, C)
        return self.head(out.flatten(1))


@MODELS.register("gru", accepts=("signal", "vector"), channels=False)
def gru(input_shape: tuple, num_outputs: int, /, hidden: PositiveInt = 6,
        bidirectional: bool = True) -> nn.Module:
    """Recurrent net (the MNIST-1D paper's GRU: 6 hidden units, bidirectional)."""
    return GRUNet(input_shape, num_outputs, hidden, bidirectional)


@MODELS.register("cnn2d", accepts=("image",))
def cnn2d(input_shape: tuple, num_outputs: int, /, channels: PositiveInt = 16, kernel_size: PositiveInt = 3,
          width: Positive = 1.0, separable: bool = False, dropout: Fraction = 0.0,
          batchnorm: bool = False, activation: Activation = "relu",
          negative_slope: float = 0.01) -> nn.Module:
    """2-D conv net for images: two conv blocks (channels, 2 x channels), each max-pooled."""
    c = _scaled(channels, width)
    pad = kernel_size // 2
    layers: list[nn.Module] = []
    layers += _block(2, input_shape[0], c, kernel_size, 1, pad, False, batchnorm, activation,
                     negative_slope)
    layers.append(nn.MaxPool2d(2))
    layers += _block(2, c, 2 * c, kernel_size, 1, pad, separable, batchnorm, activation,
                     negative_slope)
    layers += [nn.MaxPool2d(2), nn.Flatten()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    body = nn.Sequential(*layers)
    return nn.Sequential(*layers, nn.Linear(_flat_size(body, input_shape), num_outputs))


def build(spec: Choice | dict, input_shape: tuple, num_outputs: int,
          trained: bool = True) -> nn.Module:
    """The one place a cell's network is made (training, ranks, teachers, rebuilds): the
    architecture its spec names, with the trained weights its `weights:` names loaded
    (`trained=False`: the architecture alone, for a rebuild that loads saved weights)."""
    from modelopt.techniques import weights

    choice = chosen("model", spec)
    net = choice.build(input_shape, num_outputs)
    spec = choice.params.get("weights")
    if trained and spec:
        # a torchvision state_dict against our default small-input stem is the common misfit
        hint = ("a standard torchvision model's weights: say small_input: false"
                if choice.params.get("small_input") else "")
        weights.load_into(net, weights.read(spec), spec["path"], hint, num_outputs)
    return net


def check_forward(net: nn.Module, x: torch.Tensor, name: str) -> None:
    """A model returns one tensor whose first dimension is the batch: what every task
    scores and every runtime ships. A dict or a tuple (logits and features) failed deep in
    training or evaluation (`'dict' object has no attribute 'float'`); said here, on three
    samples (two would pass a two-class model's scores without their batch), before the
    cell trains."""
    if not len(x):  # no test split to try it on: its first use says
        return
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(x)
    except Exception as exc:  # noqa: BLE001 - e.g. a fixed input size: the model's reason
        raise TechniqueError(f"model '{name}' does not run on the data's inputs (a batch of "
                             f"shape {tuple(x.shape)}): {first_line(exc)}") from exc
    net.train(was)
    if isinstance(out, torch.Tensor) and out.dim() and len(out) == len(x):
        return
    if isinstance(out, dict):
        what = f"a dict (keys {', '.join(map(str, list(out)[:6]))})"
    elif isinstance(out, torch.Tensor):
        what = f"a tensor of shape {tuple(out.shape)} for a batch of {len(x)}"
    else:
        what = f"a {type(out).__name__}" + (f" of {len(out)}" if isinstance(out, (tuple, list))
                                            else "")
    raise TechniqueError(f"model '{name}' returned {what}: modelopt scores one tensor of "
                         "outputs, batch first (a classifier's (batch, classes) scores); "
                         "return that alone from forward")


def check_classes(net: nn.Module, data, name: str) -> None:
    """A trained classifier numbers its classes its own way (`class_names`: a Hugging Face
    config's id2label); the data numbers them in sorted order unless its `classes:` says.
    The same names in another order read every score against another class (a saved
    pos/neg classifier scored 0 % and nothing said why)."""
    own, theirs = getattr(net, "class_names", None), data.info.get("class_names")
    if not own or not theirs or list(own) == list(theirs) or sorted(own) != sorted(theirs):
        return
    raise TechniqueError(
        f"model '{name}' numbers its classes {', '.join(own)} (its config's id2label); the "
        f"dataset numbers them {', '.join(theirs)}: its scores would be read against the "
        f"wrong classes. Give the dataset `classes: {json.dumps(list(own))}`")

