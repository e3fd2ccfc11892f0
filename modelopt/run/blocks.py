"""The timing stage's unit of measurement: a model warmed up once, then timed in blocks of
calls that last about BLOCK_S each, one block per model per round (run/timing.py)."""

from __future__ import annotations

import statistics
import time

WARMUP = 10  # warm-up calls at most ...
WARMUP_S = 0.1  # ... or until this long has passed (0.3 s: 15 s of each vision process)
MIN_WARMUP = 2  # a slow model: one call after the first (which pays for first-call set-up)
# a call at least this long is timed without an untimed call before it: its cold start is
# lost in its length (resnet18 at batch 32, 96 ms: 96.1 vs 96.6 ms per call with and
# without one, within its 2 % noise), and the untimed call doubled such a block's cost
PRIME_BELOW_S = 0.02


def prime_before(per_call_s: float) -> bool:
    """Whether a block of a model whose calls last `per_call_s` starts with an untimed call."""
    return per_call_s < PRIME_BELOW_S


def block(model, x, number: int, prime: bool = True) -> float:
    """Milliseconds per call of one timed block: one untimed call first where `prime` (the
    model runs again after the others ran: its caches are cold), then `number` calls.
    torch's Timer.timeit warmed max(number // 100, 2) calls before each block instead,
    which made a slow model's rounds three times its timed calls (vision: 165 of 245 s per
    process)."""
    import torch

    with torch.inference_mode():
        if prime:
            model(x)
        if x.is_cuda:
            return _cuda_block(model, x, number)
        t0 = time.perf_counter()
        for _ in range(number):
            model(x)
        return (time.perf_counter() - t0) / number * 1e3


def _cuda_block(model, x, number: int) -> float:
    """Milliseconds per call on the GPU, between two CUDA events recorded on the stream
    before the first call and after the last: the GPU's own clock, from the first call's
    start to the last one's end (idle gaps where the CPU could not queue calls fast enough
    included, as a user would see them), without the host's synchronisation cost."""
    import torch

    with torch.cuda.device(x.device):  # the events on the stream of the model's own GPU
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()  # nothing queued before the block counts
        start.record()
        for _ in range(number):
            model(x)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / number


def warm(model, x) -> float:
    """Warm-up calls: WARMUP of them, or fewer once WARMUP_S has passed (at least
    MIN_WARMUP); returns the median seconds of the last three but the first, which size
    the timed blocks.
    A 100 ms model warmed for ten calls and was sized with five more: 1.5 s of each timing
    process per model, the stage's largest cost after the rounds themselves."""
    import torch

    times: list[float] = []
    start = time.perf_counter()
    with torch.inference_mode():
        while len(times) < WARMUP and (len(times) < MIN_WARMUP
                                       or time.perf_counter() - start < WARMUP_S):
            t0 = time.perf_counter()
            model(x)
            if x.is_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return statistics.median(times[1:][-3:] or times)
