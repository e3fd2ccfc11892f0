"""Where a cell runs: cpu (threads), cuda (+ mixed precision), ddp (several processes)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch

from modelopt.registry import Registry

# flags: slots (how many worker slots a cell of this backend takes), gpu (needs a GPU slot)
BACKENDS = Registry("backend")


class BackendUnavailable(RuntimeError):
    """The machine lacks what the backend needs (no CUDA, too few CPUs)."""


@dataclass(frozen=True)
class Backend:
    name: str
    device: str  # "cpu" or "cuda:N"
    threads: int | None  # None: use the thread budget the runner gives the cell
    amp_dtype: torch.dtype | None = None
    world_size: int = 1
    dist_backend: str | None = None

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.split(":")[0], dtype=self.amp_dtype)

    def synchronize(self) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)


@BACKENDS.register("cpu", slots="threads")
def cpu(*, threads: int = 1) -> Backend:
    """Train on the CPU with `threads` intra-op threads (1 by default: as fast as 2 for small
    models here, and cells can then run side by side with identical results)."""
    if threads is not None and threads < 1:
        raise BackendUnavailable(f"cpu threads must be >= 1, got {threads}")
    return Backend("cpu", "cpu", threads)


@BACKENDS.register("cuda", gpu=True)
def cuda(*, device: int = 0, amp: bool = False,
         amp_dtype: Literal["bf16", "fp16"] = "bf16") -> Backend:
    """Train on a CUDA GPU; amp autocasts to bf16 or fp16 (fp16 with a GradScaler)."""
    if not torch.cuda.is_available():
        raise BackendUnavailable("CUDA is not available here (torch.cuda.is_available() is "
                                 "False); run this cell on a machine with an NVIDIA GPU or set "
                                 "skip_unavailable: true in the suite")
    if device >= torch.cuda.device_count():
        raise BackendUnavailable(f"CUDA device {device} does not exist; this machine has "
                                 f"{torch.cuda.device_count()}")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp_dtype] if amp else None
    return Backend("cuda", f"cuda:{device}", 1, dtype)


@BACKENDS.register("ddp", slots="world_size")
def ddp(*, world_size: int = 2, dist_backend: Literal["gloo", "nccl"] = "gloo",
        threads: int = 1, device: Literal["cpu", "cuda"] = "cpu") -> Backend:
    """DistributedDataParallel over world_size processes (gloo on CPU, nccl on GPUs)."""
    from modelopt.measure import cpu_count

    if world_size < 1:
        raise BackendUnavailable(f"ddp world_size must be >= 1, got {world_size}")
    if device == "cpu":
        if dist_backend == "nccl":
            raise BackendUnavailable("ddp: nccl needs device: cuda; use gloo on the CPU")
        if world_size * threads > cpu_count():
            raise BackendUnavailable(f"ddp: world_size {world_size} x {threads} threads needs "
                                     f"{world_size * threads} CPUs; this machine has {cpu_count()}")
    else:
        if not torch.cuda.is_available():
            raise BackendUnavailable("CUDA is not available here (ddp with device: cuda)")
        if world_size > torch.cuda.device_count():
            raise BackendUnavailable(f"ddp: world_size {world_size} needs that many GPUs; "
                                     f"this machine has {torch.cuda.device_count()}")
    return Backend("ddp", "cpu" if device == "cpu" else "cuda:0", threads, None, world_size,
                   dist_backend)


def launched(spec: dict, local_rank: int, local_world: int) -> Backend:
    """The ddp backend of one rank of a launched job (torchrun): the world is the launcher's,
    and only this node's share of it (local_world ranks) must fit on this machine."""
    from dataclasses import replace

    b = build({**spec, "world_size": local_world})
    return replace(b, world_size=spec.get("world_size", local_world),
                   device=f"cuda:{local_rank}" if b.is_cuda else "cpu")


def build(spec: dict) -> Backend:
    return BACKENDS.build(spec["name"], **{k: v for k, v in spec.items() if k != "name"})


def available(spec: dict) -> str | None:
    """Why this backend cannot run here, or None when it can (checked before a cell starts)."""
    try:
        build(spec)
    except BackendUnavailable as exc:
        return str(exc)
    return None
