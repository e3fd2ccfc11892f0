"""DistributedDataParallel training of one cell: world_size processes, gloo (CPU) or nccl."""

from __future__ import annotations

import io
import os
import queue as queue_mod
import tempfile
import time
import traceback

import torch

from modelopt.backends import Backend


class RankFailed(RuntimeError):
    """A rank raised or died; the message is that rank's error."""


def train_rank(config: dict, seed: int, backend: Backend, data=None):
    """This process's share of DDP training in the current process group; returns the bare
    network (the same on every rank when done) and the outcome. Rank r takes indices
    r::world_size of each global batch."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from modelopt import cell, models
    from modelopt.train import fit, total_steps

    rank, world = dist.get_rank(), dist.get_world_size()
    if data is None:
        data = cell.load_data(config, seed)
    torch.manual_seed(seed)  # every rank builds the same initial weights
    net = models.build(config["model"], data.input_shape, data.num_outputs).to(backend.device)
    model = DDP(net, device_ids=[torch.device(backend.device).index] if backend.is_cuda else None)
    steps = total_steps(config["train"], len(data.x_train), False)
    plan = cell.make_plan(config, model, data, steps, "train")
    plan.shard = (rank, world)
    outcome = fit(model, data, plan, backend, seed, config["train"]["eval_batch_size"])
    data.info["ddp_world_size"] = world
    dist.barrier()  # every rank is done before rank 0 goes on to evaluate and time
    return net, outcome


def _rank_main(rank: int, world: int, init_file: str, config: dict, seed: int, backend: Backend,
               queue) -> None:
    import torch.distributed as dist

    from modelopt.suite import registries

    try:
        registries()  # user plugins (MODELOPT_PLUGINS) register in each rank too
        torch.set_num_threads(backend.threads or 1)
        torch.use_deterministic_algorithms(True, warn_only=True)
        dev = backend.device
        if backend.is_cuda:  # one GPU per rank
            dev = f"cuda:{rank}"
            torch.cuda.set_device(dev)
        dist.init_process_group(backend.dist_backend, init_method=f"file://{init_file}",
                                rank=rank, world_size=world)
        try:
            local = Backend(backend.name, dev, backend.threads, backend.amp_dtype, world,
                            backend.dist_backend)
            net, outcome = train_rank(config, seed, local)
            if rank == 0:
                # plain bytes: a tensor sent through a Queue is shared by handle, and the
                # receiver cannot open it once this process has exited
                buf = io.BytesIO()
                torch.save({k: v.cpu() for k, v in net.state_dict().items()}, buf)
                queue.put(("ok", rank, (buf.getvalue(), outcome)))
        finally:
            dist.destroy_process_group()
    except BaseException as exc:  # noqa: BLE001 - reported to the cell, which fails
        tb = traceback.format_exc().strip().splitlines()
        queue.put(("error", rank, f"rank {rank}: {type(exc).__name__}: {exc}\n" + "\n".join(tb[-8:])))


def train(config: dict, seed: int, backend: Backend, timeout_s: float | None = None):
    """Train on `backend.world_size` spawned ranks; returns (state_dict, outcome, startup s).

    Rank r takes indices r::world_size of each global batch, so the global batch (and with
    it the gradient) matches the single-process run. Rank 0 hands back the weights."""
    import multiprocessing as mp

    world = backend.world_size
    ctx = mp.get_context("spawn")  # each rank a fresh interpreter: no state shared with us
    queue = ctx.Queue()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "rendezvous")  # file:// avoids port clashes
        procs = [ctx.Process(target=_rank_main, daemon=True,
                             args=(r, world, init_file, config, seed, backend, queue))
                 for r in range(world)]
        for p in procs:
            p.start()
        result, error = None, None
        try:
            while result is None and error is None:
                try:
                    kind, rank, payload = queue.get(timeout=1.0)
                except queue_mod.Empty:  # nothing yet: check that the ranks are alive
                    dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
                    if dead:
                        error = (f"rank {dead[0]} died with exit code {procs[dead[0]].exitcode} "
                                 "without reporting")
                    elif all(p.exitcode == 0 for p in procs):
                        # rank 0 may have exited a moment after its result entered the pipe
                        try:
                            kind, rank, payload = queue.get(timeout=10)
                        except queue_mod.Empty:
                            error = "ranks exited without a result"
                            continue
                        if kind == "error":
                            error = payload
                        else:
                            result = payload
                    continue
                if kind == "error":
                    error = payload
                else:
                    result = payload
            for p in procs:
                p.join(timeout=30 if error is None else 2)
        finally:
            for p in procs:  # never leave a rank behind
                if p.is_alive():
                    p.kill()
                    p.join()
    if error is not None:
        raise RankFailed(error)
    blob, outcome = result
    state = torch.load(io.BytesIO(blob), weights_only=True)
    startup = time.perf_counter() - t0 - outcome.train_seconds
    return state, outcome, startup
