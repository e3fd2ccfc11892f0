"""Architectures practitioners ship: torchvision's classification models by name (random
weights: nothing downloads), and timm's where it is installed.

Both are built for the dataset's channels and classes; `small_input` adapts an ImageNet
stem (a 7x7 or 3x3 stride-2 convolution, then for ResNets a max-pool: 32x32 becomes 8x8
before the first block) to small images, as CIFAR ResNets do: a 3x3 stride-1 first
convolution and no stem pooling.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator
from torch import nn

from modelopt.spec.registries import MODELS
from modelopt.spec.registry import Probability, RegistryError, closest


def _torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return tvm.list_models(module=tvm)  # classification models only (not detection, video)


def _known_torchvision(arch: str) -> str:
    names = _torchvision_names()
    if arch not in names:
        raise ValueError(f"torchvision has no classification model '{arch}'"
                         f"{closest(arch, names)}; torchvision.models.list_models() names them")
    return arch


def _known_timm(arch: str) -> str:
    try:
        import timm
    except ImportError:
        raise ValueError("timm is not installed: pip install timm (or modelopt[vision])") from None
    if not timm.list_models(arch):
        raise ValueError(f"timm has no model '{arch}'{closest(arch, timm.list_models())}")
    return arch


TorchvisionArch = Annotated[str, AfterValidator(_known_torchvision)]
TimmArch = Annotated[str, AfterValidator(_known_timm)]


def _first(model: nn.Module, kind: type) -> tuple[nn.Module, str, nn.Module] | None:
    """(parent, attribute, module) of the first `kind` in definition order."""
    for path, module in model.named_modules():
        if isinstance(module, kind):
            parent, _, name = path.rpartition(".")
            return model.get_submodule(parent), name, module
    return None


def adapt(model: nn.Module, channels: int, small_input: bool) -> nn.Module:
    """The first convolution takes `channels`; with `small_input` it is 3x3 stride 1 and a
    max-pool right after the stem (torchvision ResNets' `maxpool`) is dropped."""
    found = _first(model, nn.Conv2d)
    if found is None:
        raise RegistryError("the model has no Conv2d to adapt to the images")
    fixed = getattr(model, "image_size", None)  # torchvision's ViT: patches of one grid
    if small_input and isinstance(fixed, int):
        raise RegistryError(
            f"{type(model).__name__} takes {fixed}x{fixed} images (its position embeddings "
            "are for one grid of patches), so small_input cannot shrink its stem: set "
            f"small_input: false, and the dataset's image_size: {fixed}")
    parent, name, conv = found
    if conv.in_channels != channels or small_input:
        k, s, p = ((3, 3), 1, 1) if small_input else (conv.kernel_size, conv.stride, conv.padding)
        setattr(parent, name, nn.Conv2d(channels, conv.out_channels, k, stride=s, padding=p,
                                        bias=conv.bias is not None))
    if small_input and isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
        model.maxpool = nn.Identity()
    return model


def _check_image(input_shape: tuple) -> int:
    if len(input_shape) != 3:
        raise RegistryError(f"image models take (channels, height, width) inputs; got {input_shape}")
    return input_shape[0]


def _bn_momentum(model: nn.Module, momentum: float | None) -> nn.Module:
    """Every batch norm's running-statistics momentum. torchvision's MobileNetV3 and
    EfficientNet use 0.01 (for ImageNet-length training): after a few hundred steps their
    running statistics are still far from the data's, and eval mode reads chance accuracy
    (mobilenet_v3_small on digits: 10 % in eval mode, 91 % in train mode, after 60 steps)."""
    if momentum is not None:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = momentum
    return model


@MODELS.register("torchvision", accepts=("image",))
def torchvision_model(input_shape: tuple, num_outputs: int, /, arch: TorchvisionArch = "resnet18",
                      small_input: bool = True, bn_momentum: Probability | None = None
                      ) -> nn.Module:
    """Any torchvision classification model by name (`arch`: resnet50, convnext_tiny, ...),
    with random weights and `num_outputs` classes; `small_input` for images of about 32x32;
    `bn_momentum` overrides the batch norms' (short runs: 0.1)."""
    import torchvision.models as tvm

    channels = _check_image(input_shape)
    net = tvm.get_model(arch, weights=None, num_classes=num_outputs)
    return _bn_momentum(adapt(net, channels, small_input), bn_momentum)


def _named(arch: str, what: str):
    def factory(input_shape: tuple, num_outputs: int, /, small_input: bool = True,
                bn_momentum: Probability | None = None) -> nn.Module:
        return torchvision_model(input_shape, num_outputs, arch, small_input, bn_momentum)

    factory.__name__ = factory.__qualname__ = arch
    factory.__doc__ = f"torchvision's {arch} ({what}), random weights; `small_input` for ~32x32 images."
    return MODELS.register(arch, accepts=("image",))(factory)


resnet18 = _named("resnet18", "11.2M parameters at 1,000 classes; residual blocks, batch norm")
mobilenet_v3_small = _named("mobilenet_v3_small", "2.5M; depthwise separable, squeeze-excite, hardswish")
efficientnet_b0 = _named("efficientnet_b0", "5.3M; MBConv blocks, squeeze-excite, SiLU")


@MODELS.register("timm", accepts=("image",))
def timm_model(input_shape: tuple, num_outputs: int, /, arch: TimmArch = "resnet18",
               small_input: bool = False) -> nn.Module:
    """A timm model by name (needs `pip install timm`), random weights, the dataset's
    channels and classes."""
    import timm

    channels = _check_image(input_shape)
    net = timm.create_model(arch, pretrained=False, num_classes=num_outputs, in_chans=channels)
    return adapt(net, channels, small_input) if small_input else net
