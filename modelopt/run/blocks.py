"""The timing stage's unit of measurement: a model warmed up once, then timed in blocks of
calls that last about BLOCK_S each, one block per model per round (run/timing.py)."""

from __future__ import annotations

import statistics
import time

WARMUP = 10  # warm-up calls at most ...
WARMUP_S = 0.3  # ... or until this long has passed
MIN_WARMUP = 3


def block(model, x, number: int) -> float:
    """Milliseconds per call of one timed block: one untimed call first (the model runs
    again after the others ran: its caches are cold), then `number` calls. torch's
    Timer.timeit warmed max(number // 100, 2) calls before each block instead, which made
    a slow model's rounds three times its timed calls (vision: 165 of 245 s per process)."""
    import torch

    with torch.inference_mode():
        model(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(number):
            model(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / number * 1e3


def warm(model, x) -> float:
    """Warm-up calls: WARMUP of them, or fewer once WARMUP_S has passed (at least
    MIN_WARMUP); returns the median seconds of the last three, which size the timed blocks.
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
    return statistics.median(times[-3:])
