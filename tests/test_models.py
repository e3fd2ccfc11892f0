import pytest
import torch

from modelopt.techniques.data import DATASETS
from modelopt.techniques.errors import TechniqueError
from modelopt.techniques.models import MODELS, build, check_forward

# token inputs: 16 ids below 30 (a model is built for (sequence length, vocabulary))
SHAPES = {"signal": (1, 40), "vector": (12,), "image": (1, 8, 8), "tokens": (16, 30)}
SPECS = {"hf": {"config": {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32,
                           "num_hidden_layers": 1, "num_attention_heads": 2}}}


def sample(kind: str) -> torch.Tensor:
    if kind == "tokens":
        return torch.randint(0, SHAPES[kind][1], (3, SHAPES[kind][0]))
    return torch.randn(3, *SHAPES[kind])


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_runs_on_every_input_it_accepts(name):
    if name.startswith("test_"):
        pytest.skip("test plugin")
    if name == "hf":
        pytest.importorskip("transformers")
    for kind in MODELS.info(name).accepts:
        model = build({"name": name, **SPECS.get(name, {})}, SHAPES[kind], 10)
        out = model(sample(kind))
        # a class score per input, or (a language model's) per position of the input
        assert out.shape in ((3, 10), (3, SHAPES[kind][0], 10))
        check_forward(model, sample(kind), name)


class Returning(torch.nn.Module):
    def __init__(self, make):
        super().__init__()
        self.fc, self.make = torch.nn.Linear(4, 3), make

    def forward(self, x):
        return self.make(self.fc(x))


@pytest.mark.parametrize("make, said", [
    (lambda y: {"logits": y, "features": y}, r"returned a dict \(keys logits, features\)"),
    (lambda y: (y, y), "returned a tuple of 2"),
    (lambda y: y.sum(), r"returned a tensor of shape \(\) for a batch of 2"),
    (lambda y: y.T, r"returned a tensor of shape \(3, 2\) for a batch of 2"),
])
def test_a_model_that_returns_other_than_one_tensor_of_the_batch_is_said(make, said):
    """A dict of logits and features failed in training as `'dict' object has no attribute
    'float'`, in every cell."""
    with pytest.raises(TechniqueError, match=f"model 'mine' {said}: modelopt scores one tensor"):
        check_forward(Returning(make), torch.randn(2, 4), "mine")
    check_forward(Returning(lambda y: y), torch.randn(2, 4), "mine")


def test_every_dataset_declares_an_input_kind():
    assert all(e.info.input in SHAPES for e in DATASETS.entries())


def test_mnist1d_paper_sizes():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build({"name": "cnn"}, (1, 40), 10)) == 5210
    assert count(build({"name": "mlp"}, (1, 40), 10)) == 15210
    assert count(build({"name": "linear"}, (1, 40), 10)) == 410
    assert 5000 < count(build({"name": "gru"}, (1, 40), 10)) < 5300


def test_width_separable_and_switches_change_the_model():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    base = count(build({"name": "cnn"}, (1, 40), 10))
    assert count(build({"name": "cnn", "width": 0.5}, (1, 40), 10)) < base / 2
    assert count(build({"name": "cnn", "separable": True}, (1, 40), 10)) < base
    m = build({"name": "mlp", "dropout": 0.3, "batchnorm": True}, (1, 40), 10)
    kinds = {type(x).__name__ for x in m.modules()}
    assert {"Dropout", "BatchNorm1d"} <= kinds


@pytest.mark.parametrize("act,expect", [
    ("relu", [0.0, 0.0, 2.0]), ("leaky_relu", [-0.02, 0.0, 2.0]),
    ("tanh", [-0.9640276, 0.0, 0.9640276 + 0]), ("sigmoid", [0.1192029, 0.5, 0.8807971]),
])
def test_activation_is_the_function_it_names(act, expect):
    from modelopt.techniques.models import make_activation

    x = torch.tensor([-2.0, 0.0, 2.0])
    got = make_activation(act)(x)
    if act == "tanh":
        expect = [-0.9640276, 0.0, 0.9640276]
    assert torch.allclose(got, torch.tensor(expect), atol=1e-6)


def test_torchvision_models_take_the_datasets_channels_and_classes_and_small_inputs():
    from modelopt.techniques.models import build

    for name in ("resnet18", "mobilenet_v3_small", "efficientnet_b0"):
        net = build({"name": name}, (1, 16, 16), 7).eval()
        assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 7)
    small = build({"name": "resnet18"}, (3, 32, 32), 10)
    large = build({"name": "resnet18", "small_input": False}, (3, 32, 32), 10)
    assert small.conv1.stride == (1, 1) and small.conv1.kernel_size == (3, 3)
    assert isinstance(small.maxpool, torch.nn.Identity)
    assert large.conv1.stride == (2, 2) and isinstance(large.maxpool, torch.nn.MaxPool2d)
    any_arch = build({"name": "torchvision", "arch": "squeezenet1_1", "small_input": False},
                     (3, 64, 64), 5).eval()
    assert any_arch(torch.zeros(1, 3, 64, 64)).shape == (1, 5)


def test_an_unknown_architecture_is_refused_when_the_suite_loads():
    from modelopt.spec.suite import SuiteError, parse

    with pytest.raises(SuiteError, match=r"torchvision has no classification model 'resnt18' "
                                         r"\(did you mean 'resnet18'\?\)"):
        parse("name: a\ndefaults: {dataset: digits, model: {name: torchvision, arch: resnt18}}\n")
    with pytest.raises(SuiteError, match=r"model 'resnet18' takes image inputs but dataset "
                                         r"'mnist1d' gives signal"):
        parse("name: a\ndefaults: {dataset: mnist1d, model: resnet18}\n")


def test_a_timm_model_builds_where_timm_is_installed():
    pytest.importorskip("timm")
    from modelopt.techniques.models import build

    net = build({"name": "timm", "arch": "resnet10t"}, (1, 32, 32), 4).eval()
    assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 4)


def test_a_model_that_cannot_take_the_datas_inputs_is_said_before_training():
    """torchvision's ViT asserts 224x224 images; small_input gave it a 3x3 stem it then ran
    past its position embeddings. Both said, naming what to set."""
    from modelopt.spec.registry import RegistryError

    with pytest.raises(RegistryError, match=r"VisionTransformer takes 224x224 images .* set "
                                            r"small_input: false, and the dataset's image_size"):
        build({"name": "torchvision", "arch": "vit_b_16"}, (3, 32, 32), 3)
    vit = build({"name": "torchvision", "arch": "vit_b_16", "small_input": False}, (3, 32, 32), 3)
    with pytest.raises(TechniqueError, match=r"model 'vit' does not run on the data's inputs "
                                             r"\(a batch of shape \(2, 3, 32, 32\)\): "
                                             r"AssertionError: Wrong image height"):
        check_forward(vit, torch.randn(2, 3, 32, 32), "vit")

