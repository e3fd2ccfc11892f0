"""A torch.export program run as a module: what static int8 (PT2E) and the `export` deploy
format ship. An exported module cannot be pickled, so this one pickles as the program's
saved bytes (torch.export.save) and is loaded again from them in the timing process."""

from __future__ import annotations

import importlib
import io
import logging

import torch
from torch import nn


class Program(nn.Module):
    suffix = ".pt2"  # the run directory keeps its saved program for the user (run/timing.py)

    def __init__(self, program: torch.export.ExportedProgram, blob: bytes | None = None):
        super().__init__()
        self.program = program.module()
        if blob is None:
            buf = io.BytesIO()
            torch.export.save(_shippable(program), buf)
            blob = buf.getvalue()
        self.blob = blob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)

    def train(self, mode: bool = True) -> "Program":
        # the program was traced in eval mode and cannot switch (an exported module raises)
        self.training = mode
        return self

    def __reduce__(self):
        return (load, (self.blob,))

    def __deepcopy__(self, memo):
        return load(self.blob)

    @property
    def saved_bytes(self) -> int:
        """The size of the saved program: its graph and its tensors."""
        return len(self.blob)


def _shippable(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """What ships and nothing else: without the example inputs torch.export keeps (saved as
    a pickle that outweighed a small int8 model fivefold) and without each node's stack
    trace and provenance (the source paths of the folder it was made in, and graph ids that
    are memory addresses: the same model made twice saved two different files)."""
    program.example_inputs = None
    for node in program.graph.nodes:
        for key in ("stack_trace", "from_node"):  # from_node: provenance by memory address
            node.meta.pop(key, None)
    return program


def load(blob: bytes) -> Program:
    _register_ops()
    return Program(torch.export.load(io.BytesIO(blob)), blob)


def export(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """`model` exported with a free batch dimension (the example needs two rows or more:
    export would specialise a batch of one)."""
    batch = torch.export.Dim.AUTO
    return torch.export.export(model, (example[:2],), dynamic_shapes=({0: batch},))


def strip_unused(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Drop the parameters and buffers the graph no longer reads (PT2E's convert keeps the
    float weights beside their int8 copies)."""
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name, _ in list(gm.named_parameters()) + list(gm.named_buffers()):
        if name not in used:
            owner, _, leaf = name.rpartition(".")
            delattr(gm.get_submodule(owner) if owner else gm, leaf)
    gm.delete_all_unused_submodules()
    return gm


def _register_ops() -> None:
    """A quantized program calls torchao's operators: they must exist before it loads."""
    try:
        import_quietly("torchao.quantization.pt2e")
    except ImportError:
        pass


PYTREE_LOG = "torch.utils._pytree"


def silence_pytree_log() -> None:
    """torchao 0.18 logs a deprecation of torch's pytree API on its first import, once per
    process: not the user's concern, and noise in a suite's output. Silenced from here on."""
    logging.getLogger(PYTREE_LOG).setLevel(logging.ERROR)


def import_quietly(module: str):
    """Import a torchao module without its pytree deprecation, leaving the log as it was."""
    log = logging.getLogger(PYTREE_LOG)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return importlib.import_module(module)
    finally:
        log.setLevel(level)
