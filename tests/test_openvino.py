"""deploy: openvino: the model's ONNX file compiled by OpenVINO's CPU plugin, in float
(techniques/openvino_runtime.py); int8 is refused when the suite loads. The cells run in a
child process: OpenVINO's runtime is never loaded into the test session itself (a session
that had loaded it once ended in a segmentation fault minutes later, not reproduced alone)."""

import json
import subprocess
import sys

import pytest

from modelopt.spec.schema import SuiteError
from modelopt.spec.suite import parse

pytest.importorskip("openvino")

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

CHILD = r"""
import json, sys, tempfile, torch
from pathlib import Path
from modelopt.run import rebuild, timing
from modelopt.run.cell import run_cell
from modelopt.spec.suite import parse
from modelopt.techniques.openvino_runtime import OvModel

suite = sys.argv[1]
cell = lambda d: parse(suite.replace("DEPLOY", d)).cells[0]
eager, out = run_cell(cell("eager"), 0), run_cell(cell("openvino"), 0)
m, shipped = out.metrics, out.models["model"].shipped
d = Path(tempfile.mkdtemp())
timing.save_all(d, "c", 0, out.models, out.example, out.batch, out.input_shape, out.num_outputs)
model, _, batch = rebuild.load(d / "c-0-model.pt", rebuild.Recipe.of(cell("openvino")))
with torch.inference_mode():
    again = bool(torch.allclose(model(batch), eager.models["model"].shipped(batch), atol=1e-3))
print(json.dumps({"is_ov": isinstance(shipped, OvModel), "blob": len(shipped.blob),
                  "again": again, "rebuilt_ov": isinstance(model, OvModel),
                  **{k: m[k] for k in ("artifact_bytes", "size_bytes", "deploy_agreement",
                                       "deploy_max_abs_diff", "runtime",
                                       "execution_provider")}}))
"""


def test_a_float_model_ships_on_openvino_checked_and_timed_again():
    r = subprocess.run([sys.executable, "-c", CHILD, SUITE], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert m["is_ov"] and m["rebuilt_ov"] and m["artifact_bytes"] == m["size_bytes"] == m["blob"]
    assert m["deploy_agreement"] >= 0.99 and m["deploy_max_abs_diff"] < 1e-3  # f32, not bf16
    assert (m["runtime"], m["execution_provider"]) == ("openvino", "CPU (f32)")
    assert m["again"]  # the timing process's rebuild gives the eager model's outputs


def test_int8_on_openvino_is_refused_when_the_suite_loads():
    with pytest.raises(SuiteError, match="needs NNCF's quantization"):
        parse(SUITE.replace("DEPLOY", "openvino") + "  quantize: int8_static\n")
