"""One timing process of the timing stage (run/timing.py): every saved model built again
(or taken as the first process built it), warmed up, then timed in interleaved, shuffled
rounds of blocks (run/blocks.py); and its heartbeats, which the stage reads (`answer`)."""

from __future__ import annotations

import math
import os
import pickle
import random
import time
import warnings
from dataclasses import dataclass

from modelopt.results.latency import TimingError
from modelopt.run import rebuild
from modelopt.run.blocks import block, prime_before, warm

BLOCK_S = 0.005  # each timed block lasts about this long (calls per block are sized to it)


@dataclass(frozen=True)
class Job:
    """A model for a timing process: its key, its saved file and the recipe it is rebuilt
    from (None: not rebuildable), the run's own copy (save_own), and, after the first
    process, the model as that process built it where it is a runtime's file (`built`:
    (model, batch-1 input, batch input) pickled by that process in this run, never read
    from a results directory)."""

    key: str
    path: str
    recipe: object | None
    own: str | None = None
    built: bytes | None = None
    verified: bool = False  # the own copy's rebuild was checked in its cell (timing.save_own)


def child(conn, jobs: list[Job], rounds: int, threads: int, order_seed: int,
          plugin_ctx: dict | None):
    """Build every model, then time them in `rounds` rounds, each in a shuffled order: one
    block of calls per model and batch size per round. Sends ({key: {batch: [ms per
    block]}}, {key: why it could not be rebuilt}, {stage: seconds}, {key: a runtime's file
    model as built here, pickled})."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it ends this process
    try:
        import torch

        from modelopt.spec import plugins
        from modelopt.techniques.program import silence_pytree_log

        torch.set_num_threads(threads)
        silence_pytree_log()  # the models built here may import torchao
        plugins.load(plugin_ctx)  # the user's own code only: never a path from a results file
        took = {"build": 0.0, "warm": 0.0, "rounds": 0.0}  # where the stage's time goes
        def beat():  # the parent ends a process that sends nothing for STALL_S
            conn.send(("alive", None))

        timers, skipped, files = _prepare(jobs, took, beat)
        t2 = time.perf_counter()
        rng = random.Random(order_seed)
        blocks: dict = {k: [] for k in timers}
        for _ in range(rounds):
            order = list(timers)
            rng.shuffle(order)
            for k in order:
                blocks[k].append(block(*timers[k]))
            beat()
        took["rounds"] = time.perf_counter() - t2
        out: dict = {}
        for (key, batch), ms in blocks.items():
            out.setdefault(key, {})[batch] = ms
            if batch == "batch":  # where it ran: a speed-up compares one device's latencies
                out[key]["device"] = str(timers[(key, batch)][1].device)  # cpu, cuda:0, ...
            if batch == "generate":  # how many tokens a timed generation made
                out[key]["new_tokens"] = timers[(key, batch)][0].new_tokens
        conn.send(("ok", (out, skipped, took, files)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _build(job: Job, skipped: dict):
    """(model, batch-1 input, batch input) of a job, or None where it cannot be built."""
    if job.built is not None:
        return pickle.loads(job.built)  # noqa: S301 - made by this run's first process
    if job.verified and job.own is not None:
        return _own_copy(job.own)  # the file the cell shipped, its rebuild checked there
    with warnings.catch_warnings():  # int8 tensors' deprecation, once per layer
        warnings.simplefilter("ignore", UserWarning)
        try:
            if job.recipe is None:
                raise rebuild.NotRebuildable("no recipe to rebuild it from")
            return rebuild.load(job.path, job.recipe)
        except Exception as exc:  # noqa: BLE001 - the reason, for this model alone
            skipped[job.key] = (str(exc) if isinstance(exc, rebuild.NotRebuildable) else
                                f"rebuilding it failed: {type(exc).__name__}: {exc}")
            return None if job.own is None else _own_copy(job.own)


def _prepare(jobs: list[Job], took: dict, beat=lambda: None) -> tuple[dict, dict, dict]:
    """Each model built and warmed up, with the calls per block (per batch size) that last
    about BLOCK_S: ({(key, batch): (model, input, calls per block, prime)}, {key: why
    not}, {key: (model, inputs) pickled} of the models this process built that are a
    runtime's file: an ONNX model's export and int8 calibration took most of a process's
    building, so later processes take the file this one made, as ONNX Runtime would load
    it; a process given them sends none back)."""
    from modelopt.techniques.transformers import generation_calls

    timers, skipped, files = {}, {}, {}
    for job in jobs:
        t0 = time.perf_counter()
        built = _build(job, skipped)
        if built is None:
            continue
        model, example, batch_x = built
        if job.built is None and job.key not in skipped and \
                isinstance(getattr(model, "blob", None), bytes):
            # pickled whole here: a tensor sent through the pipe as itself is shared memory
            # that ends with this process (techniques/onnx_runtime.FileModel pickles as bytes)
            files[job.key] = pickle.dumps(built)
        t1 = time.perf_counter()
        took["build"] += t1 - t0
        calls = {"1": (model, example), "batch": (model, batch_x),
                 **generation_calls(model, example)}  # a decoder's, from its prompt
        for name, (call, x) in calls.items():
            per_call = warm(call, x)
            timers[(job.key, name)] = (call, x, max(1, int(BLOCK_S / max(per_call, 1e-9))),
                                       prime_before(per_call))
        took["warm"] += time.perf_counter() - t1
        beat()
    return timers, skipped, files


def _own_copy(path: str):
    """A model from the run's own copy (timing.save_own): written by this run's cells into
    its private folder moments ago, so unpickling it runs only this run's own code."""
    import torch

    saved = torch.load(path, weights_only=False,
                       map_location=None if torch.cuda.is_available() else "cpu")
    model = saved["model"].eval()
    device = rebuild.device_of(model, model)
    return model, saved["example"].to(device), saved["batch"].to(device)


# A timing process says it is alive after each model it builds and each round it times; one
# silent for this long hangs (a runtime's deadlock, a GPU that stopped): it is ended, and the
# stage fails saying so rather than waiting forever. A model whose build (an OpenVINO
# compile, an int8 calibration) takes longer: MODELOPT_TIMING_STALL_S.
STALL_S = 900.0


def stall_limit() -> float | None:
    """MODELOPT_TIMING_STALL_S, checked before any timing process starts: seconds above 0,
    or inf for no limit (None)."""
    raw = os.environ.get("MODELOPT_TIMING_STALL_S")
    if raw is None:
        return STALL_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value > 0:
        raise TimingError(f"MODELOPT_TIMING_STALL_S={raw!r}: give the seconds a timing process "
                          "may send nothing for (above 0; inf: no limit)")
    return None if math.isinf(value) else value


def answer(conn, stall_s: float | None = STALL_S) -> tuple[str, object]:
    """The timing process's final message, past its heartbeats (None: however long)."""
    while True:
        if not conn.poll(stall_s):
            return "error", (f"it sent nothing for {stall_s:g} s (building or timing one "
                             "model, or one round of them, hangs; a build that needs longer: "
                             "set MODELOPT_TIMING_STALL_S): ended")
        status, payload = conn.recv()
        if status != "alive":
            return status, payload
