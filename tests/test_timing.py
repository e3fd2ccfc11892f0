"""The timing stage's arithmetic: ratios within a process, intervals over processes."""

import math

import pytest
import torch
from torch import nn

from modelopt.results import latency
from modelopt.run import rebuild, timing


def rows(times: dict) -> list[dict]:
    """{(cell_id, kind, process, seed): ms} -> rows as the timing stage writes them."""
    return [{"cell_id": c, "kind": k, "process": p, "seed": s, "ms_batch": ms,
             "ms_batch1": ms / 10, "p90_ms_batch1": ms / 9}
            for (c, k, p, s), ms in times.items()]


def test_ratio_is_taken_within_a_process_and_replicated_over_processes():
    # the machine is 2x slower in process 1: a ratio within each process does not see it
    t = {}
    for p, machine in enumerate((1.0, 2.0, 1.0)):
        for s in (0, 1):
            t[("base", "model", p, s)] = 4.0 * machine
            t[("cell", "slimmed", p, s)] = 2.0 * machine * (1.02 if p == 2 else 1.0)
    r = latency.ratio(rows(t), {"cell_id": "base", "kind": "model"},
                     {"cell_id": "cell", "kind": "slimmed"}, "ms_batch")
    per_process = [2.0, 2.0, 2.0 / 1.02]
    assert r.n == 3 and r.mean == pytest.approx(sum(per_process) / 3)
    sd = math.sqrt(sum((x - r.mean) ** 2 for x in per_process) / 2)
    assert r.ci_high - r.mean == pytest.approx(4.302653 * sd / math.sqrt(3), rel=1e-5)
    assert r.ci_low > 1  # a 2x speed-up, whatever each process's machine speed


def test_seeds_pair_and_a_seed_on_one_side_only_is_left_out():
    t = {("a", "model", 0, 0): 1.0, ("b", "model", 0, 0): 2.0, ("b", "model", 0, 1): 100.0}
    r = latency.ratio(rows(t), {"cell_id": "b", "kind": "model"},
                     {"cell_id": "a", "kind": "model"}, "ms_batch")
    assert r.mean == 2.0 and r.n == 1 and math.isnan(r.ci_low)


def test_figures_are_medians_over_processes():
    t = {("a", "model", p, 0): ms for p, ms in enumerate((1.0, 3.0, 2.0))}
    t.update({("a", "slimmed", p, 0): ms for p, ms in enumerate((0.5, 0.4, 0.6))})
    fig = latency.figures({"rows": rows(t)})[("a", 0)]
    assert fig["latency_ms_batch_p50"] == 2.0 and fig["slimmed_latency_ms_batch_p50"] == 0.5
    assert fig["latency_ms_p50"] == pytest.approx(0.2) and fig["latency_processes"] == 3


SMALL = {"model": {"name": "linear"}}
BIG = {"model": {"name": "mlp", "hidden": 512, "depth": 1}}


def save_built(model_dir, cid: str, config: dict, x: torch.Tensor) -> nn.Module:
    from modelopt.techniques import models

    torch.manual_seed(0)
    model = models.build(config["model"], (8,), 2)
    timing.save_all(model_dir, cid, 0, {"model": rebuild.Shipped(model, model)}, x[:1], x,
                    (8,), 2)
    return model


def test_saved_models_round_trip_and_time(tmp_path):
    x = torch.randn(16, 8)
    for cid, config in (("small", SMALL), ("big", BIG)):
        save_built(tmp_path / latency.MODELS_DIR, cid, config, x)
    found = latency.artifacts(tmp_path)
    assert sorted(a.key for a in found) == [":big:0:model", ":small:0:model"]
    cells = {"small": SMALL, "big": BIG}
    timed = timing.time_saved([a.with_recorded(cells[a.cell_id]) for a in found],
                              timing.UserCode(), processes=3, rounds=5)
    out = timed.rows
    assert not timed.skipped
    assert len(out) == 6 and all(r["ms_batch"] > 0 and r["blocks"] == 5 for r in out)
    r = latency.ratio(out, {"cell_id": "big"}, {"cell_id": "small"}, "ms_batch")
    assert r.mean > 1  # a 512-wide hidden layer is more work than none, in every process
