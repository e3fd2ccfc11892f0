"""How a cell's model ships (`deploy:`): eager, torch.compile (inductor), or torch.export
compiled ahead of time by AOTInductor into a .pt2 package. Each turns the model the cell
would ship (trained, pruned or quantized) into the artifact whose outputs, size and latency
are measured. A compiled function or a loaded package cannot be pickled, so each wrapper
pickles as what it is made again from, in the timing process."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import nn

from modelopt.spec.registries import DEPLOYERS
from modelopt.techniques import program
from modelopt.techniques.errors import TechniqueError, first_line
from modelopt.techniques.quantize import Intent, Quantizer

Ship = Callable[[nn.Module, torch.Tensor], tuple[nn.Module, dict]]


# (the quantizer's intent, the trained model, calibration inputs) -> (the model, what it did)
Realise = Callable[[Intent, nn.Module, torch.Tensor], tuple[nn.Module, dict]]


@dataclass(frozen=True)
class Format:
    """A runtime a model ships on. `ship(model, batch)`: the artifact and what making it
    took (None: the model as is). `quantize`: how this runtime carries out a quantizer's
    intent, or None for PyTorch's own realisation (the quantizer's `convert`, then `ship`);
    `refuses(intent)`: why it cannot (None: it can)."""

    ship: Ship | None = None
    quantize: Realise | None = None
    refuses: Callable[[Intent], str | None] = lambda intent: None
    cpu: bool = False  # ships on the CPU, wherever the model trained (`device: cpu`)
    # what ships is a file the runtime reads (export's package; ONNX Runtime's and
    # OpenVINO's ONNX model), float or int8: the figures of size are the file's
    file: bool = False

    def cannot(self, quantizer: Quantizer) -> str | None:
        """Why this runtime cannot ship what the quantizer asks for (None: it can): checked
        when the suite loads, and again before it converts."""
        if quantizer.intent is not None and self.refuses(quantizer.intent):
            return self.refuses(quantizer.intent)
        if self.quantize is not None and quantizer.intent is None:
            return ("the quantizer states no intent (Quantizer.intent) that this runtime "
                    "could carry out its own way")
        if self.quantize is None and quantizer.convert is None and quantizer.intent is not None:
            return (f"it asks for {quantizer.intent.scheme} with no PyTorch conversion "
                    "(Quantizer.convert), which this runtime ships")
        return None

    def realise(self, quantizer: Quantizer, model: nn.Module, inputs: torch.Tensor,
                name: str = "") -> tuple[nn.Module, dict]:
        """The quantized model this runtime ships, from the trained one (left as it was);
        `name`: the quantizer's, for its errors."""
        why = self.cannot(quantizer)
        if why:
            raise TechniqueError(why)
        if self.quantize is not None:
            return self.quantize(quantizer.intent, model, inputs)
        out = quantizer.convert(model, inputs)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], nn.Module)
                and isinstance(out[1], dict)):  # a plugin's: said, not an unpacking error
            raise TechniqueError(
                f"quantizer '{name or '?'}': its convert returned {type(out).__name__}, not "
                "(model, info): "
                "return the converted nn.Module and a dict of what converting did ({} for "
                "nothing)")
        return out

    def converts(self, quantizer: Quantizer) -> bool:
        """Whether the quantizer changes the model that ships (not only hooks in training)."""
        return quantizer.convert is not None or quantizer.intent is not None


# where a model ships: on the device it trained on, or on the CPU (trained on a GPU, served
# on CPUs: a CPU copy is quantized, made, evaluated and timed there)
Device = Literal["trained", "cpu"]


@DEPLOYERS.register("eager")
def eager(*, device: Device = "trained") -> Format:
    """The module as trained, called from Python (the default). `device: cpu` ships it on
    the CPU though it trained on a GPU."""
    return Format(cpu=device == "cpu")


@DEPLOYERS.register("compile")
def compile_(*, mode: Literal["default", "reduce-overhead", "max-autotune"] = "default",
             dynamic: bool | None = None, device: Device = "trained") -> Format:
    """torch.compile with inductor, as a user calls it (`dynamic: null` is torch's default:
    specialise, then generalise on a second shape). Compile time is recorded apart.
    `device: cpu` compiles for the CPU though the model trained on a GPU."""
    return Format(lambda model, x: _warm(Compiled(model, mode, dynamic), x), cpu=device == "cpu")


@DEPLOYERS.register("export")
def export_(*, device: Device = "trained") -> Format:
    """torch.export with a free batch dimension, compiled by AOTInductor into a .pt2 package
    (aoti_compile_and_package) and run from it (aoti_load_package). `device: cpu` packages
    it for the CPU though it trained on a GPU."""
    return Format(_package, cpu=device == "cpu", file=True)  # the package ships


class Compiled(nn.Module):
    """`torch.compile(source)`, compiled on first call in whichever process calls it."""

    def __init__(self, source: nn.Module, mode: str, dynamic: bool | None):
        super().__init__()
        self.source, self.mode, self.dynamic = source, mode, dynamic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fn = self.__dict__.get("_fn")
        if fn is None:  # outside the module tree: not a submodule, not pickled
            fn = torch.compile(self.source, mode=self.mode, dynamic=self.dynamic)
            self.__dict__["_fn"], self.__dict__["_shapes"] = fn, set()
        if not isinstance(self.source, program.Program) or x.shape in self.__dict__["_shapes"]:
            return fn(x)
        # a PT2E int8 program is lowered to int8 kernels (oneDNN) only with freezing:
        # without it Inductor dequantizes the weights and runs float kernels. Each new shape
        # compiles under it; the calls timed after are plain
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True):
            out = fn(x)
        self.__dict__["_shapes"].add(x.shape)
        return out

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_fn", "_shapes")}


class Packaged(nn.Module):
    """An AOTInductor package, loaded on first call from its bytes."""

    suffix = ".pt2"  # the run directory keeps its file for the user (run/timing.py)

    def __init__(self, blob: bytes, device: str):
        super().__init__()
        self.blob = blob
        self.artifact_device = device  # compiled for it; a package has no parameters to say so

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        runner = self.__dict__.get("_runner")
        if runner is None:
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "model.pt2")
                with open(path, "wb") as f:
                    f.write(self.blob)
                runner = torch._inductor.aoti_load_package(path)
            self.__dict__["_runner"] = runner
        return runner(x)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_runner"}

    @property
    def saved_bytes(self) -> int:
        return len(self.blob)


def _warm(compiled: Compiled, x: torch.Tensor) -> tuple[nn.Module, dict]:
    """Compile for batch 1 and the batch size (the shapes timed), timing the compilation."""
    t0 = time.perf_counter()
    try:
        with torch.inference_mode():
            compiled(x[:1])
            compiled(x)
    except Exception as exc:  # noqa: BLE001 - the reason is the compiler's
        if isinstance(compiled.source, program.Program):  # never a float fall-back as int8
            raise TechniqueError("deploy: compile cannot lower this int8 program to int8 "
                                 f"kernels (Inductor, freezing): {first_line(exc)}") from None
        raise TechniqueError(f"deploy: compile failed: {first_line(exc)}") from None
    return compiled, {"compile_seconds": time.perf_counter() - t0, **_lowered(compiled.source)}


def _package(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, dict]:
    import torch._inductor

    t0 = time.perf_counter()
    try:
        exported = program.export(model.eval(), x)
        with tempfile.TemporaryDirectory() as d:
            path = torch._inductor.aoti_compile_and_package(
                exported, package_path=os.path.join(d, "model.pt2"))
            with open(path, "rb") as f:
                blob = f.read()
    except Exception as exc:  # noqa: BLE001 - the reason is torch.export's or the compiler's
        raise TechniqueError(f"deploy: export failed: {first_line(exc)}") from None
    return Packaged(blob, str(x.device)), {"compile_seconds": time.perf_counter() - t0,
                            "artifact_bytes": len(blob),
                            # AOTInductor's own lowering of q/dq is not checked here
                            **({"int8_path": "AOTInductor (int8 lowering not verified)"}
                               if isinstance(model, program.Program) else {})}


def _lowered(model: nn.Module) -> dict:
    """A PT2E int8 program compiled by Inductor with freezing runs on its int8 (oneDNN)
    kernels, not the reference path; where Inductor cannot lower it the cell failed.
    torchao's int8 tensors are compiled with the rest (no longer its eager dispatch)."""
    if isinstance(model, program.Program):
        return {"int8_path": "inductor int8 kernels (frozen)"}
    if any(type(p).__module__.startswith("torchao") for p in model.parameters()):
        return {"int8_path": "torchao int8 tensors (compiled)"}
    return {}
