"""Half precision as a way to ship (`quantize: bf16`, `fp16`): the shipped model computes in
it, its figures are its own, the timing stage rebuilds it, and runtimes that would not run
it as asked refuse it when the suite loads."""

import pytest
import torch

from modelopt.run.cell import run_cell
from modelopt.run.measure import size_bytes
from modelopt.spec.schema import SuiteError
from modelopt.spec.suite import parse
from modelopt.techniques.models import build
from modelopt.techniques.precision import DTYPES, HalfPrecision
from modelopt.techniques.quantize import QUANTIZERS
from tests.rebuilt import timed_again

SUITE = """
name: half
seeds: [0]
defaults:
  dataset: {name: synthetic, n_samples: 300, n_features: 40, n_classes: 4}
  model: {name: cnn, channels: 8}
  optimizer: {name: adam, lr: 0.01}
  train: {steps: 20, batch_size: 32, eval_every: 20}
  quantize: QUANT
  deploy: DEPLOY
"""


def cell(quant: str, fmt: str = "eager"):
    return parse(SUITE.replace("QUANT", quant).replace("DEPLOY", fmt)).cells[0]


@pytest.mark.parametrize("name, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_a_half_model_computes_in_half_and_leaves_the_trained_one_as_it_was(name, dtype):
    torch.manual_seed(0)
    m = build({"name": "mlp", "hidden": 256}, (12,), 4).eval()  # weights dominate its size
    q, info = QUANTIZERS.build(name).convert(m, torch.randn(2, 12))
    assert isinstance(q, HalfPrecision) and info["quantized_with"] == f"torch ({dtype})"
    assert {p.dtype for p in q.parameters()} == {dtype}
    assert {p.dtype for p in m.parameters()} == {torch.float32}
    assert size_bytes(q) < 0.55 * size_bytes(m)
    x = torch.randn(64, 12)
    with torch.inference_mode():
        y, ref = q(x), m(x)
    assert y.dtype == torch.float32 and not torch.equal(y, ref)  # rounded: half's own figures
    assert torch.allclose(y, ref, atol=0.05, rtol=0.05)


def test_a_bf16_cell_is_measured_on_its_half_model_and_timed_again(tmp_path):
    dense = run_cell(cell("none"), 0)
    out = run_cell(cell("bf16"), 0)
    assert out.status == "ok", out.error
    m = out.metrics
    assert m["quantized"] and m["params"] == dense.metrics["params"]
    assert m["size_bytes"] < dense.metrics["size_bytes"]
    assert abs(m["accuracy"] - dense.metrics["accuracy"]) <= 0.05  # trained alike, then rounded
    # rebuilt from the trained weights and checked against the cell's own half outputs
    model, y = timed_again(out, cell("bf16"), tmp_path)
    assert isinstance(model, HalfPrecision)
    with torch.inference_mode():
        assert torch.equal(y, out.models["model"].shipped(out.batch))


def test_a_half_model_ships_compiled():
    out = run_cell(cell("bf16", "compile"), 0)
    assert out.status == "ok", out.error
    assert out.metrics["deploy_agreement"] >= 0.95


@pytest.mark.parametrize("name, fmt, says", [
    ("bf16", "onnxruntime", "implements few operators in float16 or bfloat16"),
    ("bf16", "openvino", r"precision: bf16\} with no quantize"),
    ("fp16", "openvino", "computes in f32 or bf16, not fp16"),
])
def test_runtimes_that_choose_their_own_arithmetic_refuse_it_when_the_suite_loads(name, fmt,
                                                                                  says):
    with pytest.raises(SuiteError, match=rf"quantize '{name}' cannot ship on deploy '{fmt}': .*"
                                         + says + rf".*exclude: \[{{quantize: {name}, deploy: "
                                         rf"{fmt}}}\]"):
        cell(name, fmt)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_a_cuda_cell_trained_under_autocast_ships_half_on_the_gpu(name, tmp_path):
    amp = {"name": "cuda", "device": 0, "amp": True, "amp_dtype": name}
    config = cell(name).replaced(backend=amp)
    out = run_cell(config, 0)
    assert out.status == "ok", out.error
    shipped = out.models["model"].shipped
    assert {p.device.type for p in shipped.parameters()} == {"cuda"}
    assert {p.dtype for p in shipped.parameters()} == {DTYPES[name]}
    _, y = timed_again(out, config, tmp_path)
    assert y.device.type == "cuda"


def test_a_half_model_that_overflows_fails_its_cell_instead_of_reporting_figures(tmp_path):
    """float16 stops at ±65504: weights that push the logits past it give inf, and the cell
    says so (float32 and bf16, with float32's range, stay finite)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40, 10))  # as `linear` builds it
    with torch.no_grad():
        net[1].weight.mul_(1e5)
    torch.save(net.state_dict(), tmp_path / "big.pth")
    (tmp_path / "s.yaml").write_text("""name: big
seeds: [0]
defaults: {dataset: {name: mnist1d, num_samples: 500}, optimizer: adam, train: {steps: 0},
           model: {name: linear, weights: big.pth}}
matrix:
  quantize: [none, bf16, fp16]
""")
    from modelopt.spec.suite import load
    from modelopt.techniques.errors import TechniqueError

    cells = {(c.as_config().get("quantize") or {"name": "none"})["name"]: c
             for c in load(tmp_path / "s.yaml").cells}
    assert run_cell(cells["none"], 0).status == "ok" and run_cell(cells["bf16"], 0).status == "ok"
    with pytest.raises(TechniqueError, match="test outputs are not finite"):  # recorded: failed
        run_cell(cells["fp16"], 0)
