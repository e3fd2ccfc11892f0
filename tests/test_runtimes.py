"""Technique × runtime: runtimes are ranked only by speed-ups over one and the same model."""

import pandas as pd

from modelopt.results.report import baselines
from modelopt.results.runtimes import best_runtimes, runtime_table

ORT = {"name": "onnxruntime"}
INT8 = {"name": "int8_static"}


def agg(speedups: dict[str, float]) -> pd.DataFrame:
    """Float and static int8, each on eager PyTorch and ONNX Runtime, with these batch
    speed-ups (the report's columns, as add_speedups writes them)."""
    cells = {"float-eager": {"model": "cnn"}, "float-ort": {"model": "cnn", "deploy": ORT},
             "int8-eager": {"model": "cnn", "quantize": INT8},
             "int8-ort": {"model": "cnn", "quantize": INT8, "deploy": ORT}}
    rows = []
    for cid, cell in cells.items():
        v = speedups[cid]
        rows.append({"cell_id": cid, "cell": cell, "n": 3,
                     "axis:quantize": cell.get("quantize", {"name": "none"})["name"],
                     "axis:deploy": cell.get("deploy", {"name": "eager"})["name"],
                     "speedup_batch": v, "speedup_batch_ci_low": v * 0.95,
                     "speedup_batch_ci_high": v * 1.05, "size_bytes": 30_000,
                     # a PT2E program's saved file is larger than its int8 weights: the
                     # page gives one size, the headline's
                     **({"artifact_bytes": 46_400} if cid == "int8-eager" else {})})
    return pd.DataFrame(rows)


def test_one_baseline_for_every_runtime_ranks_them():
    # ONNX Runtime runs the float model 3.6x eager's speed, and its int8 model 2.2x
    a = agg({"float-eager": 1.0, "float-ort": 3.6, "int8-eager": 0.5, "int8-ort": 2.2})
    bases, _ = baselines(a, {"quantize": "none", "deploy": "eager"})
    assert {b["cell_id"] for b in bases.values()} == {"float-eager"}
    best = best_runtimes(a, bases)
    assert best["float-eager"] == best["float-ort"] == "onnxruntime 3.60×"
    assert best["int8-eager"] == best["int8-ort"] == "onnxruntime 2.20×"
    table = runtime_table(a, bases)
    assert "onnxruntime 3.60×" in table and "do not rank" not in table
    assert "46.4 kB" not in table and table.count("30.0 kB") == 4
    assert "| baseline · 30.0 kB" in table and "≈ 1.00" not in table  # not over itself


def test_a_runner_up_inside_the_winners_interval_is_named_as_a_tie():
    # ONNX Runtime 1.03× [0.98, 1.08] over eager's 1.00: no winner beyond the noise
    a = agg({"float-eager": 1.0, "float-ort": 1.03, "int8-eager": 0.5, "int8-ort": 2.2})
    bases, _ = baselines(a, {"quantize": "none", "deploy": "eager"})
    best = best_runtimes(a, bases)
    assert best["float-ort"] == "onnxruntime 1.03× ≈ eager"
    assert best["int8-ort"] == "onnxruntime 2.20×"  # 2.09 > 0.50: a winner


def test_each_runtime_against_its_own_float_model_ranks_nothing():
    # without `baseline:`, each runtime's rows are over that runtime's float model: eager's
    # 1.00 and ONNX Runtime's 1.00 are not the same speed, nor int8's 0.50 and 0.61
    a = agg({"float-eager": 1.0, "float-ort": 1.0, "int8-eager": 0.5, "int8-ort": 0.61})
    bases, _ = baselines(a, None)
    assert bases["int8-ort"]["cell_id"] == "float-ort"
    assert bases["int8-eager"]["cell_id"] == "float-eager"
    assert best_runtimes(a, bases) == {}
    table = runtime_table(a, bases)
    assert "0.61 [0.58, 0.64]" in table  # what int8 buys on ONNX Runtime, still shown
    assert "do not rank the runtimes" in table
    assert [line.split("|")[-2].strip() for line in table.splitlines()[2:4]] == ["–", "–"]


def test_a_runtime_only_a_lone_technique_ships_on_gets_no_column():
    """A pruned model shipped only on OpenVINO has nothing to compare across runtimes: no
    row, and no OpenVINO column of dashes beside the techniques that do."""
    a = agg({"float-eager": 1.0, "float-ort": 3.6, "int8-eager": 0.5, "int8-ort": 2.2})
    lone = {"cell_id": "pruned-ov", "cell": {"model": "cnn", "prune": {"name": "l1"},
                                             "deploy": {"name": "openvino"}},
            "n": 3, "axis:quantize": "none", "axis:deploy": "openvino", "speedup_batch": 2.0}
    a = pd.concat([a, pd.DataFrame([lone])], ignore_index=True)
    bases, _ = baselines(a, {"quantize": "none", "deploy": "eager"})
    table = runtime_table(a, bases)
    assert "onnxruntime: speed-up" in table and "openvino" not in table


def test_two_variants_of_one_runtime_are_two_columns():
    """OpenVINO in f32 and in bf16 (or two compile modes) are different runtimes to a user:
    each its own column, and the fastest named as the variant it is."""
    ov = {"name": "openvino"}
    cells = {"eager": ({"model": "cnn"}, "eager", 1.0),
             "f32": ({"model": "cnn", "deploy": {**ov, "precision": "f32"}},
                     "openvino(precision=f32)", 3.36),
             "bf16": ({"model": "cnn", "deploy": {**ov, "precision": "bf16"}},
                      "openvino(precision=bf16)", 5.08)}
    a = pd.DataFrame([{"cell_id": cid, "cell": cell, "n": 3, "axis:deploy": label,
                       "speedup_batch": v, "speedup_batch_ci_low": v * 0.95,
                       "speedup_batch_ci_high": v * 1.05, "size_bytes": 30_000}
                      for cid, (cell, label, v) in cells.items()])
    bases, _ = baselines(a, {"deploy": "eager"})
    assert set(best_runtimes(a, bases).values()) == {"openvino(precision=bf16) 5.08×"}
    header = runtime_table(a, bases).splitlines()[0]
    assert "openvino(precision=f32): speed-up" in header
    assert "openvino(precision=bf16): speed-up" in header


def test_a_page_shipping_int8_or_half_names_the_instruction_sets_it_needs():
    """What int8 and bf16 speed rely on, and whether the records' CPU has it: said on the
    page, not only in the docs."""
    from modelopt.results.runtimes import kernels_note

    checked = "avx2 avx512f avx512_vnni avx_vnni amx_int8 avx512_bf16 amx_bf16"
    env = {"cpu": "x", "cpu_flags": "avx2 avx512f avx512_vnni", "cpu_flags_checked": checked}
    df = pd.DataFrame({"cell": [{"model": "cnn"}, {"quantize": INT8, "deploy": ORT},
                                {"quantize": {"name": "bf16"}}], "env": [env] * 3})
    note = kernels_note(df)
    assert "int8 needs avx512_vnni or avx_vnni or amx_int8; this CPU has avx512_vnni" in note
    assert "bf16 needs avx512_bf16 or amx_bf16; this CPU has none of them" in note
    assert kernels_note(df.iloc[:1]) == ""  # float only: nothing to say
    ov = pd.DataFrame({"cell": [{"deploy": {"name": "openvino", "precision": "bf16"}}],
                       "env": [env]})
    assert "bf16 needs" in kernels_note(ov) and "int8" not in kernels_note(ov)
    old = pd.DataFrame({"cell": [{"quantize": {"name": "fp16"}}],  # looked for no fp16 flag
                        "env": [{**env, "cpu_flags_checked": "avx2 avx512_vnni"}]})
    assert kernels_note(old) == ""
