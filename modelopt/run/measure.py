"""Measurements: parameters, size, FLOPs, machine speed, peak memory. Each returns data;
a task's figures are its own (techniques/tasks.py), latency the timing stage's (timing.py)."""

from __future__ import annotations

import ctypes
import gc
import io
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from modelopt.techniques import attention
from modelopt.techniques.layers import weighted

# ---------------------------------------------------------------- size

def _tensors(model: nn.Module) -> list[torch.Tensor]:
    """The model's learned tensors as used in forward: parameters, and the packed weights of
    dynamically quantized Linear layers (which are not parameters)."""
    # torchao's int8 weights are tensor subclasses: counted as the values they stand for
    tensors = [p.detach().dequantize() if type(p.data).__module__.startswith("torchao")
               else p.detach() for p in model.parameters()]
    for mod in model.modules():
        if hasattr(mod, "_packed_params") and callable(getattr(mod, "weight", None)):
            w, b = mod.weight(), mod.bias()
            tensors += [w.dequantize() if w.is_quantized else w] + ([b] if b is not None else [])
    return tensors


def count_params(model: nn.Module, threshold: float = 0.0) -> tuple[int, int]:
    """(parameters, nonzero parameters). Call after pruning is made permanent (prune.remove).

    `threshold`: magnitudes at or below it count as zero (the report states it, for L1).
    """
    tensors = _tensors(model)
    total = sum(t.numel() for t in tensors)
    nonzero = sum(int((t.abs() > threshold).sum()) for t in tensors)
    return total, nonzero


def _saved(model: nn.Module) -> bytes:
    """What a user would ship: the saved state_dict (torch.save), or the file of a model
    that keeps its weights in one (an ONNX Runtime model's ONNX file)."""
    blob = getattr(model, "blob", None)
    if isinstance(blob, bytes) and next(model.parameters(), None) is None:
        return blob
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def size_bytes(model: nn.Module) -> int:
    """Bytes of what ships (`_saved`)."""
    return len(_saved(model))


def size_bytes_compressed(model: nn.Module) -> int:
    """Bytes of what ships after zlib: where sparsity pays off on disk."""
    import zlib

    return len(zlib.compress(_saved(model), 6))


# ---------------------------------------------------------------- FLOPs

def _count(model: nn.Module, example: torch.Tensor):
    """A FlopCounterMode that saw one eval-mode forward pass of `model` on `example`."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, custom_mapping=attention.flop_formulas())
    with torch.no_grad(), attention.unfused(), counter:  # attention as its math
        model(example)
    model.train(was_training)
    return counter


def flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass on `example` (batch 1), torch.utils.flop_counter convention:
    2 FLOPs per multiply-add, zeros counted (dense FLOPs)."""
    return int(_count(model, example).get_total_flops())


def flops_nonzero(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs that touch a nonzero weight: each Linear/Conv layer's FLOPs times its weight
    density; FLOPs elsewhere (GRU, pooling, activations) are counted dense. FlopCounterMode
    counts zeros, so a pruned model's `flops` stay dense (docs/explanation/measurement.md)."""
    counter = _count(model, example)
    counts = counter.get_flop_counts()  # keys: "Global", "<RootClass>.<module path>"
    root = type(model).__name__
    total = float(counter.get_total_flops())
    for name, mod in model.named_modules():
        if name and weighted(mod):
            layer = sum(counts.get(f"{root}.{name}", {}).values())
            density = float((mod.weight != 0).float().mean())
            total -= layer * (1.0 - density)
    return int(round(total))


# ---------------------------------------------------------------- machine speed

def machine_probe(threads: int, repeats: int = 3, steps: int = 4) -> float:
    """Milliseconds of a fixed training workload (a small conv net's forward, backward and
    SGD step on fixed data): how fast this process's share of the machine is right now.
    Median of `repeats`, so one preempted repeat does not move it. Run in the cell's process
    beside its training, it lets compare tell the code's speed from the machine's."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 32, 5, padding=2), nn.ReLU(), nn.Conv1d(32, 32, 5, padding=2),
                        nn.ReLU(), nn.Flatten(), nn.Linear(32 * 40, 10))
    x, y = torch.randn(100, 1, 40, generator=g), torch.randint(0, 10, (100,), generator=g)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    times = []
    for _ in range(repeats + 1):  # the first repeat warms up
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]) * 1e3)


# ---------------------------------------------------------------- memory

def _malloc_trim():
    """glibc's malloc_trim, where the C library is glibc (musl and others have none)."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None


_MALLOC_TRIM = _malloc_trim()


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} missing from /proc/self/status")


@dataclass
class PeakMemory:
    """Process RSS high-water mark over a region, reset at its start (Linux clear_refs).

    ru_maxrss cannot be reset and tracemalloc misses torch's allocations
    (docs/explanation/measurement.md).
    """

    baseline_mb: float = float("nan")
    peak_mb: float = float("nan")

    def __enter__(self):
        # garbage from before the region (a cycle holding tensors), collected by an
        # allocation inside it, would lower RSS as the region raised it: the region's
        # growth hidden (seen: a 100 MB tensor read as 0 MB). Collect it first.
        gc.collect()
        # and glibc keeps freed heap memory resident: an allocation in the region that
        # reuses it raises no RSS (after 200 MB of small tensors were freed, a 100 MB one
        # read as 1.6 MB). Give those pages back first (well under 1 ms, 19 ms once after
        # 200 MB were freed).
        if _MALLOC_TRIM is not None:
            _MALLOC_TRIM(0)
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.baseline_mb = _status_kb("VmRSS") / 1024
            self._ok = True
        except OSError:  # not Linux, or no permission: leave NaN rather than a wrong figure
            self._ok = False
        return self

    def so_far(self) -> float:
        """The high-water mark since the region began, read inside it."""
        return _status_kb("VmHWM") / 1024 if self._ok else float("nan")

    def __exit__(self, *exc):
        if self._ok:
            self.peak_mb = _status_kb("VmHWM") / 1024
        return False


# the instruction sets int8 and half-precision kernels depend on: ONNX Runtime's and oneDNN's
# int8 gains need VNNI or AMX (on AVX2 alone int8 can be no faster than float); oneDNN's bf16
# and fp16 kernels use AVX-512 BF16 / FP16 or AMX where present (else it converts to float).
# Records name the flags looked for (cpu_flags_checked), so a list that grows is not read as
# another CPU by compare.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16",
             "avx512_fp16", "amx_fp16")


def cpu_flags() -> str | None:
    """The int8- and half-relevant instruction-set flags this CPU has, space-separated; None
    where the CPU's flags cannot be read (not Linux, or no flags line)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return " ".join(flag for flag in CPU_FLAGS if flag in have)
    except OSError:
        pass
    return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()

