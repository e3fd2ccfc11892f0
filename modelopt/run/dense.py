"""Train once, compress many: the one cache of trained networks, keyed by what determines
them, for a run's cells of one training prefix and its KD teachers alike.

A cell's training depends on its data, model, optimizer, schedule, loss, regularization,
distillation, training settings, backend and seed, and not on what happens after training
(pruning, a quantizer's conversion, the metrics it asks for). Cells that differ only there
train the identical network, so the first to train it saves it (weights, the training's
outcome and figures) under the run's directory and the others load it. Same seed on the
CPU gives the same weights, so a loaded network is the one the cell would have trained.
A KD teacher is a cell of its own (spec/cell.py `Cell.teacher`): kept the same way, under
its own training key, so students share it, and a student cell equal to a teacher loads it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from modelopt.results.files import open_own
from modelopt.run import rebuild
from modelopt.run.train import Outcome
from modelopt.spec import data_files, keys, plugins
from modelopt.spec.cell import Cell

DIR = "dense"  # under the run's output directory
_kept: dict[str, Path | None] = {"dir": None}  # this cell process's, set by run_cell


def keep_in(directory: str | Path | None) -> None:
    """Where this process's run keeps trained networks (None: --train-each, none kept)."""
    _kept["dir"] = Path(directory) if directory else None


def path_of(cell: Cell, seed: int) -> Path | None:
    """Where this run keeps the trained network of that cell and seed (None: not kept)."""
    d = _kept["dir"]
    return d / f"{key(cell, seed)}.pt" if d is not None else None


def training_config(cell: Cell) -> dict:
    """The part of a cell its training depends on: the keys that declare a stage up to
    training (spec/keys.py), and a quantizer only where it acts during training (weight
    clipping's hooks), not where it only converts afterwards."""
    out = cell.as_config(only=keys.training_keys() + (("quantize",) if cell.compress.trains()
                                                       else ()))
    # what comes after training (fine-tuning's optimizer) is not the trained network's
    out["train"] = cell.train.settings.model_dump(
        exclude={"timeout_s", "finetune_optimizer", "finetune_schedule"})
    if cell.plugins:  # the code, not where this machine keeps it
        out["plugins"] = {"modules": cell.plugins.get("modules")}
    return out


def key(cell: Cell, seed: int) -> str:
    """What determines a trained network: the training config, the seed, the data files as
    they are now, modelopt's own code and the user's (a cache made by other code is not
    reused: a plugin optimizer edited since trains anew)."""
    blob = json.dumps({"train": training_config(cell), "seed": seed, "source": source_hash(),
                       "code": plugins.code_of(cell.as_config()),
                       "data": data_files.of_dataset(cell.data.dataset.spec())},
                      sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def source_hash() -> str:
    """A hash of modelopt's Python source, as this process runs it."""
    root = Path(__file__).resolve().parents[1]
    return plugins.hash_sources(root.rglob("*.py"), str(root))


def shared_keys(runs) -> set[str]:
    """The training keys that two or more of a suite's (cell, seed) runs and their
    teachers share: only those are worth saving (a teacher is always kept)."""
    seen = Counter(key(cell, seed) for cell, seed in runs)
    teachers = {key(cell.teacher(), seed) for cell, seed in runs if cell.train.distill}
    return {k for k, n in seen.items() if n > 1 or k in teachers}


@contextlib.contextmanager
def _locked(path: Path):
    """One process at a time trains a key: a second waits, then loads (parallel jobs, Ray)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(open_own(path.with_suffix(".lock"), os.O_WRONLY | os.O_CREAT), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def reuse(path: str | Path | None, build: Callable[[], torch.nn.Module],
          train: Callable[[], object], figures: Callable[[], dict]):
    """The trained stage of a cell: loaded from `path` if another cell saved it there (into
    `build()`'s fresh network), else `train()`ed and saved; one process at a time.
    `figures()` gives what the training measured around itself (peak memory, machine
    probe; none for a teacher), kept with it. No path: trained. Returns (trained, the
    saved figures or None when it trained here)."""
    from modelopt.run.plan import Trained

    if path is None:
        return train(), None
    path = Path(path)
    with _locked(path):
        if path.exists():
            net = build()
            try:  # data only (weights_only): a file that holds anything else is not used
                saved = rebuild.load_data(path)
                device = next(net.parameters()).device
                net.load_state_dict({k: v.to(device) for k, v in saved["state"].items()})
                trained = Trained(net, None, Outcome(**saved["outcome"]), saved["info"])
                kept = saved["figures"]
            except Exception as exc:  # noqa: BLE001 - said as what to do, not torch's advice
                raise RuntimeError(
                    f"{path}: a kept trained network this cell cannot use ({type(exc).__name__}"
                    f": {(str(exc).splitlines() or [''])[0][:200]}); it is never loaded as code. Delete "
                    "it, or run with --no-resume to train anew") from None
            return trained, kept
        trained = train()
        save({"state": trained.net.state_dict(), "outcome": asdict(trained.outcome),
              "info": trained.info, "figures": figures()}, path)
        return trained, None


def save(doc: dict, path: Path) -> None:
    """Atomic: a killed run or a full disk leaves no half file to resume from, and no
    temporary file behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(doc, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
