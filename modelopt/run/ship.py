"""The deploy stage of a cell: the model that ships, made from the trained (or slimmed)
network by the cell's quantizer and deploy format, checked against what it was made from,
and its test figures. The timing stage makes it again the same way (rebuild.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from modelopt.results.metrics import PER_MODEL
from modelopt.run import backends, measure
from modelopt.run.plan import Trained
from modelopt.run.rebuild import Shipped
from modelopt.run.train import predict
from modelopt.spec import outcomes
from modelopt.spec.cell import Cell, Choice
from modelopt.techniques import tasks
from modelopt.techniques.data import Data, train_sample
from modelopt.techniques.deploy import Format
from modelopt.techniques.errors import TechniqueError, first_line


@dataclass
class Deployed:
    """The model that ships (the int8 copy, or the trained model, as its deploy format makes
    it: compiled, packaged), the model it is counted on (parameters, size: before the
    format wraps it, or a runtime's own file), what converting it did, and its test figures
    where they differ from the trained model's."""

    model: nn.Module
    counted: nn.Module
    info: dict
    test: dict
    outputs: torch.Tensor | None = None  # its test outputs, where this stage computed them
    calibration: torch.Tensor | None = None  # the quantizer's inputs, where it converted
    on: object = None  # where it runs (a backend: the CPU for int8 kernels)


def converted(cell: Cell, net: nn.Module, data: Data, inputs: torch.Tensor | None = None
              ) -> tuple[nn.Module, dict, torch.Tensor | None]:
    """`net` as the cell's quantizer converts it for its runtime (itself, on the device it
    ships from, where nothing converts), what converting did, and the calibration inputs
    (drawn from the training split unless given: a slimmed model takes its dense twin's)."""
    fmt = runtime(cell.deploy)
    model = on_its_device(net, fmt)
    quantizer = cell.compress.quantize.build() if cell.compress.quantize is not None else None
    if quantizer is None or not fmt.converts(quantizer):
        return model, {}, None
    if inputs is None:
        inputs, _ = train_sample(data, quantizer.calibration)
    model, info = fmt.realise(quantizer, model, inputs, cell.compress.quantize.name)
    return model, info, inputs


def deploy(cell: Cell, trained: Trained) -> Deployed:
    """The model that ships: the quantizer's conversion of the trained model, if it has one,
    then the deploy format's artifact of it. What ships is what counts: its every test
    figure, loss included."""
    fmt = runtime(cell.deploy)
    model, info, inputs = converted(cell, trained.net, trained.data)
    on = backends.on_device_of(model)  # x86 int8 kernels are the CPU's; torchao's any
    if on.device != backends.on_device_of(trained.net).device:  # env names the training's
        info["shipped_on"] = on.device
    shipped, made, outputs = ship_checked(cell, model, trained.data, on)
    info.update(made)
    if shipped is trained.net:
        return Deployed(shipped, model, info, {}, on=on)
    if outputs is None:
        outputs = shipped_outputs(shipped, trained.data, on, cell)
    bad = int((~torch.isfinite(outputs)).sum())
    if bad:  # e.g. float16's range (±65504) overflowed: never figures of something else
        raise TechniqueError(f"the shipped model's test outputs are not finite ({bad} of "
                             f"{outputs.numel()} values inf or nan): it overflowed where the "
                             "trained model did not")
    return Deployed(shipped, shipped if fmt.file else model, info,
                    test_metrics(outputs, trained.data), outputs, inputs, on)


def ship_slimmed(cell: Cell, slimmed: nn.Module, data: Data, deployed: Deployed
                 ) -> tuple[Shipped, dict]:
    """What structured pruning ships: the slimmed network through the cell's quantizer (on
    the calibration inputs of the model it equals) and deploy format, as the masked model
    ships; its figures that differ from the float slimmed model's (size, what making and
    converting it took)."""
    fmt = runtime(cell.deploy)
    model, info, inputs = converted(cell, slimmed, data, deployed.calibration)
    shipped, made, _ = ship_checked(cell, model, data, backends.on_device_of(model))
    figures = {k: v for k, v in {**info, **made}.items() if k in PER_MODEL}  # its own
    counted = shipped if fmt.file else model
    if counted is not slimmed:  # its size is what ships: the int8 copy's, the runtime's file
        figures["size_bytes"] = measure.size_bytes(counted)
    return Shipped(slimmed, shipped, inputs is not None, inputs), figures


def ship_checked(cell: Cell, model: nn.Module, data: Data, on
                 ) -> tuple[nn.Module, dict, torch.Tensor | None]:
    """The deploy format's artifact of `model`, what making it took, and its test outputs
    (None when it is `model` itself), checked against the model's (`on`: where both run)."""
    info: dict = {}
    shipped = ship(cell.deploy, model, out_batch(data, cell), info)
    if shipped is model:
        return shipped, info, None
    reference = predict(model, data.x_test, on, cell.train.settings.eval_batch_size)
    outputs = shipped_outputs(shipped, data, on, cell)
    info.update(check_outputs(outputs, reference, data, cell))
    return shipped, info, outputs


def shipped_outputs(shipped: nn.Module, data: Data, on, cell: Cell) -> torch.Tensor:
    """The shipped model's test outputs. One that does not run (torchao's int8 weight used
    transposed outside its layer, an ONNX Runtime session that cannot be made) fails the
    cell as what the quantizer and format made, not as a library's bare error."""
    try:
        return predict(shipped, data.x_test, on, cell.train.settings.eval_batch_size)
    except TechniqueError:
        raise
    except Exception as exc:  # noqa: BLE001 - the library's reason, named
        made = " on ".join(c.name for c in (cell.compress.quantize, cell.deploy) if c)
        raise TechniqueError(f"the shipped model ({made or 'eager'}) does not run on the test "
                             f"inputs: {first_line(exc)}") from exc


def on_its_device(model: nn.Module, fmt: Format) -> nn.Module:
    """The model a format ships from: a CPU copy where the suite ships on the CPU a model
    that trained on a GPU (`deploy: {device: cpu}`), else the model itself."""
    from modelopt.techniques import quantize

    if fmt.cpu and backends.on_device_of(model) is not backends.CPU:
        return quantize.float_copy(model)
    return model


def out_batch(data: Data, cell: Cell) -> torch.Tensor:
    """The batch latency is timed at (and compilation specialises for): test inputs."""
    return data.x_test[:cell.train.settings.batch_size]


def runtime(deploy: Choice | None) -> Format:
    """The runtime a cell's model ships on (eager where it names none)."""
    return deploy.build() if deploy is not None else Format()


def ship(deploy: Choice | None, model: nn.Module, batch: torch.Tensor, info: dict) -> nn.Module:
    """The deploy format's artifact of `model` (itself when eager); adds what making it took
    (compile seconds, package bytes) to `info`."""
    fmt = runtime(deploy)
    if fmt.ship is None:
        return model
    # compiled and traced as it runs: in eval mode (batch norm's running statistics; a
    # batch of one has no batch statistics to take)
    artifact, made = fmt.ship(model.eval(), batch.to(backends.on_device_of(model).device))
    info.update(made)
    return artifact


def check_outputs(out: torch.Tensor, reference: torch.Tensor, data: Data, cell: Cell) -> dict:
    """The artifact's test outputs against the model's; a mismatch fails the cell."""
    diff = float((out - reference).abs().max()) if len(out) else 0.0
    agreed, ok = tasks.of(data).check(out, reference)  # the task's own check
    figures = {"deploy_max_abs_diff": diff, **agreed}
    if not ok or not math.isfinite(diff):
        raise TechniqueError(
            f"deploy: {cell.deploy.name}: the artifact's test outputs differ from the"
            f" model's it was made from (max |diff| {diff:.3g}"
            + (f", classes agree on {figures['deploy_agreement']:.1%}" if "deploy_agreement"
               in figures else "") + ")")
    return figures


def test_metrics(out: torch.Tensor, data: Data) -> dict:
    """The task's test figures, loss included, of a model's outputs on the test split, and
    how each test sample went where the task says (outcomes.KEY: the record's `extra`
    keeps them, not its figures)."""
    task = tasks.of(data)
    each = task.outcomes(out, data)
    return {**task.metrics(out, data),
            **(outcomes.kept(each, data.y_test, data.num_classes) if each is not None
               else {})}
