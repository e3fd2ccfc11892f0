import pytest
import torch

from modelopt.techniques.data import DATASETS
from modelopt.techniques.models import MODELS, build

SHAPES = {"signal": (1, 40), "vector": (12,), "image": (1, 8, 8)}


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_runs_on_every_input_it_accepts(name):
    if name.startswith("test_"):
        pytest.skip("test plugin")
    for kind in MODELS.info(name).accepts:
        model = build({"name": name}, SHAPES[kind], 10)
        out = model(torch.randn(3, *SHAPES[kind]))
        assert out.shape == (3, 10)


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
