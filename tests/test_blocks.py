"""The timing stage's blocks: warm-up bounded by calls and by time; a block's first call is
not timed (run/blocks.py)."""

import time

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
