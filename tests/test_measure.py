
import torch
from torch import nn

from modelopt.run import measure
from modelopt.techniques import tasks


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


def test_attention_flops_by_hand():
    """nn.MultiheadAttention in eval mode without gradients runs a fused kernel the flop
    counter has no formula for: its projections and attention went uncounted."""
    m = nn.MultiheadAttention(16, 2, batch_first=True).eval()

    class Self(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = m

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    tokens, d = 5, 16
    projections = 2 * tokens * d * 3 * d + 2 * tokens * d * d  # q, k, v in; out
    scores_and_mix = 2 * (2 * tokens * tokens * d)  # q k^T and its weights x v, both heads
    assert measure.flops(Self().eval(), torch.zeros(1, tokens, d)) == projections + scores_and_mix


def test_size_counts_saved_bytes():
    big = nn.Linear(100, 100)
    assert 10100 * 4 <= measure.size_bytes(big) <= 10100 * 4 + 4096  # float32 + a small header


def test_peak_memory_sees_torch_allocations():
    with measure.PeakMemory() as small:
        torch.ones(1000)
    with measure.PeakMemory() as big:
        x = torch.ones(100 * 2**20 // 4)  # 100 MB
        x += 1
    del x
    assert big.peak_mb - big.baseline_mb > 90
    assert small.peak_mb - small.baseline_mb < 20  # the reset really forgot the 100 MB


def test_garbage_from_before_a_region_does_not_hide_its_growth():
    """A reference cycle holding 150 MB, left by earlier work and collected inside the
    region (as an allocation there can trigger): freed first, it hid the 100 MB the region
    allocated (the peak read as the baseline, in a long test session)."""
    import gc

    cycle = [torch.ones(150 * 2**20 // 4)]
    cycle.append(cycle)
    del cycle
    with measure.PeakMemory() as region:
        gc.collect()
        x = torch.ones(100 * 2**20 // 4)
        x += 1
    del x
    assert region.peak_mb - region.baseline_mb > 90


def test_freed_heap_memory_does_not_hide_a_regions_growth():
    """glibc keeps the memory of freed small allocations resident: a 100 MB tensor that
    reused it raised no RSS (read as 1.6 MB), so the region looked free of cost."""
    small = [torch.ones(16 * 1024) for _ in range(3200)]  # 64 KB each: 200 MB on the heap
    pin = torch.ones(1000)  # after them: the freed 200 MB is a hole, not the heap's top
    del small
    with measure.PeakMemory() as region:
        x = torch.ones(100 * 2**20 // 4)
        x += 1
    del x, pin
    assert region.peak_mb - region.baseline_mb > 90


def test_classification_metrics():
    out = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 2.0, 0], [0, 0, 2.0]])
    y = torch.tensor([0, 1, 2, 2])
    m = tasks.classification_metrics(out, y, 3)
    assert m["accuracy"] == 0.75
    assert m["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert abs(m["f1_macro"] - (1 + 2 / 3 + 2 / 3) / 3) < 1e-9


def test_cell_processes_keep_glibc_malloc_defaults(monkeypatch):
    """Users train and infer with glibc's defaults; a fixed MALLOC_MMAP_THRESHOLD_ made
    training 0.75x and batch latency 2x here, so the runner must not set one."""
    import os

    from modelopt.run import processes

    monkeypatch.setattr(processes, "_CTX", None)  # build the context here, not in an earlier test
    before = dict(os.environ)
    processes.context()
    assert "MALLOC_MMAP_THRESHOLD_" not in os.environ and dict(os.environ) == before


def test_machine_probe_times_a_fixed_workload():
    a, b = measure.machine_probe(1), measure.machine_probe(1)
    assert a > 0 and b > 0
    assert 0.2 < a / b < 5  # the same work: of one order, whatever the machine's load
