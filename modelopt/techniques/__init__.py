"""modelopt's techniques: importing this package registers every one of them."""

from modelopt.techniques import (  # noqa: F401
    data,
    deploy,
    distill,
    hf,
    images,
    local_data,
    losses,
    models,
    onnx_runtime,
    openvino_runtime,
    optim,
    precision,
    preprocess,
    prune,
    quantize,
    tasks,
    text,
    transformers,
    vision,
    weights,
)
