"""modelopt's techniques: importing this package registers every one of them."""

from modelopt.techniques import (  # noqa: F401
    data,
    distill,
    losses,
    models,
    optim,
    preprocess,
    prune,
    quantize,
)
