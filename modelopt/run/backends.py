"""Where a cell trains: cpu (threads), cuda (+ mixed precision), ddp (several processes).

A backend is an object that owns what differs between them: the cores and GPUs a cell takes,
threads and determinism, placing and wrapping the model, mixed precision, peak memory, and
how training is launched. Nothing outside this module (and ddp.py, which ddp uses) asks a
backend's name.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from modelopt.spec.registries import BACKENDS
from modelopt.spec.registry import NonNegativeInt, PositiveInt


class BackendUnavailable(RuntimeError):
    """The machine lacks what the backend needs (no CUDA, too few CPUs)."""


def cpu_count() -> int:
    """CPUs this process may use (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@dataclass(frozen=True)
class Backend:
    """One process on the CPU (`threads` intra-op threads) or on one CUDA device."""

    name: str
    device: str  # "cpu" or "cuda:N"
    threads: int | None  # None: the thread budget the runner gives the cell
    amp_dtype: torch.dtype | None = None

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def cores(self) -> int:
        """Worker slots (cores) a cell of this backend takes."""
        return self.threads or 1

    def gpus(self) -> int:
        return 1 if self.is_cuda else 0

    def prepare(self, threads: int) -> int:
        """Deterministic kernels and a fixed thread count: the same seed gives the same
        numbers. Returns the threads used."""
        threads = self.threads or threads
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
        if self.is_cuda:
            torch.backends.cudnn.benchmark = False
            torch.cuda.set_device(self.device)
        return threads

    def train(self, cell, seed: int, data):
        """Train the cell's model: (network, data, outcome, info). In this process here; a
        backend of several processes starts them."""
        from modelopt.run.plan import train_here

        return train_here(self, cell, seed, data)

    def wrap(self, model: nn.Module) -> nn.Module:
        """What the training loop calls (the bare network here; DDP wraps it)."""
        return model

    def shard(self) -> tuple[int, int] | None:
        """(rank, world_size) when this process trains a share of each batch."""
        return None

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.split(":")[0], dtype=self.amp_dtype)

    def grad_scaler(self):
        """fp16 autocast needs its gradients scaled (bf16 does not); None otherwise."""
        return torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

    def reset_peak_memory(self) -> None:
        if self.is_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory(self) -> dict:
        """Device memory figures beside the process's RSS (measured by the cell)."""
        if not self.is_cuda:
            return {}
        return {"peak_cuda_mb": torch.cuda.max_memory_allocated(self.device) / 2**20}

    def measures_cpu_speed(self) -> bool:
        """Whether a CPU workload beside training says how fast this cell's machine is (the
        machine probe compare uses); for a GPU it says nothing."""
        return not self.is_cuda

    def env(self) -> dict:
        info = {"device": self.device}
        if self.is_cuda:
            info["gpu"] = torch.cuda.get_device_name(self.device)
            # float32 on a GPU may run as TF32 (torch's defaults: convolutions yes, matmuls no)
            info["tf32"] = ", ".join(k for k, on in (
                ("convolutions", torch.backends.cudnn.allow_tf32),
                ("matmuls", torch.backends.cuda.matmul.allow_tf32)) if on) or "none"
        return info


CPU = Backend("cpu", "cpu", None)  # where deployed int8 copies are evaluated


def on_device_of(model: nn.Module) -> Backend:
    """A plain backend (no autocast) on the device `model` lives on."""
    t = next(itertools.chain(model.parameters(), model.buffers()), None)
    if t is None or t.device.type == "cpu":
        return CPU
    return Backend("cuda", str(t.device), None)


@BACKENDS.register("cpu")
def cpu(*, threads: PositiveInt = 1) -> Backend:
    """Train on the CPU with `threads` intra-op threads (1 by default: as fast as 2 for small
    models here, and cells can then run side by side with identical results)."""
    return Backend("cpu", "cpu", threads)


@BACKENDS.register("cuda")
def cuda(*, device: NonNegativeInt = 0, amp: bool = False,
         amp_dtype: Literal["bf16", "fp16"] = "bf16") -> Backend:
    """Train on a CUDA GPU; amp autocasts to bf16 or fp16 (fp16 with a GradScaler)."""
    _need_cuda(device + 1, "cuda")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp_dtype] if amp else None
    return Backend("cuda", f"cuda:{device}", 1, dtype)


def _need_cuda(devices: int, what: str) -> None:
    if not torch.cuda.is_available():
        raise BackendUnavailable(f"CUDA is not available here (torch.cuda.is_available() is "
                                 f"False; {what}); run this cell on a machine with an NVIDIA GPU")
    if devices > torch.cuda.device_count():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        # Ray (and job schedulers) show a task only the GPUs it was given, numbered from 0
        hint = (f" (CUDA_VISIBLE_DEVICES={visible}: the GPUs this process was given, numbered "
                "from 0; under --executor ray, Ray picks the GPU, so write device: 0)"
                if visible is not None else "")
        raise BackendUnavailable(f"{what} needs {devices} CUDA device(s); this process sees "
                                 f"{torch.cuda.device_count()}{hint}")


@dataclass(frozen=True)
class DDP(Backend):
    """DistributedDataParallel over `world_size` processes. Rank r takes indices r::world of
    each global batch, so the global batch (and the gradient) is the single process's."""

    world_size: int = 2
    dist_backend: str = "gloo"
    rank: int | None = None  # None: this process starts the ranks; else it is that rank

    def cores(self) -> int:
        return self.world_size * (self.threads or 1)

    def gpus(self) -> int:
        return self.world_size if self.is_cuda else 0

    def train(self, cell, seed: int, data):
        if self.rank is not None:  # a rank of a process group already formed
            trained = super().train(cell, seed, data)
            trained.info["ddp_world_size"] = self.world_size
            torch.distributed.barrier()  # every rank is done before rank 0 evaluates and times
            return trained
        from modelopt.run import ddp

        return ddp.spawn(self, cell, seed, data)

    def wrap(self, model: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            model, device_ids=[torch.device(self.device).index] if self.is_cuda else None)

    def shard(self) -> tuple[int, int] | None:
        return None if self.rank is None else (self.rank, self.world_size)

    def as_rank(self, rank: int, world_size: int, local_rank: int) -> DDP:
        """This backend in one rank of a group: its own GPU (by local rank) on cuda."""
        device = f"cuda:{local_rank}" if self.is_cuda else "cpu"
        return replace(self, rank=rank, world_size=world_size, device=device)


@BACKENDS.register("ddp", ranks=True)
def ddp(*, world_size: PositiveInt = 2, dist_backend: Literal["gloo", "nccl"] = "gloo",
        threads: PositiveInt = 1, device: Literal["cpu", "cuda"] = "cpu") -> DDP:
    """DistributedDataParallel over world_size processes (gloo on CPU, nccl on GPUs)."""
    if device == "cpu":
        if dist_backend == "nccl":
            raise BackendUnavailable("ddp: nccl needs device: cuda; use gloo on the CPU")
        if world_size * threads > cpu_count():
            raise BackendUnavailable(f"ddp: world_size {world_size} x {threads} threads needs "
                                     f"{world_size * threads} CPUs; this machine has {cpu_count()}")
    else:
        _need_cuda(world_size, f"ddp with world_size {world_size}")
    return DDP("ddp", "cpu" if device == "cpu" else "cuda:0", threads, None, world_size,
               dist_backend)


def build(spec: dict) -> Backend:
    return BACKENDS.build_spec(spec)


def launched(spec: dict, rank: int, world: int, local_rank: int, local_world: int) -> Backend:
    """The backend of one rank of a launched job (torchrun): the world is the launcher's, and
    only this node's share of it (local_world ranks) must fit on this machine."""
    backend = build({**spec, "world_size": local_world})
    return backend.as_rank(rank, world, local_rank)
