"""The timing stage's blocks: warm-up bounded by calls and by time; a block's first call is
not timed (run/blocks.py)."""

import time

import pytest
import torch
from torch import nn

from modelopt.run import blocks


class Counting(nn.Module):
    def __init__(self, sleep_s: float = 0.0):
        super().__init__()
        self.calls, self.sleep_s = 0, sleep_s

    def forward(self, x):
        self.calls += 1
        time.sleep(self.sleep_s)
        return x


def test_a_slow_model_warms_for_fewer_calls_a_fast_one_for_all():
    slow, fast = Counting(0.2), Counting()
    per_call = blocks.warm(slow, torch.zeros(1))
    assert slow.calls == blocks.MIN_WARMUP and per_call >= 0.2  # past WARMUP_S after MIN_WARMUP
    blocks.warm(fast, torch.zeros(1))
    assert fast.calls == blocks.WARMUP


def test_a_block_times_its_calls_after_one_untimed_call():
    model = Counting(0.01)
    ms = blocks.block(model, torch.zeros(1), 3)
    assert model.calls == 4 and ms >= 10.0


def test_a_long_call_is_timed_without_an_untimed_call_before_it():
    model = Counting(0.001)
    blocks.block(model, torch.zeros(1), 3, prime=False)
    assert model.calls == 3
    assert blocks.prime_before(0.001) and not blocks.prime_before(blocks.PRIME_BELOW_S)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_block_is_timed_on_the_gpus_clock():
    """CUDA events around a block read what a synchronised host clock reads, less the
    synchronisation: the same milliseconds within a wide margin, in one run."""
    w = torch.randn(2048, 2048, device="cuda")
    model, x = (lambda v: v @ w), torch.randn(2048, 2048, device="cuda")
    blocks.warm(model, x)
    events = blocks.block(model, x, 50)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(50):
        model(x)
    torch.cuda.synchronize()
    host = (time.perf_counter() - t0) / 50 * 1e3
    assert 0.5 < events / host < 1.5, (events, host)
