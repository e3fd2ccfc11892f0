"""`deploy: openvino`: the model exported to ONNX (as for ONNX Runtime) and compiled by
OpenVINO for its CPU plugin, the runtime Intel's CPUs ship models on. Float only here:
OpenVINO's int8 models come from NNCF's quantization, which this version does not wire in
(an ONNX Runtime QDQ model ran slower than the float one in OpenVINO here), so a quantizer
with it is refused when the suite loads.

The artifact is the ONNX file; the compiled model is made on first call in whichever process
calls it, with as many inference threads as torch has there."""

from __future__ import annotations

import time
from typing import Literal

import torch
from torch import nn

from modelopt.spec.registries import DEPLOYERS
from modelopt.techniques import precision
from modelopt.techniques.deploy import Format
from modelopt.techniques.errors import TechniqueError
from modelopt.techniques.onnx_runtime import OPSET, FileModel, export_onnx, installed
from modelopt.techniques.quantize import Intent

DEVICE = "CPU"


def version() -> str | None:
    return installed("openvino")


class OvModel(FileModel):
    """An ONNX model compiled and run by OpenVINO, from its bytes."""

    def __init__(self, blob: bytes, precision: str = "f32"):
        super().__init__(blob)
        self.precision = precision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compiled = self.loaded(self._compile)
        return torch.from_numpy(compiled([x.detach().cpu().numpy()])[0].copy())

    def _compile(self):
        import openvino as ov

        core = ov.Core()
        return core.compile_model(core.read_model(self.blob), DEVICE, {
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "INFERENCE_PRECISION_HINT": self.precision})


def _refuses(intent: Intent) -> str | None:
    if intent.scheme == "bf16":
        return ("OpenVINO chooses its arithmetic itself: ship deploy: {name: openvino, "
                "precision: bf16} with no quantize (its CPU plugin computes in f32 or bf16)")
    if intent.scheme in precision.DTYPES:
        return (f"OpenVINO's CPU plugin computes in f32 or bf16, not {intent.scheme}; ship "
                f"{intent.scheme} on eager, compile or export")
    return (f"{intent.scheme} on OpenVINO needs NNCF's quantization, which this version does "
            "not wire in; ship int8 on onnxruntime")


@DEPLOYERS.register("openvino")
def openvino(*, precision: Literal["f32", "bf16"] = "f32") -> Format:
    """Exported to ONNX (opset 17, free batch dimension) and compiled by OpenVINO for its CPU
    plugin, with as many threads as torch, computing in `precision` (OpenVINO's own default
    is bf16 on CPUs with AMX: said here, never chosen silently); int8 is refused. Needs
    `pip install 'modelopt[openvino]'`."""
    return Format(lambda model, x: _ship(model, x, precision), refuses=_refuses,
                  cpu=True, file=True)  # its CPU plugin


def _ship(model: nn.Module, x: torch.Tensor, precision: str) -> tuple[nn.Module, dict]:
    if version() is None:
        raise TechniqueError("deploy: openvino needs openvino (pip install 'modelopt[openvino]')")
    t0 = time.perf_counter()
    blob = export_onnx(model, x, "openvino")
    shipped = OvModel(blob, precision)
    with torch.inference_mode():
        shipped(x.cpu()[:2])  # compiled here, so compile_seconds counts it
    return shipped, {"compile_seconds": time.perf_counter() - t0, "artifact_bytes": len(blob),
                     "onnx_opset": OPSET, "runtime": "openvino", "runtime_version": version(),
                     "execution_provider": f"{DEVICE} ({precision})"}
