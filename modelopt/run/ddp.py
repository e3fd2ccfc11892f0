"""Ranks of one DDP cell: the one rank entry point, spawned here or launched (torchrun).

Spawned ranks are started and watched with torch.multiprocessing's process context
(`start_processes` + `ProcessContext.join`): a rank that raises or dies ends the others,
and its traceback is the cell's error. Every rank trains through `plan.train_here`, the
path a single process takes, with its share of each global batch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
import traceback
from datetime import timedelta
from pathlib import Path

import torch

from modelopt.run.backends import DDP
from modelopt.run.processes import interrupt, signal_words
from modelopt.run.train import Diverged
from modelopt.spec.cell import Cell


class RankFailed(RuntimeError):
    """A rank raised or died; the message is that rank's error."""


# A failed collective's message: another rank is usually the cause.
PEER_WORDS = ("Connection closed by peer", "Connection reset", "gloo", "NCCL")


def is_peer_error(exc: BaseException) -> bool:
    import torch.distributed as dist

    return isinstance(exc, dist.DistError) or any(w in str(exc) for w in PEER_WORDS)


# A process group's collectives give up after this when a cell has no timeout_s.
GROUP_TIMEOUT = timedelta(minutes=30)


def group_timeout(timeout_s: float | None) -> timedelta:
    """How long a rank's collective waits: the cell's parent ends it at timeout_s, and the
    group's own limit only catches what the parent misses."""
    return max(GROUP_TIMEOUT, timedelta(seconds=(timeout_s or 0) + 60))


def join_group(backend: DDP, rank: int, world: int, timeout: timedelta, *, store=None,
               init_file: str | None = None) -> None:
    """This process into the cell's process group: over a launcher's store, or a file. The
    backend's `prepare` has already put this rank on its own GPU, where there is one."""
    import torch.distributed as dist

    init = {"store": store} if store is not None else {"init_method": f"file://{init_file}"}
    dist.init_process_group(backend.dist_backend, rank=rank, world_size=world, timeout=timeout,
                            **init)


def _spawned_rank(rank: int, backend: DDP, init_file: str, cell: Cell, seed: int,
                  out_dir: str) -> None:
    """One spawned rank (torch.multiprocessing calls it with its index first)."""
    import torch.distributed as dist

    from modelopt.spec import plugins

    plugins.load(cell.plugins)  # user plugins register in each rank too
    mine = backend.as_rank(rank, backend.world_size, rank)
    mine.prepare(backend.threads or 1)
    join_group(mine, rank, backend.world_size, group_timeout(cell.train.settings.timeout_s),
               init_file=init_file)
    try:
        trained = mine.train(cell, seed, None)
        result = {"state": {k: v.cpu() for k, v in trained.net.state_dict().items()},
                  "outcome": trained.outcome,
                  # the rank's device peak: the training's, which this process never sees
                  "info": {**trained.info, "rank_peaks": mine.peak_memory()}}
    except Diverged as d:  # every rank stops at the same step: a result, not a failure
        result = {"diverged": (d.step, d.phase)}
    except BaseException as exc:
        # an error file per rank: the parent reports the cause, not a rank whose collective
        # broke because the cause's rank had left
        kind = "peer" if is_peer_error(exc) else "cause"
        tb = traceback.format_exc().strip().splitlines()[-8:]
        (Path(out_dir) / f"error-{kind}-{rank}.txt").write_text(
            f"rank {rank}: {type(exc).__name__}: {exc}\n" + "\n".join(tb))
        raise
    finally:
        dist.destroy_process_group()
    if rank == 0:
        torch.save(result, Path(out_dir) / "rank0.pt")


def spawn(backend: DDP, cell: Cell, seed: int, data):
    """Train on `backend.world_size` spawned ranks; the network rank 0 ends with, on this
    process's side, with the outcome and the ranks' start-up time."""
    import torch.multiprocessing as tmp

    from modelopt.run.plan import Trained
    from modelopt.techniques import models

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_dir, _Terminated() as terminated:
        init_file = os.path.join(tmp_dir, "rendezvous")  # file:// avoids port clashes
        ctx = None
        try:
            # a SIGTERM waits until every rank is started and held by `ctx` (one started a
            # moment before would escape the kill below)
            with terminated.held():  # spawn: each rank a fresh interpreter, sharing nothing
                ctx = tmp.start_processes(_spawned_rank, nprocs=backend.world_size, join=False,
                                          args=(backend, init_file, cell, seed, tmp_dir),
                                          start_method="spawn")
            while not ctx.join(grace_period=2):
                pass
        except (tmp.ProcessRaisedException, tmp.ProcessExitedException) as exc:
            raise RankFailed(_first_error(Path(tmp_dir), exc, ctx.processes)) from None
        finally:  # on Ctrl-C too: no rank outlives the cell
            for proc in ctx.processes if ctx is not None else []:
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        saved = torch.load(Path(tmp_dir) / "rank0.pt", weights_only=False)  # our own file
    # the ranks' time apart from their training steps (start-up, data, evaluations, handing
    # back the weights); rebuilding the network here is not theirs
    startup = time.perf_counter() - t0
    if "diverged" in saved:
        raise Diverged(*saved["diverged"])
    net = models.build(cell.model, data.input_shape, data.num_outputs, trained=False)
    net.load_state_dict(saved["state"])
    outcome = saved["outcome"]
    info = {**saved["info"], "ddp_startup_s": startup - outcome.train_seconds}
    return Trained(net.to(backend.device), data, outcome, info)


class _Terminated:
    """SIGTERM (the scheduler ending a cell at its timeout) raises KeyboardInterrupt while
    this is entered, so that the ranks are killed and the rendezvous folder removed on the
    way out: by default the cell's process died at once, and a rank still starting (before
    torch's parent-death signal is set) trained on as an orphan. Within `held()` it is
    noted and raised at its end (a signal mask would not do: the kernel hands a blocked
    signal to another of the process's threads, and Python runs the handler anyway)."""

    def __init__(self):
        self.holding = self.pending = False
        self.before = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # only it sets handlers
            self.before = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc):
        if self.before is not None:
            signal.signal(signal.SIGTERM, self.before)

    def _handle(self, signum, frame):
        if self.holding:
            self.pending = True
        else:
            interrupt(signum, frame)

    @contextlib.contextmanager
    def held(self):
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending:
            interrupt(signal.SIGTERM, None)


def _first_error(folder: Path, exc: Exception, procs=()) -> str:
    """The error of the rank that caused the failure (not one whose collective broke after):
    a rank's own exception (written by the rank; or raised before it could write, in torch's
    words), else a rank that died without one (killed, os._exit: its peers' broken
    collectives are what it caused; whichever torch's join saw first; not one torch's join
    ended with SIGTERM itself), else a peer's."""
    import torch.multiprocessing as tmp

    found = sorted(folder.glob("error-cause-*.txt"))
    if found:
        return found[0].read_text()
    said = {p.stem.rpartition("-")[2] for p in folder.glob("error-*-*.txt")}
    if isinstance(exc, tmp.ProcessRaisedException) and str(exc.error_index) not in said:
        lines = str(exc).strip().splitlines()
        return f"rank {exc.error_index}: {lines[-1] if lines else repr(exc)}"
    for rank, proc in enumerate(procs):
        code = proc.exitcode
        if code not in (None, 0, -signal.SIGTERM) and str(rank) not in said:
            how = (f"with {signal_words(-code)}" if code < 0 else f"with exit code {code}")
            return f"rank {rank}: process {rank} terminated {how}"
    found = sorted(folder.glob("error-peer-*.txt"))
    if found:
        return found[0].read_text()
    return str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
