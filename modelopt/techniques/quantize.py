"""Quantization (torchao: dynamic and weight-only int8 of Linear layers, static int8 of
convolutions and Linear layers through PT2E; torch.ao as the fallback where torchao is
absent, and for GRU layers) and weight clipping: each a Quantizer object."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
from torch import nn

from modelopt.spec.metric import INT8_REFERENCE as REFERENCE
from modelopt.spec.registries import QUANTIZERS
from modelopt.spec.registry import Positive, PositiveInt
from modelopt.techniques import program
from modelopt.techniques.errors import TechniqueError, first_line
from modelopt.techniques.layers import hf_conv1d

Hook = Callable[[nn.Module], None]
# (the trained model, training inputs: calibration, and the example export traces with)
Convert = Callable[[nn.Module, torch.Tensor], tuple[nn.Module, dict]]


@dataclass(frozen=True)
class Intent:
    """What a quantizer asks for, said once, whoever carries it out: a scheme
    (`int8_static`: int8 weights per channel and int8 activations with ranges calibrated on
    `calibration` training inputs; `int8_dynamic`: activations quantized on the fly;
    `int8_weight_only`; or a plugin's own) and its options. Each runtime realises it in its
    own way (deploy.Format.realise) or refuses with a reason."""

    scheme: str
    calibration: int = 0  # training inputs it calibrates on (0: none)
    options: tuple[tuple[str, object], ...] = ()  # e.g. (("layers", "linear_gru"),)


@dataclass(frozen=True)
class Quantizer:
    """What a quantize technique does: hooks after each optimizer step while training, and/or
    an `intent` for the model that ships, with `convert`, its realisation in PyTorch (what
    the eager, compile and export runtimes ship): a copy of the trained model (left as it
    was), and what it did, from `calibration` training inputs."""

    after_step: list[Hook] = field(default_factory=list)
    convert: Convert | None = None
    calibration: int = 2
    intent: Intent | None = None


Layers = Literal["linear", "linear_gru"]


@QUANTIZERS.register("int8_dynamic")
def int8_dynamic(*, layers: Layers = "linear") -> Quantizer:
    """Dynamic int8: int8 weights, activations quantized on the fly, in Linear layers
    (torchao's quantize_; torch.ao's quantize_dynamic where torchao is absent, or for GRU
    layers with layers: linear_gru). torchao's stays on the trained model's device (a CUDA
    cell's on the GPU); torch.ao's runs on the CPU only."""
    return Quantizer(convert=lambda model, x: _dynamic(model, layers),
                     intent=Intent("int8_dynamic", options=(("layers", layers),)))


@QUANTIZERS.register("dynamic_int8")
def dynamic_int8(*, layers: Layers = "linear_gru") -> Quantizer:
    """The former name of int8_dynamic (its GRU layers quantized too, as before)."""
    return Quantizer(convert=lambda model, x: _dynamic(model, layers),
                     intent=Intent("int8_dynamic", options=(("layers", layers),)))


@QUANTIZERS.register("int8_weight_only")
def int8_weight_only() -> Quantizer:
    """int8 weights of Linear layers, computed in float (torchao's quantize_), on the trained
    model's device (a CUDA cell's on the GPU)."""
    return Quantizer(convert=lambda model, x: _quantize_(model, "int8_weight_only"),
                     intent=Intent("int8_weight_only"))


@QUANTIZERS.register("int8_static")
def int8_static(*, calibration: PositiveInt = 512) -> Quantizer:
    """Static int8 through PT2E: export, torchao's X86InductorQuantizer (convolutions and
    Linear layers, per-channel weights), activation ranges observed on `calibration`
    training inputs, convert. Ships the exported program. CPU only."""
    return Quantizer(convert=_static, calibration=max(2, calibration),
                     intent=Intent("int8_static", max(2, calibration)))


@QUANTIZERS.register("weight_clip", trains=True)
def weight_clip(*, clip: Positive = 0.5) -> Quantizer:
    """Clip every weight to [-clip, clip] after each optimizer step."""
    def clamp(model: nn.Module) -> None:
        with torch.no_grad():
            for p in model.parameters():
                p.clamp_(-clip, clip)
    return Quantizer(after_step=[clamp])


def float_copy(model: nn.Module, on_cpu: bool = True) -> nn.Module:
    # torch.ao's and PT2E's x86 int8 kernels exist for the CPU only: their copy is measured
    # there; torchao's int8 tensors run on any device (on CUDA, through int_mm or cuBLAS)
    if not on_cpu:
        return copy.deepcopy(model).eval()
    # a GPU model's tensors are copied straight to the CPU (deepcopy takes them from the
    # memo): a whole copy on the GPU first would double its weights there for a moment.
    # Keyed by identity, so tied weights stay tied.
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(p.detach().to("cpu", copy=True), p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = b.detach().to("cpu", copy=True)
    return copy.deepcopy(model, memo).cpu().eval()


def torchao_version() -> str | None:
    """torchao's installed version, without importing it (records carry it)."""
    from importlib import metadata

    try:
        return metadata.version("torchao")
    except metadata.PackageNotFoundError:
        return None


def _torchao(module: str, technique: str):
    try:
        return program.import_quietly(module)
    except ImportError:
        raise TechniqueError(f"{technique} needs torchao (pip install 'modelopt[quant]')") from None


def _dynamic(model: nn.Module, layers: str) -> tuple[nn.Module, dict]:
    has_gru = any(isinstance(m, nn.GRU) for m in model.modules())
    if (layers == "linear_gru" and has_gru) or torchao_version() is None:
        return _torch_ao(model, layers)
    return _quantize_(model, "int8_dynamic")


# the layers an int8 conversion may quantize: what it leaves are the row's float layers
WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.GRU)


def _weighted(model: nn.Module) -> int:
    return sum(isinstance(m, WEIGHTED) or hf_conv1d(m) for m in model.modules())


def _linears(model: nn.Module, name: str) -> list[nn.Linear]:
    found = [m for m in model.modules() if type(m) is nn.Linear]
    if not found:
        present = sorted({type(m).__name__ for m in model.modules() if not list(m.children())})
        raise TechniqueError(
            f"{name} quantizes Linear layers, and the model ({type(model).__name__}) has none"
            f" (exact type, not subclasses): its layers are {', '.join(present)}. Use"
            " int8_static for convolutions")
    return found


def _quantize_(model: nn.Module, name: str) -> tuple[nn.Module, dict]:
    """torchao's quantize_ on every Linear layer of a float copy."""
    tq = _torchao("torchao.quantization", name)
    fp32 = float_copy(model, on_cpu=False)
    linears = _linears(fp32, name)
    config = (tq.Int8DynamicActivationInt8WeightConfig if name == "int8_dynamic"
              else tq.Int8WeightOnlyConfig)(set_inductor_config=False)  # no global side effects
    tq.quantize_(fp32, config)
    for m in fp32.modules():
        # torchao sets extra_repr to a functools.partial, which cannot be pickled
        m.__dict__.pop("extra_repr", None)
    n = sum(isinstance(m.weight, tq.Int8Tensor) for m in linears)
    if n < len(linears):
        raise TechniqueError(f"{name} quantized {n} of the model's {len(linears)} Linear layers")
    return fp32, {"quantized": True, "quantized_layers": n, "quantized_with": "torchao",
                  "float_layers": _weighted(fp32) - n, "int8_path": "torchao int8 tensors (eager)"}


def _static(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, dict]:
    """PT2E: export, prepare with the x86 quantizer, calibrate, convert; the unused float
    weights dropped; shipped as the exported program (techniques/program.py)."""
    xiq = _torchao("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer", "int8_static")
    pt2e = _torchao("torchao.quantization.pt2e.quantize_pt2e", "int8_static")
    fp32 = float_copy(model)
    try:
        traced = program.export(fp32, x).module()
    except Exception as exc:  # noqa: BLE001 - the reason is torch.export's
        raise TechniqueError(f"int8_static: torch.export cannot trace the model: "
                             f"{first_line(exc)}") from None
    name_sources(traced, fp32)
    quantizer = xiq.X86InductorQuantizer().set_global(
        xiq.get_default_x86_inductor_quantization_config())
    try:
        prepared = pt2e.prepare_pt2e(traced, quantizer)
    except Exception as exc:  # noqa: BLE001 - torchao's reason, named
        raise TechniqueError(f"int8_static: torchao's X86InductorQuantizer cannot annotate the"
                             f" model: {type(exc).__name__}: {exc}") from None
    with torch.no_grad():
        for i in range(0, len(x), 64):
            prepared(x[i:i + 64])
    converted = program.strip_unused(pt2e.convert_pt2e(prepared))
    layers = _weighted(fp32)
    n = _int8_layers(converted)
    if n == 0:
        raise TechniqueError(f"int8_static quantized none of the model's {layers} Linear /"
                             " convolution / GRU layers")
    shipped = program.Program(program.export(converted, x))
    # run as it is (deploy: eager), the program quantizes and dequantizes around float
    # kernels: a check of int8's numerics, not its speed (compile / export lower it)
    return shipped, {"quantized": True, "quantized_layers": n, "quantized_with": "torchao pt2e",
                     "float_layers": layers - n, "int8_path": REFERENCE,
                     "calibration_samples": len(x), "artifact_bytes": shipped.saved_bytes}


def name_sources(gm: torch.fx.GraphModule, model: nn.Module) -> None:
    """Each operator's layer type, where export did not record it. The x86 quantizer finds
    layers by `source_fn_stack`, which non-strict export leaves out: torch 2.14 falls back
    to the module stack, torch 2.11 (a lent GPU machine's) quantized none of a model's layers.
    Keyed by the module's path, as that fallback does."""
    for node in gm.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op != "call_function" or node.meta.get("source_fn_stack") or not stack:
            continue
        path = list(stack.values())[-1][0]
        try:
            layer = model.get_submodule(path)
        except AttributeError:  # a path export wrote otherwise: left to torch's matcher
            continue
        node.meta["source_fn_stack"] = [(path, type(layer))]


def _int8_layers(gm: torch.fx.GraphModule) -> int:
    """Convolutions and linear layers of the graph whose weight is an int8 tensor's
    dequantization."""
    aten = torch.ops.aten
    layers = {aten.conv1d.default, aten.conv2d.default, aten.linear.default}
    return sum(1 for n in gm.graph.nodes
               if n.op == "call_function" and n.target in layers and len(n.args) > 1
               and isinstance(n.args[1], torch.fx.Node) and "dequantize" in str(n.args[1].target))


def _torch_ao(model: nn.Module, layers: str) -> tuple[nn.Module, dict]:
    """torch.ao's quantize_dynamic (deprecated; kept where torchao is absent, and for GRU)."""
    from torch.ao.nn.quantized import dynamic as nnqd
    from torch.ao.quantization import quantize_dynamic

    types = {nn.Linear} | ({nn.GRU} if layers == "linear_gru" else set())
    fp32 = float_copy(model)
    with warnings.catch_warnings():
        # torch 2.14 warns once per layer that quantized tensors are deprecated (the docs
        # say so once); the warning would flood a suite's progress output
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor",
                                category=UserWarning)
        q = quantize_dynamic(fp32, types, dtype=torch.qint8)
    # quantize_dynamic leaves a model without those layer types as it was, with no word: an
    # "int8" cell would then measure the float model
    n = sum(isinstance(m, (nnqd.Linear, nnqd.GRU)) for m in q.modules())
    for float_type, int8_type in ((nn.Linear, nnqd.Linear), (nn.GRU, nnqd.GRU)):
        had = sum(type(m) is float_type for m in fp32.modules())
        got = sum(isinstance(m, int8_type) for m in q.modules())
        if float_type in types and got < had:
            raise TechniqueError(f"int8_dynamic quantized {got} of the model's {had} "
                                 f"{float_type.__name__} layers")
    if n == 0:
        asked = " and ".join(t.__name__ for t in sorted(types, key=lambda t: t.__name__))
        present = sorted({type(m).__name__ for m in model.modules() if not list(m.children())})
        raise TechniqueError(
            f"int8_dynamic (layers: {layers}) quantizes {asked} layers, and the model"
            f" ({type(model).__name__}) has none (quantize_dynamic matches exact types, not"
            f" subclasses): its layers are {', '.join(present)}. Dynamic int8 has no Conv"
            " kernels; use a model with Linear layers or no quantize")
    return q, {"quantized": True, "quantized_layers": n, "quantized_with": "torch.ao",
               "float_layers": _weighted(fp32) - n,
               "int8_path": "torch.ao int8 kernels",
               "quantized_engine": torch.backends.quantized.engine}
