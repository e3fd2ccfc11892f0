"""Trained weights from a file (`model: {name: ..., weights: model.pth}`): the sources a
model spec's `weights:` may name, and loading them into the network its spec builds.

A source is a registered function from a file's path to a state_dict, as timm's
`create_model(..., checkpoint_path=...)` and nanoGPT's `init_from` take weights at creation:
`torch` (torch.save'd, read with weights_only=True; a checkpoint dict's state_dict under a
key) and `safetensors`. A new source is one function registered with the suffixes it reads.
"""

from __future__ import annotations

import functools
import json

import torch
from torch import nn

from modelopt.spec.registries import CELL_CHECKS, DATASETS, WEIGHTS
from modelopt.techniques.errors import TechniqueError

# where checkpoints commonly keep the model's state_dict, tried in this order when `key` is
# not given (Lightning: state_dict; many training scripts: model, model_state_dict)
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")
# what wrappers put before every parameter name: DataParallel / DDP, torch.compile
PREFIXES = ("module.", "_orig_mod.")


@WEIGHTS.register("torch", suffixes=(".pt", ".pth", ".bin", ".ckpt", ".tar"))
def torch_file(path: str, /, key: str | None = None) -> dict[str, torch.Tensor]:
    """A state_dict saved with torch.save, read with weights_only=True (nothing in it runs);
    or a checkpoint dict holding one under `key` (without `key`: the first of state_dict,
    model_state_dict, model, net, module that holds one)."""
    _not_text(path)
    try:
        doc = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - refused by weights_only, or not a torch file
        raise TechniqueError(
            f"weights {path}: torch.load(weights_only=True) cannot read it "
            f"({type(exc).__name__}: {_plain(exc)}). Save the state_dict alone: "
            "torch.save(model.state_dict(), 'model.pth'), not the model object or a "
            "checkpoint holding other Python objects; a file you trust converts once with "
            "torch.save(torch.load(p, weights_only=False).state_dict(), 'model.pth')") from None
    if key is not None:
        if not isinstance(doc, dict) or key not in doc:
            keys = ", ".join(map(str, doc)) if isinstance(doc, dict) else type(doc).__name__
            raise TechniqueError(f"weights {path}: no key '{key}' in the checkpoint (it holds: "
                                 f"{keys})")
        doc = doc[key]
    elif isinstance(doc, dict) and not _is_state(doc):
        found = next((k for k in CHECKPOINT_KEYS if _is_state(doc.get(k))), None)
        if found is None:
            raise TechniqueError(f"weights {path}: a dict without tensors at its top level or "
                                 f"under {', '.join(CHECKPOINT_KEYS)}; name the key holding the"
                                 f" state_dict: weights: {{path: ..., key: ...}} (it holds: "
                                 f"{', '.join(map(str, doc))})")
        doc = doc[found]
    if not _is_state(doc):
        raise TechniqueError(f"weights {path}: not a state_dict (a {type(doc).__name__})")
    return dict(doc)


@WEIGHTS.register("safetensors", suffixes=(".safetensors",))
def safetensors_file(path: str, /) -> dict[str, torch.Tensor]:
    """A safetensors file (Hugging Face's format: tensors only, nothing runs)."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise TechniqueError("safetensors weights need the safetensors package "
                             "(pip install safetensors)") from None
    try:
        return load_file(path, device="cpu")
    except Exception as exc:  # noqa: BLE001 - a torch file or another one under this suffix
        raise TechniqueError(f"weights {path}: not a safetensors file ({_first(exc)}); a file "
                             "torch.save wrote is read with weights: {name: torch, path: ...}"
                             ) from None


def _not_text(path: str) -> None:
    """A file torch.save wrote is a zip archive (or an old pickle), never text: a Git LFS
    pointer or a web page saved under the weights' name is said as what it is."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"version https://git-lfs"):
        raise TechniqueError(f"weights {path}: a Git LFS pointer, not the weights: fetch the "
                             "file itself (git lfs pull)")
    if not head or head.startswith(b"PK") or b"\x00" in head:
        return
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return  # binary: torch.load says what it is
    raise TechniqueError(f"weights {path}: a text file, not one torch.save wrote (it starts: "
                         f"{text[:60].strip()!r})")


def _is_state(doc) -> bool:
    return (isinstance(doc, dict) and bool(doc)
            and all(isinstance(v, torch.Tensor) for v in doc.values()))


def _first(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _plain(exc: Exception) -> str:
    """What torch.load says it refused (the class it would have had to run), without its
    terminal colours and advice about torch's own options."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    found = re.search(r"(unsupported (?:global: )?GLOBAL [\w.]+|Unsupported operand \d+|[^.\n]*"
                      r"invalid load key[^.\n]*)", text, re.IGNORECASE)
    if found:
        return found.group(1) + (" (code it would run, refused)" if "GLOBAL" in found.group(1)
                                 else "")
    if isinstance(exc, KeyError):  # the pickle reader met bytes that are no opcode
        return "not a file torch.save wrote"
    return _first(exc)


def read(spec: dict) -> dict[str, torch.Tensor]:
    """The state_dict a checked `weights:` spec ({name, path, sha256, ...}) names, from the
    file as it was when the suite loaded (its hash is the cell's id)."""
    from modelopt.spec.weights import sha256

    if spec.get("sha256") and sha256(spec["path"]) != spec["sha256"]:
        raise TechniqueError(f"weights {spec['path']} changed since the suite loaded (its "
                             "content is part of the cell's id): run the suite again to "
                             "measure the new file as a new cell")
    params = {k: v for k, v in spec.items() if k not in ("name", "path", "sha256")}
    return WEIGHTS.build(spec["name"], spec["path"], **params)


def load_into(net: nn.Module, state: dict[str, torch.Tensor], path: str,
              hint: str = "", outputs: int | None = None) -> nn.Module:
    """Load `state` into `net` (strict), the wrappers' prefixes taken off; weights that do not
    fit say which keys are missing, unexpected or of another shape (and, where the head is
    what differs, that the data has `outputs` classes and the weights another number)."""
    state = _unwrapped(state, set(net.state_dict()))
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(x)} {what}: {', '.join(x[:4])}{' ...' if len(x) > 4 else ''}"
                 for what, x in (("missing", missing), ("unexpected", unexpected),
                                 ("of another shape (file vs model)", shapes)) if x]
        head = next((k for k in own if k in state and state[k].shape != own[k].shape
                     and own[k].shape[:1] == (outputs,) and state[k].shape[1:] == own[k].shape[1:]),
                    None)
        # the first layer's input channels alone: grey images for an RGB model, or back
        stem = next((k for k in own if own[k].dim() == 4), None)
        stem = stem if stem in state and state[stem].dim() == 4 and state[stem].shape[1] != \
            own[stem].shape[1] and state[stem].shape[0] == own[stem].shape[0] else None
        if head and not hint:  # the output layer alone: the number of classes differs
            hint = (f"the data here has {outputs} classes (outputs), and the weights' "
                    f"{head} {state[head].shape[0]}: they were trained on other classes")
        elif stem and not hint:
            hint = (f"the weights' {stem} takes {state[stem].shape[1]} input channel(s), and "
                    f"the images here have {own[stem].shape[1]}: the model was trained on "
                    f"images of {state[stem].shape[1]} channel(s) (an image folder's "
                    f"`channels: {state[stem].shape[1]}`, where it is 1 or 3)")
        raise TechniqueError(f"weights {path} do not fit the model its spec builds: "
                             + "; ".join(parts) + (f". {hint}" if hint else ""))
    net.load_state_dict(state)
    return net


def _unwrapped(state: dict, wanted: set[str]) -> dict:
    """The state_dict with DataParallel / DDP (`module.`) and torch.compile (`_orig_mod.`)
    prefixes taken off where the model's own names lack them, a training wrapper's taken off
    where only that makes them the model's, and a wrapped model's (`model.`) put on where
    only they make the names fit."""
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state) and not any(
                k.startswith(prefix) for k in wanted):
            state = {k[len(prefix):]: v for k, v in state.items()}
    # the bare model's weights for modelopt's wrapper of it (techniques/hf.py: `model.`)
    if state and not set(state) <= wanted and {f"model.{k}" for k in state} <= wanted:
        state = {f"model.{k}": v for k, v in state.items()}
    # a training wrapper's (Lightning's `self.model = net`: `model.`): one first name before
    # every key, taken off where exactly the model's names are left
    heads = {k.split(".", 1)[0] for k in state}
    if state and not set(state) <= wanted and len(heads) == 1 and all("." in k for k in state):
        bare = {k.split(".", 1)[1]: v for k, v in state.items()}
        if set(bare) == wanted:
            state = bare
    return state


def check_fits(config: dict) -> None:
    """When the suite loads: the model its spec builds (for the dataset's inputs and
    classes) takes the weights its `weights:` names, and a KD teacher's likewise; raises
    RegistryError naming the file and the keys that do not fit. Each dataset and model is
    built once per suite."""
    from modelopt.spec.registry import RegistryError

    teacher = ((config.get("distill") or {}).get("teacher") or {}).get("model")
    for model in (config.get("model"), teacher):
        if not model or not model.get("weights"):
            continue
        try:
            _fits(json.dumps(config["dataset"], sort_keys=True, default=str),
                  json.dumps(model, sort_keys=True, default=str))
        except TechniqueError as exc:
            raise RegistryError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - building the model to check it failed
            raise RegistryError(f"model weights {model['weights']['path']}: building the "
                                f"model to load them failed: {type(exc).__name__}: "
                                f"{_first(exc)}") from None


@functools.lru_cache(maxsize=64)
def _fits(dataset: str, model: str) -> None:
    from modelopt.techniques import models

    data = DATASETS.build_spec(json.loads(dataset), 0)
    models.build(json.loads(model), data.input_shape, data.num_outputs)


CELL_CHECKS.append(check_fits)
