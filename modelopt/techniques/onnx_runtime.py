"""`deploy: onnxruntime`: the model exported to ONNX and run by ONNX Runtime's CPU execution
provider, where people ship it; int8 there runs on ONNX Runtime's int8 kernels.

- float: the model traced to ONNX (onnx_export.py), checked against the model it was made
  from;
- `int8_static`: the float graph pre-processed (`quant_pre_process`: shape inference and
  folding; without it, measured here, the int8 model ran 0.76x eager fp32 instead of 4.4x),
  then `quantize_static` in QDQ format, per-channel int8 weights, uint8 activations
  calibrated on the cell's training inputs;
- `int8_dynamic`: `quantize_dynamic` of MatMul / Gemm (Linear layers), int8 weights,
  activations quantized on the fly;
- `int8_weight_only`: refused: ONNX Runtime's CPU provider has no int8 weight-only kernel.

The artifact is the ONNX file's bytes: what a user takes home, its size `artifact_bytes`.
A session cannot be pickled: the module pickles as its bytes and opens its session on first
call in whichever process calls it, with as many intra-op threads as torch has there.
"""

from __future__ import annotations

import os
import tempfile
import time
from importlib import metadata

import numpy as np
import torch
from torch import nn

from modelopt.spec.registries import DEPLOYERS
from modelopt.techniques import precision
from modelopt.techniques.deploy import Format
from modelopt.techniques.errors import TechniqueError, first_line
from modelopt.techniques.onnx_export import OPSET, branched, quiet, trace
from modelopt.techniques.quantize import Intent

PROVIDER = "CPUExecutionProvider"
CALIBRATION_BATCH = 64
SCHEMES = {"int8_static": "onnxruntime static QDQ, per-channel",
           "int8_dynamic": "onnxruntime dynamic (MatMul / Gemm)"}


def installed(package: str) -> str | None:
    """A package's installed version, without importing it (None: not installed)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def version() -> str | None:
    """ONNX Runtime's installed version (records carry it)."""
    return installed("onnxruntime")


def _require() -> None:
    missing = [p for p in ("onnx", "onnxruntime") if installed(p) is None]
    if missing:
        raise TechniqueError(f"deploy: onnxruntime needs {' and '.join(missing)} "
                             "(pip install 'modelopt[onnx]')")


class FileModel(nn.Module):
    """A model that ships as a file another runtime runs (ONNX Runtime, OpenVINO): its bytes
    pickle; the runtime's loaded object is made on first call in whichever process calls it,
    outside the module tree, and never pickled."""

    suffix = ".onnx"  # the run directory keeps its file for the user (run/timing.py)

    def __init__(self, blob: bytes):
        super().__init__()
        self.blob = blob

    def loaded(self, load):
        obj = self.__dict__.get("_loaded")
        if obj is None:
            obj = self.__dict__["_loaded"] = load()
        return obj

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_loaded"}

    @property
    def saved_bytes(self) -> int:
        return len(self.blob)

    @property
    def artifact_device(self) -> str:
        return "cpu"  # both runtimes here run on the CPU


class OrtModel(FileModel):
    """An ONNX model run by ONNX Runtime, from its bytes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the input's name once, not per call: get_inputs() builds its list anew each time,
        # harness overhead on a model that runs in 20 µs
        session, name = self.loaded(lambda: _named(_session(self.blob)))
        return torch.from_numpy(session.run(None, {name: x.detach().cpu().numpy()})[0])


def _named(session):
    return session, session.get_inputs()[0].name


def _session(blob: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as torch's, in this process
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(blob, options, providers=[PROVIDER])


def _refuses(intent: Intent) -> str | None:
    if intent.scheme == "int8_weight_only":
        return ("ONNX Runtime's CPU provider has no int8 weight-only kernel (its weight-only "
                "MatMulNBits is 4-bit); ship int8_weight_only on eager or compile")
    if intent.scheme in precision.DTYPES:
        return ("ONNX Runtime's CPU provider implements few operators in float16 or bfloat16 "
                "(modelopt does not convert ONNX models to them); ship "
                f"{intent.scheme} on eager, compile or export")
    if intent.scheme not in SCHEMES:
        return f"ONNX Runtime here quantizes {' and '.join(SCHEMES)}, not {intent.scheme}"
    return None


@DEPLOYERS.register("onnxruntime")
def onnxruntime() -> Format:
    """Exported to ONNX (opset 17, free batch dimension) and run by ONNX Runtime's CPU
    execution provider, with as many threads as torch; int8_static ships ONNX Runtime's
    static int8 (QDQ, per-channel, after quant_pre_process) and int8_dynamic its dynamic
    quantization of Linear layers, both on its int8 kernels. Needs modelopt[onnx]."""
    return Format(_ship, _quantize, _refuses, cpu=True, file=True)  # the CPU's provider


def _ship(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, dict]:
    if isinstance(model, OrtModel):  # quantized by this runtime: already its artifact
        return model, {}
    _require()
    t0 = time.perf_counter()
    blob = export_onnx(model, x)
    return OrtModel(blob), {"compile_seconds": time.perf_counter() - t0, **_facts(blob, None)}


def export_onnx(model: nn.Module, x: torch.Tensor, runtime: str = "onnxruntime") -> bytes:
    """The float model as ONNX bytes (opset OPSET, free batch dimension), checked against
    the model on `x` (with ONNX Runtime): what every ONNX-based runtime starts from."""
    with tempfile.TemporaryDirectory() as d:
        return _read(_export(model, x, d, runtime))


def _quantize(intent: Intent, model: nn.Module, inputs: torch.Tensor) -> tuple[nn.Module, dict]:
    """ONNX Runtime's own int8 model of `model` (left as it was), calibrated on `inputs`."""
    _require()
    from onnxruntime import quantization as q

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d, quiet():
        fp32 = _export(model, inputs[:CALIBRATION_BATCH], d)
        out = os.path.join(d, "int8.onnx")
        try:
            if intent.scheme == "int8_static":
                pre = os.path.join(d, "pre.onnx")
                q.shape_inference.quant_pre_process(fp32, pre)
                q.quantize_static(pre, out, _Calibration(inputs), quant_format=q.QuantFormat.QDQ,
                                  per_channel=True, activation_type=q.QuantType.QUInt8,
                                  weight_type=q.QuantType.QInt8)
            else:
                q.quantize_dynamic(fp32, out, op_types_to_quantize=["MatMul", "Gemm"],
                                   weight_type=q.QuantType.QInt8)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's reason, named
            raise TechniqueError(f"{intent.scheme} on onnxruntime: quantization failed: "
                                 f"{first_line(exc)}") from None
        blob = _read(out)
    facts = _facts(blob, intent.scheme)
    if not facts["quantized_layers"]:
        raise TechniqueError(f"{intent.scheme} on onnxruntime quantized none of the model's "
                             f"{facts['float_layers']} layers")
    return OrtModel(blob), {
        "quantized": True, "quantized_with": SCHEMES[intent.scheme],
        "int8_path": "onnxruntime int8 kernels",
        "calibration_samples": len(inputs) if intent.scheme == "int8_static" else 0,
        "compile_seconds": time.perf_counter() - t0, **facts}


class _Calibration:
    """ONNX Runtime's calibration reader over the cell's training inputs."""

    def __init__(self, inputs: torch.Tensor):
        self.batches = iter([{"x": inputs[i:i + CALIBRATION_BATCH].cpu().numpy()}
                             for i in range(0, len(inputs), CALIBRATION_BATCH)])

    def get_next(self):
        return next(self.batches, None)

    def rewind(self):  # ONNX Runtime's interface; one pass is all it takes here
        pass


def _export(model: nn.Module, x: torch.Tensor, folder: str, runtime: str = "onnxruntime"
            ) -> str:
    """The float model as an ONNX file in `folder`, checked against the model on `x`."""
    path = os.path.join(folder, "model.onnx")
    model = model.eval()  # on the CPU: a cell hands both runtimes a CPU copy (Format.cpu)
    where = trace(model, x, path, runtime)
    session = _session(_read(path))
    diff = _diff(model, session, x)
    if diff is not None:
        raise TechniqueError(f"deploy: {runtime}: the exported model's outputs differ from "
                             f"the model's (max |diff| {diff:.3g})")
    if where:
        branched(where, runtime,
                 lambda probe: _diff(model, session, probe, alike_nan=True) is not None, x)
    return path


def _diff(model: nn.Module, session, x: torch.Tensor, alike_nan: bool = False
          ) -> float | None:
    """max |file(x) - model(x)| where past 1e-3 of the outputs' scale, else None;
    `alike_nan`: a value both make inf or nan is alike (a probe of zeros may divide by 0)."""
    with torch.no_grad():
        want = model(x).float().cpu().numpy()
    got = session.run(None, {"x": x.cpu().numpy()})[0]
    d = np.abs(got - want)
    if alike_nan:
        d = np.where((got == want) | (np.isnan(got) & np.isnan(want)), 0.0, d)
        want = np.where(np.isfinite(want), want, 0.0)
    diff = float(d.max()) if want.size else 0.0
    return None if diff <= 1e-3 * (1 + float(np.abs(want).max())) else diff


def _facts(blob: bytes, scheme: str | None) -> dict:
    """What the record says about the artifact: bytes, opset, runtime, and how many of its
    weighted layers (Conv, Gemm, MatMul with a weight) run in int8 and how many in float."""
    import onnx

    graph = onnx.load_from_string(blob).graph
    stored = {i.name for i in graph.initializer}
    # int8 weights: a stored tensor dequantized (QDQ also dequantizes activations)
    dequantized = {n.output[0] for n in graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in stored}
    int8_ops = {"MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul",
                "DynamicQuantizeMatMul"}
    # a layer has a weight: a MatMul of two activations (attention's q kᵀ) is none
    weighted = [n for n in graph.node if n.op_type in {"Conv", "Gemm", "MatMul"}
                and any(i in stored | dequantized for i in n.input[:2])]
    # a QDQ layer: its weight input is a dequantized int8 initializer
    qdq = [n for n in weighted if len(n.input) > 1 and n.input[1] in dequantized]
    n_int8 = len(qdq) + sum(n.op_type in int8_ops for n in graph.node)
    facts = {"artifact_bytes": len(blob), "onnx_opset": OPSET, "runtime": "onnxruntime",
             "runtime_version": version(), "execution_provider": PROVIDER,
             "float_layers": len(weighted) - len(qdq)}
    return {**facts, "quantized_layers": n_int8} if scheme else facts


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
