import sys

import pytest
import torch
from torch import nn

from modelopt import measure
from modelopt.backends import cpu


def test_linear_params_and_flops_by_hand():
    m = nn.Linear(40, 10)
    params, nonzero = measure.count_params(m)
    assert params == 40 * 10 + 10 == nonzero
    # 40 x 10 multiply-adds at 2 FLOPs each (bias adds are not counted by flop_counter)
    assert measure.flops(m, torch.zeros(1, 40)) == 2 * 40 * 10
    with torch.no_grad():
        m.weight[:, :20] = 0
    assert measure.count_params(m) == (410, 210)
    assert measure.flops_nonzero(nn.Sequential(m), torch.zeros(1, 40)) == 2 * 20 * 10


def test_conv_flops_by_hand():
    conv = nn.Conv1d(1, 4, 5)
    # output length 36, each output = 5 multiply-adds per channel
    assert measure.flops(conv, torch.zeros(1, 1, 40)) == 2 * 4 * 36 * 5


def test_size_counts_saved_bytes():
    big = nn.Linear(100, 100)
    assert 10100 * 4 <= measure.size_bytes(big) <= 10100 * 4 + 4096  # float32 + a small header


def test_latency_returns_percentiles():
    lat = measure.latency(nn.Linear(40, 10), torch.zeros(1, 40), cpu(), threads=1,
                          min_run_time=0.05)
    assert 0 < lat.p50_ms <= lat.p90_ms and lat.runs > 10 and lat.threads == 1


def test_peak_memory_sees_torch_allocations():
    with measure.PeakMemory() as small:
        torch.ones(1000)
    with measure.PeakMemory() as big:
        x = torch.ones(100 * 2**20 // 4)  # 100 MB
        x += 1
    del x
    assert big.peak_mb - big.baseline_mb > 90
    assert small.peak_mb - small.baseline_mb < 20  # the reset really forgot the 100 MB


def test_classification_metrics():
    out = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 2.0, 0], [0, 0, 2.0]])
    y = torch.tensor([0, 1, 2, 2])
    m = measure.classification_metrics(out, y, 3)
    assert m["accuracy"] == 0.75
    assert m["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert abs(m["f1_macro"] - (1 + 2 / 3 + 2 / 3) / 3) < 1e-9


MALLINFO = """
import ctypes, ctypes.util, torch
from modelopt.measure import malloc_for_timing
libc = ctypes.CDLL(ctypes.util.find_library("c"))
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                "usmblks", "fsmblks", "uordblks", "fordblks",
                                                "keepcost")]
libc.mallinfo2.restype = Info
def mmapped_after_alloc():
    before = libc.mallinfo2().hblks
    t = torch.empty(2**18)  # 1 MB: over the runner's 64 KB threshold
    return libc.mallinfo2().hblks - before
a = mmapped_after_alloc()
malloc_for_timing()
b = mmapped_after_alloc()
print(a, b)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc mallopt")
def test_timing_reuses_freed_blocks_instead_of_mmapping_each_tensor():
    import os
    import subprocess

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # as the runner sets it
    out = subprocess.run([sys.executable, "-c", MALLINFO], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    before, after = map(int, out.stdout.split())
    assert before == 1 and after == 0  # a fresh mmap per 1 MB tensor, then none
