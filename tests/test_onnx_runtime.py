"""deploy: onnxruntime: the model exported to ONNX and run by ONNX Runtime's CPU provider;
int8 there on ONNX Runtime's own int8 kernels (techniques/onnx_runtime.py)."""

import onnx
import pytest
import torch

from modelopt.results import paired
from modelopt.run import rebuild, timing
from modelopt.run.cell import run_cell
from modelopt.spec import outcomes
from modelopt.spec.schema import SuiteError
from modelopt.spec.suite import parse
from modelopt.techniques import onnx_runtime
from tests.rebuilt import timed_again

SUITE = """
name: ort
seeds: [0]
defaults:
  dataset: {name: mnist1d, num_samples: 600}
  model: {name: cnn, channels: 8}
  optimizer: {name: adam, lr: 0.01}
  train: {steps: 60, batch_size: 50, eval_every: 60}
matrix:
  quantize: [QUANTIZE]
  deploy: [DEPLOY]
"""


def cell(quantize="none", deploy="onnxruntime"):
    return parse(SUITE.replace("QUANTIZE", quantize).replace("DEPLOY", deploy)).cells[0]


def ops(model) -> set[str]:
    return set(ops_of(model.blob))


def ops_of(blob: bytes) -> list[str]:
    return [n.op_type for n in onnx.load_from_string(blob).graph.node]


def test_a_float_model_ships_as_an_onnx_file_run_by_onnx_runtime(tmp_path):
    eager = run_cell(cell(deploy="eager"), 0)
    out = run_cell(cell(), 0)
    m, shipped = out.metrics, out.models["model"].shipped
    assert isinstance(shipped, onnx_runtime.OrtModel) and "QuantizeLinear" not in ops(shipped)
    # checked against the model it was made from, and measured as itself
    assert m["deploy_agreement"] == 1.0 and m["deploy_max_abs_diff"] < 1e-4
    assert m["accuracy"] == eager.metrics["accuracy"]
    # its size is the file's, as an int8 model's is: one thing compared with another
    assert m["artifact_bytes"] == m["size_bytes"] == len(shipped.blob)
    assert m["params"] == eager.metrics["params"]  # counted on the model it was made from
    assert (m["runtime"], m["execution_provider"], m["onnx_opset"]) == (
        "onnxruntime", "CPUExecutionProvider", onnx_runtime.OPSET)
    assert m["runtime_version"] == onnx_runtime.version()
    assert m["float_layers"] == 4 and "quantized_layers" not in m  # 3 convs and the head
    # the timing process makes it again from the saved weights, and it runs there
    saved = timing.save_all(tmp_path, "c", 0, out.models, out.example, out.batch,
                            out.input_shape, out.num_outputs)
    # the ONNX file the user takes home, beside the data the timing stage rebuilds from
    assert saved["model"] == ["c-0-model.pt", "c-0-model.onnx"]
    assert (tmp_path / "c-0-model.onnx").read_bytes() == shipped.blob
    model, _, batch = rebuild.load(next(tmp_path.glob("*.pt")), rebuild.Recipe.of(cell()))
    assert isinstance(model, onnx_runtime.OrtModel) and model.blob == shipped.blob
    with torch.inference_mode():
        assert torch.allclose(model(batch), eager.models["model"].shipped(batch), atol=1e-4)
    # the run's own copy of the file is checked against that rebuild in the cell, so its
    # timing stage times the copy instead of exporting it again; an eager model is not
    own = tmp_path / "own"
    own.mkdir()
    timing.save_own(own, "c", 0, out.models, out.example, out.batch, (tmp_path, cell()))
    assert (own / f"c-0-model{timing.VERIFIED}").is_file()
    timing.save_own(own, "e", 0, eager.models, out.example, out.batch, (tmp_path, cell()))
    assert (own / "e-0-model.pt").is_file() and not (own / f"e-0-model{timing.VERIFIED}").exists()


def test_a_slimmed_model_on_onnx_runtime_counts_its_own_file():
    """Structured pruning's slimmed model ships as an ONNX file too: its size is that file's,
    as the dense model's on the same runtime is."""
    config = cell().replaced(prune={"name": "l1_structured", "amount": 0.5,
                                    "finetune_steps": 5, "rounds": 1})
    out = run_cell(config, 0)
    shipped, slim = out.models["slimmed"].shipped, out.figures_of["slimmed"]
    assert isinstance(shipped, onnx_runtime.OrtModel)
    assert slim["size_bytes"] == slim["artifact_bytes"] == len(shipped.blob)
    # every figure of it is declared (`pytest benchmarks/` fails a cell whose isn't)
    from modelopt.results import metrics as M

    assert slim["runtime"] == "onnxruntime"
    assert not [k for k in slim if M.column("slimmed", k) not in M.TABLE]


def test_a_slimmed_model_ships_quantized_as_the_masked_one_does(tmp_path):
    """Structured pruning with int8: the slimmed model that ships (and is timed, and whose
    size the headline gives) is int8 too, quantized on the masked model's calibration
    inputs; never the float slimmed model under an int8 label."""
    prune = {"name": "l1_structured", "amount": 0.5, "finetune_steps": 5, "rounds": 1}
    fp32 = run_cell(cell().replaced(prune=prune), 0).figures_of["slimmed"]
    config = cell("int8_static").replaced(prune=prune)
    out = run_cell(config, 0)
    item, slim = out.models["slimmed"], out.figures_of["slimmed"]
    assert item.quantized and item.calibration is out.models["model"].calibration
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(item.shipped)
    assert slim["float_layers"] == 0 and slim["params"] == fp32["params"]
    # its file's (QDQ nodes and scales: larger than the float file at 4 channels)
    assert slim["size_bytes"] == len(item.shipped.blob) != fp32["size_bytes"]
    # the timing stage makes the same int8 slimmed model again from the saved data
    timing.save_all(tmp_path, "c", 0, out.models, out.example, out.batch, out.input_shape,
                    out.num_outputs)
    model, _, _ = rebuild.load(tmp_path / "c-0-slimmed.pt", rebuild.Recipe.of(config))
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(model)


@pytest.mark.parametrize("quantize, int8_ops, layers", [
    ("int8_static", {"QuantizeLinear", "DequantizeLinear"}, (4, 0)),
    ("int8_dynamic", {"DynamicQuantizeLinear", "MatMulInteger"}, (1, 3)),
])
def test_int8_on_onnx_runtime_is_its_own_int8_model(quantize, int8_ops, layers):
    """Quantized by ONNX Runtime (static: QDQ, per-channel, calibrated on training inputs;
    dynamic: the Linear head), each layer counted, its accuracy its own."""
    float_out = run_cell(cell(), 0)
    fp32 = float_out.metrics
    out = run_cell(cell(quantize), 0)
    m, shipped = out.metrics, out.models["model"].shipped
    assert int8_ops <= ops(shipped)
    # which test samples it got right is kept beside its figures, its own as they are: the
    # paired test of the two models' accuracies on one split
    mine = outcomes.Outcomes.read(out.extra[outcomes.KEY])
    assert outcomes.KEY not in m and mine.n == m["test_samples"]
    assert mine.values.mean() == pytest.approx(m["accuracy"])
    apart = paired.on_samples([(outcomes.Outcomes.read(float_out.extra[outcomes.KEY]), fp32)],
                              [(outcomes.Outcomes.read(out.extra[outcomes.KEY]), m)], "accuracy")
    assert (apart.better - apart.worse) / apart.n == pytest.approx(m["accuracy"] - fp32["accuracy"])
    # its macro figures, computed again from the classes it chose, are its record's
    assert paired.on_samples([(outcomes.Outcomes.read(float_out.extra[outcomes.KEY]), fp32)],
                             [(mine, m)], "f1_macro") is not None
    assert (m["quantized_layers"], m["float_layers"]) == layers
    assert m["int8_path"] == "onnxruntime int8 kernels" and m["quantized"]
    assert m["quantized_with"] == onnx_runtime.SCHEMES[quantize]
    assert m["artifact_bytes"] == m["size_bytes"] == len(shipped.blob)
    assert m["params"] == fp32["params"]  # counted on the float model it was made from
    assert abs(m["accuracy"] - fp32["accuracy"]) < 0.05
    weights = onnx.load_from_string(shipped.blob).graph.initializer
    assert any(w.data_type == onnx.TensorProto.INT8 for w in weights)  # int8 weights in it


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("quantize", ["none", "int8_static"])
def test_a_model_trained_on_a_gpu_ships_on_onnx_runtime_on_the_cpu(quantize, tmp_path):
    """Trained on CUDA, exported from a CPU copy (ONNX Runtime's provider here is the CPU's),
    checked there, and made again so in the timing process."""
    config = cell(quantize).replaced(backend={"name": "cuda", "device": 0, "amp": False,
                                              "amp_dtype": "bf16"})
    out = run_cell(config, 0)
    assert out.status == "ok", out.error
    assert isinstance(out.models["model"].shipped, onnx_runtime.OrtModel)
    assert quantize != "none" or out.metrics["deploy_agreement"] >= 0.99
    model, y = timed_again(out, config, tmp_path)
    assert isinstance(model, onnx_runtime.OrtModel) and y.device.type == "cpu"


PLUGIN = """
from torch import nn
from modelopt.spec.registries import MODELS

@MODELS.register("folder_cnn", accepts=("signal",))
def folder_cnn(input_shape, num_outputs, /):
    return nn.Sequential(nn.Conv1d(1, 8, 5, padding=2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * input_shape[-1], num_outputs))
"""


@pytest.mark.parametrize("deploy", ["eager", "onnxruntime"])
def test_the_same_cell_ships_the_same_bytes_from_two_folders(deploy, tmp_path, monkeypatch):
    """The int8 artifact holds what ships: no calibration inputs and no path of the folder
    its model's code lives in (a plugin in two folders of different names)."""
    blobs = []
    for name in ("a", "a-much-longer-folder-name"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "mine.py").write_text(PLUGIN)
        suite = folder / "s.yaml"
        suite.write_text(SUITE.replace("QUANTIZE", "int8_static").replace("DEPLOY", deploy)
                         .replace("model: {name: cnn, channels: 8}", "model: folder_cnn")
                         + "plugins: [mine]\n")
        monkeypatch.chdir(folder)
        from modelopt.spec.suite import load

        shipped = run_cell(load(suite).cells[0], 0).models["model"].shipped
        blobs.append(shipped.blob)
        monkeypatch.syspath_prepend(str(folder))
    assert len(blobs[0]) < 40_000  # int8 weights and the graph, no calibration inputs
    assert blobs[0] == blobs[1]


def test_what_onnx_runtime_cannot_ship_is_refused_when_the_suite_loads():
    with pytest.raises(SuiteError, match="no int8 weight-only kernel"):
        cell("int8_weight_only")


def test_compiled_int8_runs_on_int8_kernels_or_fails_saying_why():
    """deploy: compile lowers a PT2E int8 program with Inductor's freezing (oneDNN int8
    kernels); where it cannot (torch 2.14 / torchao 0.18 on these models), the cell fails
    with the reason, never a float fall-back shipped as int8."""
    from modelopt.techniques.errors import TechniqueError

    try:
        out = run_cell(cell("int8_static", "compile"), 0)
    except TechniqueError as exc:
        assert "cannot lower this int8 program to int8 kernels" in str(exc)
    else:
        assert out.metrics["int8_path"] == "inductor int8 kernels (frozen)"


class Branching(torch.nn.Module):
    """Chooses a head by the batch's values: a trace keeps the branch its batch took."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)

    def forward(self, x):
        if x.mean() > 0:
            return self.a(x)
        return self.b(x)


class ShapeChecked(torch.nn.Module):
    """Checks its input's width as nanoGPT checks its sequence length: under the trace a
    size is a tensor too, and the check warns as a branch on a value does."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        assert x.size(1) <= 4, "too wide"
        return self.fc(x) / x.norm(dim=1, keepdim=True)  # nan on a row of zeros, alike


def test_a_branch_on_a_tensors_value_is_refused_naming_its_line():
    """The file kept the branch of the traced batch and computed another model on inputs
    that took the other; its outputs matched on the traced batch and the cell read ok. A
    check of a size warns alike and ships: the file computes the model on other inputs."""
    from modelopt.techniques.errors import TechniqueError

    with pytest.raises(TechniqueError, match=r"deploy: openvino: the model branches on a "
                       r"tensor's value at test_onnx_runtime.py:\d+ \(`if x.mean\(\) > 0:`\)"):
        onnx_runtime.export_onnx(Branching().eval(), torch.ones(3, 4), "openvino")
    onnx_runtime.export_onnx(ShapeChecked().eval(), torch.randn(3, 4))


def test_attention_exports_and_a_failed_export_prints_no_graph(capfd):
    """nn.MultiheadAttention's fused fast path (eval, no gradients) has no ONNX form: every
    attention model failed to ship, and the exporter printed its whole graph each time."""
    from modelopt.techniques.errors import TechniqueError

    class Attending(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    m, x = Attending().eval(), torch.randn(2, 3, 8)
    blob = onnx_runtime.export_onnx(m, x)
    assert onnx_runtime.OrtModel(blob)(torch.randn(5, 3, 8)).shape == (5, 3, 8)
    # two layers (its projections in, out); q kᵀ and the weights x v are MatMuls of no weight
    assert ops_of(blob).count("MatMul") == 3 and onnx_runtime._facts(blob, None)["float_layers"] == 2

    class Histogram(torch.nn.Module):
        def forward(self, x):
            return x + torch.histc(x, bins=3).sum()

    with pytest.raises(TechniqueError, match=r"^deploy: onnxruntime: torch.onnx.export failed: "
                                             r"UnsupportedOperatorError: Exporting the operator"):
        onnx_runtime.export_onnx(Histogram(), torch.randn(2, 4))
    out, err = capfd.readouterr()
    assert "graph" not in out + err
