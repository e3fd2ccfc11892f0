"""The timing stage's arithmetic: ratios within a process, intervals over processes."""

import math
import pickle

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
                              timing.UserCode(), latency.Plan.fixed(3, rounds=5))
    out = timed.rows
    assert not timed.skipped
    assert len(out) == 6 and all(r["ms_batch"] > 0 and r["blocks"] == 5 for r in out)
    assert {r["device"] for r in out} == {"cpu"}  # where each model ran
    r = latency.ratio(out, {"cell_id": "big"}, {"cell_id": "small"}, "ms_batch")
    assert r.mean > 1  # a 512-wide hidden layer is more work than none, in every process


def test_widest_is_the_least_precise_ratio_at_either_batch_size():
    steady = {("base", "model", p, 0): 2.0 for p in range(3)}
    steady.update({("fast", "model", p, 0): 1.0 for p in range(3)})
    pairs = [({"cell_id": "base"}, {"cell_id": "fast"})]
    assert latency.widest(rows(steady), pairs) == pytest.approx(0.0)
    shaky = {**steady, ("fast", "model", 2, 0): 1.5}
    w = latency.widest(rows(shaky), pairs)
    r = latency.ratio(rows(shaky), *pairs[0], "ms_batch")
    assert w == pytest.approx((r.ci_high - r.ci_low) / 2 / r.mean) and w > 0.05
    assert latency.widest(rows(steady), []) is None


@pytest.mark.parametrize("done,wide,goes_on", [
    (2, 0.5, True),     # fewer than the processes planned: on, whatever the width
    (3, 0.03, False),   # precise enough
    (3, 0.08, True),    # too wide: one more
    (5, 0.08, False),   # too wide, but the most it runs
    (3, None, False),   # no speed-up to make precise
])
def test_the_stage_runs_more_processes_only_while_a_speed_up_is_imprecise(done, wide, goes_on):
    plan = latency.Plan(processes=3, max_processes=5, half_width=0.05)
    stopped, note = timing._enough(plan, done, wide, timed=True)
    assert (not stopped) == goes_on
    assert ("one more" in note) == (goes_on and done >= 3)
    fixed, _ = timing._enough(latency.Plan.fixed(3), 3, 0.5, timed=True)
    assert fixed == "3 processes, as asked"


def test_later_processes_time_the_runtime_file_the_first_one_built(tmp_path):
    """An ONNX model is exported (and int8-calibrated) once: the first process (here taking
    the run's verified own copy) sends its file back, and a job that carries it is not
    rebuilt (here it could not be: no recipe) and sends nothing back again."""
    pytest.importorskip("onnxruntime")
    from modelopt.run import rounds
    from modelopt.techniques.onnx_runtime import OrtModel, export_onnx

    x = torch.randn(4, 8)
    model = OrtModel(export_onnx(nn.Linear(8, 2).eval(), x))
    took = {"build": 0.0, "warm": 0.0, "rounds": 0.0}
    own = tmp_path / "own.pt"
    torch.save({"model": model, "example": x[:1], "batch": x}, own)
    first = rounds.Job(":c:0:model", "/nonexistent.pt", None, str(own), verified=True)
    timers, skipped, files = rounds._prepare([first], took)
    assert not skipped and {k for k, _ in timers} == {":c:0:model"}
    made = files[":c:0:model"]
    again = pickle.loads(made)[0]
    assert isinstance(again, OrtModel) and again.blob == model.blob
    job = rounds.Job(":c:0:model", "/nonexistent.pt", None, built=made)
    timers, skipped, files = rounds._prepare([job], took)
    assert not skipped and {k for k, _ in timers} == {":c:0:model"} and files == {}
    lost = rounds.Job(":c:0:model", "/nonexistent.pt", None)  # no file: nothing to time
    assert rounds._prepare([lost], took)[:2] == ({}, {":c:0:model": "no recipe to rebuild it from"})


def test_the_stage_makes_precise_the_speed_ups_the_report_shows():
    from modelopt.results.headline import speedup_pairs

    dense = {"model": {"name": "cnn"}, "prune": None, "quantize": None}
    pruned = {**dense, "prune": {"name": "l1_structured", "amount": 0.5}}
    other = {**dense, "model": {"name": "mlp"}}  # no baseline of its own kind: no pair
    pairs = speedup_pairs({"d": dense, "p": pruned, "o": other}, None, slimmed={"p"})
    assert pairs == [({"cell_id": "d", "kind": "model"}, {"cell_id": "p", "kind": "slimmed"})]


def test_no_speed_up_is_given_between_models_timed_on_different_devices():
    """A CUDA cell whose int8 model ships on the CPU: its latency over the GPU baseline's is
    a comparison of two devices, not the technique's speed-up."""
    times = {(c, "model", p, 0): ms for p in range(3) for c, ms in
             (("base", 10.0), ("gpu_cell", 5.0), ("cpu_cell", 4.0))}
    found = rows(times)
    for r in found:
        r["device"] = "cpu" if r["cell_id"] == "cpu_cell" else "cuda"
    doc = {"rows": found}
    pairs = {"gpu_cell": ("base", "model"), "cpu_cell": ("base", "model")}
    ups = latency.speedups(doc, pairs)
    assert ups["gpu_cell"]["speedup_batch"] == pytest.approx(2.0) and ups["cpu_cell"] == {}
    assert latency.cross_device(doc, pairs) == {"cpu_cell": ("cuda", "cpu")}
    for r in found:  # rows written before rows named their device: one device
        del r["device"]
    assert latency.cross_device(doc, pairs) == {}
    assert latency.speedups(doc, pairs)["cpu_cell"]["speedup_batch"] == pytest.approx(2.5)


def test_the_stage_does_not_make_precise_a_speed_up_across_devices_it_never_reports():
    """A CPU model over a GPU baseline is no speed-up: however wide its interval, it does
    not keep the timing stage adding processes."""
    found = rows({(c, "model", p, 0): ms for p in range(3) for c, ms in
                  (("base", 10.0), ("same", 5.0 + p), ("apart", 4.0 + 3 * p))})
    for r in found:
        r["device"] = "cpu" if r["cell_id"] == "apart" else "cuda"
    base, same, apart = ({"cell_id": c, "kind": "model"} for c in ("base", "same", "apart"))
    alone = latency.widest(found, [(base, same)])
    assert latency.widest(found, [(base, same), (base, apart)]) == alone
    for r in found:
        del r["device"]
    assert latency.widest(found, [(base, same), (base, apart)]) > alone


def test_a_timing_process_that_goes_silent_is_ended_not_waited_for():
    """recv() waited for as long as the process took: a runtime that hung stalled the run."""
    import multiprocessing as mp

    from modelopt.results.latency import TimingError
    from modelopt.run import rounds

    mine, theirs = mp.Pipe()
    theirs.send(("alive", None))
    theirs.send(("ok", {"a": 1}))
    assert rounds.answer(mine, stall_s=5) == ("ok", {"a": 1})  # past the heartbeats
    theirs.send(("alive", None))
    status, why = rounds.answer(mine, stall_s=0.3)  # a heartbeat, then silence
    assert status == "error" and why.startswith("it sent nothing for 0.3 s"), why
    # the limit is read before any process starts: a mistyped one is said, inf is none
    for raw, limit in (("120", 120.0), ("inf", None)):
        with pytest.MonkeyPatch.context() as env:
            env.setenv("MODELOPT_TIMING_STALL_S", raw)
            assert rounds.stall_limit() == limit
    for raw in ("abc", "0", "-5", "nan"):
        with pytest.MonkeyPatch.context() as env:
            env.setenv("MODELOPT_TIMING_STALL_S", raw)
            with pytest.raises(TimingError, match="MODELOPT_TIMING_STALL_S="):
                rounds.stall_limit()
