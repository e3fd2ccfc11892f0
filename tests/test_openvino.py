"""deploy: openvino: the model's ONNX file compiled by OpenVINO's CPU plugin, in float
(techniques/openvino_runtime.py); int8 is refused when the suite loads."""

import pytest
import torch

pytest.importorskip("openvino")

from modelopt.run import rebuild, timing  # noqa: E402
from modelopt.run.cell import run_cell  # noqa: E402
from modelopt.spec.schema import SuiteError  # noqa: E402
from modelopt.spec.suite import parse  # noqa: E402
from modelopt.techniques.openvino_runtime import OvModel  # noqa: E402

SUITE = """
name: ov
seeds: [0]
defaults:
  dataset: {name: mnist1d, num_samples: 600}
  model: {name: cnn, channels: 8}
  optimizer: {name: adam, lr: 0.01}
  train: {steps: 60, batch_size: 50, eval_every: 60}
  deploy: DEPLOY
"""


def cell(deploy: str, quantize: str = "none"):
    return parse(SUITE.replace("DEPLOY", deploy) + f"  quantize: {quantize}\n").cells[0]


def test_a_float_model_ships_on_openvino_checked_and_timed_again(tmp_path):
    eager = run_cell(cell("eager"), 0)
    out = run_cell(cell("openvino"), 0)
    m, shipped = out.metrics, out.models["model"].shipped
    assert isinstance(shipped, OvModel) and m["artifact_bytes"] == len(shipped.blob)
    assert m["deploy_agreement"] >= 0.99 and m["deploy_max_abs_diff"] < 1e-3  # f32, not bf16
    assert (m["runtime"], m["execution_provider"]) == ("openvino", "CPU (f32)")
    timing.save_all(tmp_path, "c", 0, out.models, out.example, out.batch, out.input_shape,
                    out.num_outputs)
    model, _, batch = rebuild.load(tmp_path / "c-0-model.pt", rebuild.Recipe.of(cell("openvino")))
    with torch.inference_mode():
        assert torch.allclose(model(batch), eager.models["model"].shipped(batch), atol=1e-3)


def test_int8_on_openvino_is_refused_when_the_suite_loads():
    with pytest.raises(SuiteError, match="needs NNCF's quantization"):
        cell("openvino", "int8_static")
