"""A model traced to an ONNX file (torch.onnx.export, the TorchScript exporter, a free batch
dimension): what every ONNX-based runtime ships (onnxruntime, openvino).

A trace records the operations one example batch ran. A Python `if` on a tensor's value in
the model's own code is kept as the branch that batch took, and the file would compute
another model on inputs that take the other: where the model's code branched and the file
differs from the model on other inputs, it is refused, as torch.export refuses it for
static int8. Branches inside installed libraries (transformers' attention masks) are theirs
to make traceable; the cell's check of the file's outputs on the whole test split stands
for them."""

from __future__ import annotations

import contextlib
import linecache
import logging
import os
import site
import sys
import sysconfig
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from modelopt.techniques import attention
from modelopt.techniques.errors import TechniqueError, first_line

OPSET = 17  # ONNX Runtime 1.20+ runs it; the TorchScript exporter's best-tested opset


def trace(model: nn.Module, x: torch.Tensor, path: str, runtime: str) -> str | None:
    """Write `model`'s ONNX file, traced on `x`, to `path` (the exporter's failure is the
    cell's error); returns where the model's own code branched on a traced tensor, for
    `branched` to try the file on other inputs."""
    with quiet() as caught, attention.unfused(), torch.no_grad():
        try:
            with _c_stderr_muted():  # the exporter prints its whole graph when it fails
                torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["y"],
                                  dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                                  opset_version=OPSET, dynamo=False)
        except Exception as exc:  # noqa: BLE001 - the exporter's reason, named
            raise TechniqueError(f"deploy: {runtime}: torch.onnx.export failed: "
                                 f"{first_line(exc)}") from None
    return own_branch(caught)


def branched(where: str, runtime: str, differs: Callable[[torch.Tensor], bool],
             x: torch.Tensor) -> None:
    """A branch on a traced tensor (`where`) is a shape check (`assert x.size(1) <= n`: one
    shape is traced, one runs) or a choice by value (`if x.mean() > 0`), which the warning
    does not tell apart: the file is tried on inputs of the traced shape whose values are
    not the traced batch's, and one whose outputs differ from the model's fails the cell."""
    if any(differs(probe) for probe in _probes(x)):
        raise TechniqueError(
            f"deploy: {runtime}: the model branches on a tensor's value at {where}: its ONNX "
            "file, a trace of one batch, kept only the branch that batch took and computes "
            "another model on other inputs. Write the branch as tensor operations "
            "(torch.where), or ship it eager or compiled")


def _probes(x: torch.Tensor) -> list[torch.Tensor]:
    """Inputs of `x`'s shape and kind with other values: negated, scaled, noise, zeros;
    token ids reversed and drawn at random among those seen."""
    g = torch.Generator().manual_seed(0)
    if x.is_floating_point():
        return [-x, 10 * x, torch.randn(x.shape, generator=g).to(x), torch.zeros_like(x)]
    top = int(x.max()) + 1 if x.numel() else 1
    return [x.flip(-1), torch.randint(0, top, x.shape, generator=g).to(x)]


def own_branch(caught: list[warnings.WarningMessage]) -> str | None:
    """Where the model's own code turned a traced tensor into a Python bool, as
    `file.py:line (`the line`)`; None where nothing outside the installed libraries did."""
    for w in caught:
        if (issubclass(w.category, torch.jit.TracerWarning)
                and "Python boolean" in str(w.message) and not _installed(w.filename)):
            line = linecache.getline(w.filename, w.lineno).strip()
            return f"{Path(w.filename).name}:{w.lineno}" + (f" (`{line}`)" if line else "")
    return None


def _installed(filename: str) -> bool:
    """A file of an installed package or of Python itself (not the user's model code)."""
    roots = {*site.getsitepackages(), site.getusersitepackages(),
             sysconfig.get_paths()["stdlib"], str(Path(torch.__file__).parent)}
    path = os.path.realpath(filename)
    return any(path.startswith(os.path.realpath(r) + os.sep) for r in roots if r)


@contextlib.contextmanager
def quiet():
    """The exporter's and quantizer's warnings and log lines kept out of the progress;
    the warnings are kept, in the list it yields, for what they say of the trace."""
    level = logging.root.manager.disable
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logging.disable(logging.WARNING)
        try:
            yield caught
        finally:
            logging.disable(level)


@contextlib.contextmanager
def _c_stderr_muted():
    """The exporter's C++ log (its whole graph when it fails, on stdout by default) sent to
    the process's stderr and that discarded for the block. Python's own warnings are
    caught above; an exception still propagates with its message."""
    torch._C._jit_set_onnx_log_output_stream("stderr")  # unbuffered: written before restored
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "wb") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            torch._C._jit_set_onnx_log_output_stream("stdout")  # torch's own default
