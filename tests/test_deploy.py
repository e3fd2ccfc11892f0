"""Deploy formats: eager, torch.compile, torch.export + AOTInductor (techniques/deploy.py)."""

import pytest
import torch

from modelopt.results.labels import axis_labels
from modelopt.run import rebuild
from modelopt.run.cell import run_cell
from modelopt.run.ship import check_outputs
from modelopt.spec.schema import SuiteError
from modelopt.spec.suite import parse
from modelopt.techniques import deploy
from modelopt.techniques.data import DATASETS, split_validation
from modelopt.techniques.errors import TechniqueError
from tests.rebuilt import timed_again

SUITE = """
name: ship
seeds: [0]
defaults:
  dataset: {name: synthetic, n_samples: 300, n_features: 12, n_classes: 4}
  model: {name: mlp, hidden: 32}
  optimizer: {name: adam, lr: 0.01}
  train: {steps: 20, batch_size: 32, eval_every: 20}
  deploy: DEPLOY
matrix:
  model: [{name: mlp, hidden: 32}]
"""


def cell(fmt):
    return parse(SUITE.replace("DEPLOY", fmt)).cells[0]


@pytest.mark.parametrize("fmt, kind", [("compile", deploy.Compiled),
                                       ("export", deploy.Packaged)])
def test_a_deployed_artifact_is_measured_checked_and_timed(fmt, kind, tmp_path):
    eager = run_cell(cell("eager"), 0)
    out = run_cell(cell(fmt), 0)
    m = out.metrics
    assert isinstance(out.models["model"].shipped, kind)
    assert m["compile_seconds"] > 0 and m["deploy_agreement"] == 1.0
    assert m["deploy_max_abs_diff"] < 1e-4
    # trained alike; the artifact's test figures are its own, and equal the eager model's
    assert m["accuracy"] == eager.metrics["accuracy"]
    assert m["params"] == eager.metrics["params"]
    if fmt == "export":  # the package ships: its size is the package's
        assert m["size_bytes"] == m["artifact_bytes"] == len(out.models["model"].shipped.blob)
    else:  # the module ships as trained, compiled where it loads
        assert m["size_bytes"] == eager.metrics["size_bytes"]
    model, y = timed_again(out, cell(fmt), tmp_path)
    assert isinstance(model, kind) and y.shape == (len(out.batch), 4)
    with torch.inference_mode():
        assert torch.allclose(y, eager.models["model"].shipped(out.batch), atol=1e-4)
    # the package is the user's to take home, beside the data it is made again from
    assert sorted(p.name for p in tmp_path.iterdir()) == (
        ["c-0-model.pt", "c-0-model.pt2"] if fmt == "export" else ["c-0-model.pt"])
    if fmt == "export":
        assert (tmp_path / "c-0-model.pt2").read_bytes() == out.models["model"].shipped.blob


def test_an_artifact_that_computes_something_else_fails_the_cell():
    data = split_validation(DATASETS.build("synthetic", 0, n_samples=200, n_features=12,
                                           n_classes=4), 0.1, 0)
    model, wrong = torch.nn.Linear(12, 4), torch.nn.Linear(12, 4)
    with torch.no_grad():
        reference, out = model(data.x_test), wrong(data.x_test)
    with pytest.raises(TechniqueError, match=r"deploy: compile: the artifact's test outputs "
                                             r"differ.*classes agree on"):
        check_outputs(out, reference, data, cell("compile"))


def test_an_unknown_deploy_format_names_the_key():
    with pytest.raises(SuiteError, match=r"deploy.*'jit'.*compile.*eager.*export"):
        cell("jit")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("fmt", ["compile", "export"])
def test_a_cuda_cell_ships_its_artifact_on_the_gpu(fmt, tmp_path):
    config = cell(fmt).replaced(backend={"name": "cuda", "device": 0, "amp": False,
                                         "amp_dtype": "bf16"})
    out = run_cell(config, 0)
    assert out.metrics["deploy_agreement"] >= 0.99
    model, y = timed_again(out, config, tmp_path)
    assert y.device.type == "cuda"


def test_naming_eager_is_leaving_deploy_out():
    plain = parse(SUITE.replace("  deploy: DEPLOY\n", "")).cells[0]
    eager = parse(SUITE.replace("DEPLOY", "eager")).cells[0]
    assert plain.cell_id == eager.cell_id and "deploy" not in eager.as_config()


def test_a_pruned_cell_ships_and_checks_its_slimmed_model_in_the_format():
    config = cell("compile").replaced(prune={"name": "l1_structured", "amount": 0.5,
                                             "finetune_steps": 5, "rounds": 1})
    out = run_cell(config, 0)
    assert isinstance(out.models["slimmed"].shipped, deploy.Compiled)
    slim = out.figures_of["slimmed"]
    assert slim["compile_seconds"] > 0 and slim["deploy_agreement"] == 1.0


def test_shipping_on_the_cpu_is_a_setting_of_the_pytorch_formats():
    """`device: cpu` ships a model trained on a GPU on the CPU; on a CPU cell it changes
    nothing but the cell's name. A runtime that runs on the CPU anyway has no such setting."""
    eager = run_cell(cell("eager"), 0).metrics
    on_cpu = cell("{name: eager, device: cpu}")
    assert on_cpu.deploy.params == {"device": "cpu"}
    out = run_cell(on_cpu, 0).metrics
    assert out["accuracy"] == eager["accuracy"] and "shipped_on" not in out  # not moved
    # the default written out is the same cell; the setting is named where it differs
    assert cell("{name: eager, device: trained}").cell_id == cell("eager").cell_id
    assert list(axis_labels([cell("eager").as_config(), on_cpu.as_config()])["axis:deploy"]) \
        == ["eager", "eager(device=cpu)"]
    with pytest.raises(SuiteError, match=r"deploy.*device.*'gpu'"):
        cell("{name: compile, device: gpu}")
    with pytest.raises(SuiteError, match=r"onnxruntime.*has no parameter 'device'"):
        cell("{name: onnxruntime, device: cpu}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("fmt, quantize", [("eager", None), ("export", None),
                                           ("eager", "int8_dynamic"), ("compile", "bf16")])
def test_a_model_trained_on_a_gpu_ships_on_the_cpu_where_the_suite_says(fmt, quantize,
                                                                        tmp_path):
    gpu = {"name": "cuda", "device": 0, "amp": False, "amp_dtype": "bf16"}
    config = cell(f"{{name: {fmt}, device: cpu}}").replaced(backend=gpu, quantize=quantize
                                                            and {"name": quantize})
    out = run_cell(config, 0)
    assert out.status == "ok", out.error
    shipped = out.models["model"].shipped
    assert rebuild.device_of(shipped, shipped).type == "cpu"
    assert out.metrics["shipped_on"] == "cpu" and out.env["device"].startswith("cuda")
    assert {p.device.type for p in out.models["model"].source.parameters()} == {"cuda"}
    model, y = timed_again(out, config, tmp_path)  # made again on the CPU too
    assert y.device.type == "cpu" and rebuild.device_of(model, model).type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_slimmed_model_trained_on_a_gpu_ships_on_the_cpu_too():
    gpu = {"name": "cuda", "device": 0, "amp": False, "amp_dtype": "bf16"}
    config = cell("{name: eager, device: cpu}").replaced(
        backend=gpu, prune={"name": "l1_structured", "amount": 0.5, "finetune_steps": 5,
                            "rounds": 1})
    out = run_cell(config, 0)
    assert out.status == "ok", out.error
    assert {p.device.type for p in out.models["slimmed"].shipped.parameters()} == {"cpu"}
    assert {p.device.type for p in out.models["slimmed"].source.parameters()} == {"cuda"}


RUNTIME = """
name: own
seeds: [0]
plugins: [tests.plugins]
defaults:
  dataset: {name: synthetic, n_samples: 300, n_features: 12, n_classes: 4}
  model: {name: mlp, hidden: 16}
  train: {steps: 10}
  deploy: test_own_int8
  quantize: QUANT
"""


def test_a_runtime_carries_out_the_quantizers_intent_its_own_way():
    """A quantizer states what it wants (int8 dynamic); the runtime realises it (here with
    torch.ao, not the quantizer's torchao path) or refuses when the suite loads."""
    out = run_cell(parse(RUNTIME.replace("QUANT", "int8_dynamic")).cells[0], 0)
    assert out.status == "ok", out.error
    assert out.metrics["quantized_with"] == "test_own_int8 (int8_dynamic)"
    eager = run_cell(parse(RUNTIME.replace("QUANT", "int8_dynamic")
                           .replace("deploy: test_own_int8", "deploy: eager")).cells[0], 0)
    assert eager.metrics["quantized_with"] == "torchao"
    with pytest.raises(SuiteError, match=r"quantize .int8_static. cannot ship on "
                                         r"deploy 'test_own_int8': .*no int8_static kernels"):
        parse(RUNTIME.replace("QUANT", "int8_static"))
    # what a quantizer asks for that a runtime cannot ship is refused when the suite loads
    only = parse(RUNTIME.replace("QUANT", "test_intent_only")).cells[0]
    assert run_cell(only, 0).metrics["quantized_with"] == "test_own_int8 (int8_dynamic)"
    with pytest.raises(SuiteError, match=r"test_intent_only' cannot ship on deploy 'eager': it "
                                         r"asks for int8_dynamic with no PyTorch conversion"):
        parse(RUNTIME.replace("QUANT", "test_intent_only").replace("test_own_int8", "eager"))
    with pytest.raises(SuiteError, match=r"test_no_intent' cannot ship on deploy "
                                         r"'test_own_int8': the quantizer states no intent"):
        parse(RUNTIME.replace("QUANT", "test_no_intent"))


def test_a_librarys_bare_assert_is_said_by_where_it_failed():
    """ONNX Runtime's shape inference asserts without a message: a cell read 'quantization
    failed: AssertionError: ' and nothing more."""
    from modelopt.techniques.errors import first_line

    def _infer_reshape():
        raise AssertionError  # a bare assert (pytest's would carry its own message)

    with pytest.raises(AssertionError) as raised:
        _infer_reshape()
    assert first_line(raised.value).startswith("AssertionError in _infer_reshape (test_deploy.py:")
    assert first_line(ValueError("why\nmore")) == "ValueError: why"
