"""Paired, interleaved latency: every saved model of a run timed side by side.

Timing each model in its own process mixes the model's speed with the process's and the
minute's: the same model varies by 20-40 % between processes here, while two models of one
architecture timed in interleaved, shuffled rounds of one process read within 3 % of each
other (0.2 % for two 64-channel cnns). So a run
saves each cell x seed's deployable model, and this stage loads all of them into each of K
fresh processes (one after another, nothing else running) and times them round by round.
Ratios against a baseline are taken within a process; the K processes are the replicates
(README, "How we measure, and why").
"""

from __future__ import annotations

import logging
import math
import os
import random
import statistics
import warnings
from pathlib import Path

from modelopt.results.latency import PROCESSES, Artifact, TimingError, artifact_path, artifacts, write

ROUNDS = 20
BLOCK_S = 0.005  # each timed block lasts about this long (calls per block are sized to it)
WARMUP = 10

__all__ = ["PROCESSES", "TimingError", "artifacts", "run_stage", "save_all", "time_artifacts"]


def save(path: str | Path, model, example, batch, plugins: dict | None = None) -> None:
    """A whole pickled module (pruned, quantized and slimmed models cannot be rebuilt from
    a state_dict and the config alone) and the inputs it is timed on; atomic. A model of a
    suite's own code needs that code to unpickle: its plugin context goes beside it."""
    import json

    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if plugins:
        _plugins_file(path).write_text(json.dumps(plugins))
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    device = getattr(model, "artifact_device", None) or str(
        next(iter(model.parameters()), torch.zeros(0)).device)
    torch.save({"model": model, "example": example.cpu(), "batch": batch.cpu(),
                "device": device}, tmp)
    tmp.replace(path)


def save_all(model_dir: str | Path, cell_id: str, seed: int, models: dict, example, batch,
             plugins: dict | None = None):
    for kind, model in models.items():
        if model is not None:
            save(artifact_path(model_dir, cell_id, seed, kind), model, example, batch, plugins)


def _plugins_file(path: Path) -> Path:
    return path.with_name(path.name + ".plugins.json")


def _load(path: str):
    """A saved model, its suite's plugins loaded first."""
    import json

    import torch

    from modelopt.spec import plugins

    extra = _plugins_file(Path(path))
    plugins.load(json.loads(extra.read_text()) if extra.exists() else None)
    with warnings.catch_warnings():  # int8 tensors' deprecation, once per layer
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(path, weights_only=False,  # our own file, from the run
                          map_location=None if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------- one timing process

def _child(conn, items: list[tuple[str, str]], rounds: int, threads: int, order_seed: int):
    """Load every model, then time them in `rounds` rounds, each in a shuffled order: one
    block of calls per model and batch size per round. Sends {key: {batch: [ms per block]}}."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it ends this process
    try:
        import torch
        import torch.utils.benchmark as tb

        torch.set_num_threads(threads)
        # torchao (unpickling its int8 tensors imports it) logs a pytree deprecation on import
        logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
        timers = {}
        for key, path in items:
            saved = _load(path)
            model, device = saved["model"].eval(), _here(saved["device"])
            for batch, x in (("1", saved["example"]), ("batch", saved["batch"])):
                x = x.to(device)
                with torch.inference_mode():
                    for _ in range(WARMUP):
                        model(x)
                # Timer synchronises CUDA; inference_mode is part of the timed statement
                timer = tb.Timer(stmt="with torch.inference_mode(): model(x)",
                                 globals={"model": model, "x": x, "torch": torch},
                                 num_threads=threads)
                per_call = timer.timeit(5).median
                timers[(key, batch)] = (timer, max(1, int(BLOCK_S / max(per_call, 1e-9))))
        rng = random.Random(order_seed)
        blocks: dict = {k: [] for k in timers}
        for _ in range(rounds):
            order = list(timers)
            rng.shuffle(order)
            for k in order:
                timer, number = timers[k]
                blocks[k].append(timer.timeit(number).median * 1e3)
        out: dict = {}
        for (key, batch), ms in blocks.items():
            out.setdefault(key, {})[batch] = ms
        conn.send(("ok", out))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _here(device):
    """Where a saved model is timed: its own device if this machine has it, else the CPU
    (a GPU run re-timed by compare on a CPU runner)."""
    import torch

    device = str(device)
    return device if not device.startswith("cuda") or torch.cuda.is_available() else "cpu"


def time_artifacts(items: list[Artifact], processes: int = PROCESSES, rounds: int = ROUNDS,
                   threads: int = 1, progress=None) -> list[dict]:
    """Per process and artifact: median and p90 of the per-call block times at batch 1 and at
    the saved batch size. Processes run one after another, each a fresh fork."""
    from modelopt.run.processes import context

    ctx = context()
    rows = []
    for k in range(processes):
        if progress:
            progress(k, processes)
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_child, args=(child, [(a.key, str(a.path)) for a in items],
                                                rounds, threads, k))
        proc.start()
        child.close()
        try:
            status, payload = parent.recv()
        except EOFError:
            proc.join()
            status, payload = "error", f"the timing process died (exit code {proc.exitcode})"
        finally:  # on Ctrl-C too: no timing process outlives the run
            parent.close()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        if status != "ok":
            raise TimingError(f"timing process {k}: {payload}")
        for a in items:
            b1, bb = payload[a.key]["1"], payload[a.key]["batch"]
            rows.append({"side": a.side, "cell_id": a.cell_id, "seed": a.seed, "kind": a.kind,
                         "process": k,
                         "ms_batch1": statistics.median(b1), "p90_ms_batch1": _p90(b1),
                         "ms_batch": statistics.median(bb), "blocks": len(b1),
                         # round by round, for ratios of blocks timed moments apart
                         "rounds_batch1": [round(x, 6) for x in b1],
                         "rounds_batch": [round(x, 6) for x in bb]})
    return rows


def _p90(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(math.ceil(0.9 * len(s))) - 1)]


# ---------------------------------------------------------------- the stage

def run_stage(run_dir: str | Path, suite: str, keys: set[tuple[str, int]], threads: int = 1,
              processes: int = PROCESSES, rounds: int = ROUNDS, progress=None) -> int:
    """Time every saved model of the ok (cell_id, seed) pairs of a run, side by side, and
    write timing.json (replacing it: a timing of part of a run cannot be paired with the
    rest). Returns the number of models timed."""
    items = artifacts(run_dir, keys)
    if not items:
        return 0
    rows = time_artifacts(items, processes, rounds, threads, progress)
    write(run_dir, {"suite": suite, "processes": processes, "rounds": rounds, "threads": threads,
                    "block_s": BLOCK_S, "rows": rows})
    return len(items)
