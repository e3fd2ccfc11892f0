"""A cell's shipped model saved as data, and built again from it: what the timing stage times.

A results directory may come from anywhere (a CI artifact, a colleague's run, a release).
A pickled module runs code when it is loaded, and so do `torch.export.load` (it unpickles)
and an AOTInductor package (a compiled shared library). So a cell saves only tensors,
numbers and strings (`torch.load(..., weights_only=True)` reads them and nothing else),
and the timing process makes the model again the way the cell made it: the architecture
from the cell's validated config, resized to the saved shapes (a slimmed model), the saved
weights, the cell's quantizer (static int8 calibrated again on the saved calibration
inputs), the cell's deploy format. The rebuilt model must compute the outputs the cell's own
shipped model computed on the saved batch, or it is not timed (docs/explanation/security.md).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from modelopt.results.files import open_own
from modelopt.spec.cell import Cell, Choice

FORMAT = 2  # 1: a pickled module (before 0.2); never loaded
# the rebuilt model's outputs on the saved batch against the cell's: wrong weights or a wrong
# architecture differ by the outputs' own size; another CPU's int8 or float kernels by far less
REBUILD_TOLERANCE = 0.05


class NotRebuildable(Exception):
    """A saved model that cannot be made again safely; the message says why and what to do."""


@dataclass
class Shipped:
    """One model a cell ships, as the timing stage rebuilds it: the float module it starts
    from (trained, pruned or slimmed; eager), whether the cell's quantizer converts it (and on
    which calibration inputs), and the module that ships (its outputs are the reference)."""

    source: nn.Module
    shipped: nn.Module
    quantized: bool = False
    calibration: torch.Tensor | None = None


def save(path: str | Path, item: Shipped, example: torch.Tensor, batch: torch.Tensor,
         input_shape: tuple, num_outputs: int) -> None:
    """The model as tensors and numbers only; atomic, and no partial file is left behind."""
    state = item.source.state_dict()
    odd = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise NotRebuildable(f"its state_dict holds non-tensor entries ({', '.join(odd[:3])})")
    with torch.inference_mode():
        device = device_of(item.shipped, item.source)
        reference = item.shipped.eval()(batch.to(device)).float().cpu()
    doc = {"format": FORMAT, "state": {k: v.detach().cpu() for k, v in state.items()},
           "input_shape": [int(n) for n in input_shape], "num_outputs": int(num_outputs),
           "quantized": bool(item.quantized),
           "calibration": None if item.calibration is None else item.calibration.cpu(),
           "example": example.cpu(), "batch": batch.cpu(), "reference": reference,
           "device": str(device_of(item.source, item.source))}
    from modelopt.run.dense import save as save_whole

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_whole(doc, path)


def device_of(model: nn.Module, fallback: nn.Module) -> torch.device:
    """Where a model runs: a package's own device, else its first tensor's (or the
    fallback's)."""
    device = getattr(model, "artifact_device", None)
    if device:
        return torch.device(device)
    for m in (model, fallback):
        t = next((p for p in (*m.parameters(), *m.buffers())), None)
        if t is not None:
            return t.device
    return torch.device("cpu")


def load_data(path: str | Path):
    """torch.load of a file a run saved, as data only (weights_only=True: no fall-back), and
    only as torch.save writes it: a plain file (a FIFO blocked its reader for ever, a link
    read another file) holding a zip archive of uncompressed entries (a deflated one of a
    1.5 MB file unpacked to 2.4 GB of memory)."""
    with os.fdopen(open_own(path, os.O_RDONLY), "rb") as f:
        try:
            with zipfile.ZipFile(f) as archive:
                packed = [i.filename for i in archive.infolist()
                          if i.compress_type != zipfile.ZIP_STORED]
        except zipfile.BadZipFile:
            raise ValueError("not the zip archive torch.save writes") from None
        if packed:
            raise ValueError(f"{len(packed)} of its entries are compressed, which torch.save "
                             "never does: one could unpack to gigabytes")
        f.seek(0)
        return torch.load(f, weights_only=True, map_location="cpu")


def read(path: str | Path) -> dict:
    """The saved document, read as data (load_data)."""
    try:
        doc = load_data(path)
    except pickle.UnpicklingError:
        raise NotRebuildable(f"{Path(path).name} is not a file of tensors and numbers but holds "
                             "pickled objects, which can run code when loaded (a model saved by "
                             "a modelopt before 0.2, or a tampered file): not loaded; run the "
                             "suite again to time it") from None
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file, said as such
        raise NotRebuildable(f"{Path(path).name} cannot be read ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    want = {"format": int, "state": dict, "input_shape": list, "num_outputs": int,
            "quantized": bool, "example": torch.Tensor, "batch": torch.Tensor,
            "reference": torch.Tensor, "device": str}
    bad = [k for k, t in want.items() if not isinstance(doc, dict) or not isinstance(doc.get(k), t)]
    if bad or doc.get("format") != FORMAT:
        fmt = doc.get("format") if isinstance(doc, dict) else None  # text from the file: not said
        raise NotRebuildable(f"{Path(path).name} is not a model file of this modelopt "
                             f"(format {fmt if isinstance(fmt, int) else '?'}"
                             f"{', missing ' + ', '.join(bad) if bad else ''})")
    tensors = [*doc["state"].values(), doc["example"], doc["batch"], doc["reference"],
               doc.get("calibration")]
    if any(isinstance(t, torch.Tensor) and _expanded(t) for t in tensors):
        raise NotRebuildable(f"{Path(path).name} holds a tensor larger than the bytes it "
                             "stores (expanded strides): not a file modelopt saved")
    return doc


def _expanded(t: torch.Tensor) -> bool:
    """A tensor whose elements share storage (a stride of 0): a few bytes on disk that
    loading into a model would make gigabytes of."""
    if t.is_quantized or t.layout is not torch.strided:
        return False
    return t.numel() * t.element_size() > t.untyped_storage().nbytes()


@dataclass(frozen=True)
class Recipe:
    """What a saved model is made again with: its architecture, its quantizer and its deploy
    format, checked against the registries."""

    model: Choice
    quantize: Choice | None = None
    deploy: Choice | None = None

    @classmethod
    def of(cls, cell: Cell) -> "Recipe":
        return cls(cell.model, cell.compress.quantize, cell.deploy)


def recipe_of_record(cell: dict, trusted_factories: frozenset[str] | None) -> Recipe:
    """The recipe of a recorded cell (its model, quantize and deploy, checked against the
    registries: spec/cells.py `recorded_choices`). `trusted_factories`: the import-path
    names the user's suite names; any other is not imported (None: all trusted)."""
    from modelopt.spec import plugins
    from modelopt.spec.cells import recorded_choices

    plugins.load()
    try:
        return Recipe(**recorded_choices(cell, ("model", "quantize", "deploy"),
                                         trusted_factories))
    except ValueError as exc:
        raise NotRebuildable(str(exc)) from None


def fit_shapes(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Resize `model`'s parameters and buffers to the saved shapes (structured pruning's
    slimmed model has fewer channels) and set the layer attributes the shapes determine."""
    for prefix, module in model.named_modules():
        changed = False
        for table in (module._parameters, module._buffers):
            for name, t in list(table.items()):
                saved = state.get(f"{prefix}.{name}" if prefix else name)
                if t is None or saved is None or saved.shape == t.shape:
                    continue
                new = torch.empty(saved.shape, dtype=t.dtype, device=t.device)
                table[name] = nn.Parameter(new, t.requires_grad) if isinstance(t, nn.Parameter) else new
                changed = True
        if changed:
            _sync_attributes(module)


def _sync_attributes(module: nn.Module) -> None:
    w = getattr(module, "weight", None)
    if isinstance(module, nn.modules.conv._ConvNd):
        depthwise = module.groups > 1 and module.groups == module.in_channels
        per_group = module.out_channels // module.groups
        module.out_channels = w.shape[0]
        if depthwise:
            module.groups = w.shape[0] // per_group
        module.in_channels = w.shape[1] * module.groups
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = w.shape
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        module.num_features = (w if w is not None else module.running_mean).shape[0]
    elif isinstance(module, nn.LayerNorm) and w is not None:
        module.normalized_shape = tuple(w.shape)
    elif isinstance(module, nn.GroupNorm) and w is not None:
        module.num_channels = w.shape[0]


def _fits_in_memory(recipe: Recipe, doc: dict) -> None:
    """The architecture a record names is built before the saved weights are loaded into it:
    a record from elsewhere could name one of many gigabytes (`hidden: 20000`). Counted first
    on the meta device (no memory); refused past half of what this machine has free."""
    import psutil

    from modelopt.techniques import models

    try:
        with torch.device("meta"):
            net = models.build(recipe.model, tuple(doc["input_shape"]), doc["num_outputs"],
                               trained=False)
        need = sum(t.numel() * t.element_size() for t in (*net.parameters(), *net.buffers()))
    except Exception:  # noqa: BLE001 - a factory that cannot build on meta: built as it is
        return
    if need > psutil.virtual_memory().available / 2:
        raise NotRebuildable(f"its config builds a model of {need / 2**30:.1f} GiB, more than "
                             "half of this machine's free memory: not built")


def build(doc: dict, recipe: Recipe) -> nn.Module:
    """The shipped model, made again from the saved document and the cell's checked recipe."""
    from modelopt.run.ship import runtime, ship
    from modelopt.techniques import models

    torch.manual_seed(0)  # initial values are overwritten; a factory may draw
    _fits_in_memory(recipe, doc)
    try:
        net = models.build(recipe.model, tuple(doc["input_shape"]), doc["num_outputs"],
                           trained=False)  # the saved weights are loaded next
        fit_shapes(net, doc["state"])
        net.load_state_dict(doc["state"])
    except Exception as exc:  # noqa: BLE001 - wrong shapes, missing keys: the reason as said
        raise NotRebuildable(f"the weights do not fit the model its config builds "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    fmt = runtime(recipe.deploy)
    net = net.to("cpu" if fmt.cpu else here(doc["device"])).eval()  # where the cell shipped it
    model = net
    if doc["quantized"]:
        if recipe.quantize is None:
            raise NotRebuildable("it was quantized, and its config names no quantizer")
        quantizer = recipe.quantize.build()
        if not fmt.converts(quantizer):
            raise NotRebuildable(f"quantizer '{recipe.quantize.name}' converts nothing")
        calibration = doc.get("calibration")
        model, _ = fmt.realise(
            quantizer, net, calibration if isinstance(calibration, torch.Tensor) else doc["batch"])
    return ship(recipe.deploy, model, doc["batch"], {}).eval()


def here(device: str) -> str:
    """Where a saved model runs: its own device if this machine has it, else the CPU (a GPU
    run re-timed by compare on a CPU runner)."""
    return device if not device.startswith("cuda") or torch.cuda.is_available() else "cpu"


def load(path: str | Path, recipe: Recipe) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(model, batch-1 input, batch input), the model rebuilt and checked against the
    outputs the cell's own shipped model gave on the saved batch."""
    doc = read(path)
    model = build(doc, recipe)
    device = device_of(model, model)
    with torch.inference_mode():
        out = model(doc["batch"].to(device)).float().cpu()
    ref = doc["reference"]
    diff = float((out - ref).abs().max()) if out.shape == ref.shape else float("inf")
    scale = 1 + float(ref.abs().max()) if ref.numel() else 1.0
    if not diff <= REBUILD_TOLERANCE * scale:
        raise NotRebuildable(f"the rebuilt model's outputs differ from the cell's by up to "
                             f"{diff:.3g} (tolerance {REBUILD_TOLERANCE:g} x {scale:.3g}): "
                             "the code that builds it here (yours, or modelopt's) computes "
                             "another function than the code that ran the cell")
    return model, doc["example"].to(device), doc["batch"].to(device)
