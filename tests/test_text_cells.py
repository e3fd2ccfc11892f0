"""Text cells end to end: a language model and a text classifier trained, compressed,
deployed, timed (with a decoder's generation) and reported, through the command line."""

import json
import math
import subprocess
import sys

import pytest

from modelopt.run.cell import run_cell
from modelopt.spec.suite import parse

LM = """
name: lm
seeds: [0]
defaults:
  dataset: {name: corpus, block_size: 32, max_chars: 30000}
  model: {name: gpt, dim: 32, depth: 1, heads: 2}
  optimizer: {name: adamw, lr: 0.01}
  train: {steps: 30, batch_size: 16, eval_every: 15}
baseline: {quantize: none, deploy: eager}
include:
  - {quantize: none}
  - {quantize: int8_dynamic, deploy: onnxruntime}
  - {distill: {name: kd, teacher: {model: {name: gpt, dim: 32, depth: 2, heads: 2},
                                   optimizer: {name: adamw, lr: 0.01},
                                   train: {steps: 30, batch_size: 16, eval_every: 15}}}}
"""


def test_a_language_model_cell_reports_perplexity_beside_its_baselines():
    cell = parse(LM).cells[0]
    m = run_cell(cell, 0).metrics
    assert m["perplexity"] == pytest.approx(math.exp(m["loss"]))
    assert m["bits_per_char"] == pytest.approx(m["loss"] / math.log(2))  # one char per token
    assert 0 < m["next_token_accuracy"] < 1
    # the best validation evaluation's test figure is a perplexity too, not a score
    assert m["perplexity_best_val"] >= 1 and m["val_score"] < 0
    assert m["baseline_kneser_ney_perplexity"] < m["baseline_unigram_perplexity"]
    assert m["train_tokens_s"] == pytest.approx(32 * m["train_samples_s"])
    # 30 steps barely learn: better than guessing among the vocabulary, worse than KN
    assert m["baseline_kneser_ney_perplexity"] < m["perplexity"] < m["vocab_size"]


def test_text_suites_run_deploy_time_generation_and_report(tmp_path):
    suite = tmp_path / "lm.yaml"
    suite.write_text(LM)
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "modelopt", "run", str(suite), "--out", str(out),
                          "--jobs", "2", "-q"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    recs = {("kd" if r["cell"].get("distill") else
             r["cell"].get("deploy", {}).get("name", "eager")): r
            for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert all(r["status"] == "ok" for r in recs.values()), [r["error"] for r in recs.values()]
    onnx, eager_m = recs["onnxruntime"]["metrics"], recs["eager"]["metrics"]
    # int8 on ONNX Runtime's kernels: the same network's perplexity, within int8's error
    assert onnx["quantized_layers"] >= 6 and onnx["runtime"] == "onnxruntime"
    assert onnx["perplexity"] == pytest.approx(eager_m["perplexity"], rel=0.05)
    rep = subprocess.run([sys.executable, "-m", "modelopt", "report", str(out), "--out",
                          str(tmp_path / "rep")], capture_output=True, text=True)
    assert rep.returncode == 0, rep.stderr
    page = (tmp_path / "rep" / "lm.md").read_text()
    assert "Kneser-Ney ppl" in page and "first token ms" in page and "train tokens/s" in page
    # the student against the same model from scratch, in perplexity (the task's figure)
    kd_row = next(line for line in page.splitlines() if "| kd(" in line)
    assert "| perplexity |" in kd_row
    assert f"{recs['kd']['metrics']['teacher_perplexity']:.4g}" in kd_row
    timing = json.loads((out / "timing.json").read_text())
    eager = [r for r in timing["rows"] if r["cell_id"] == recs["eager"]["cell_id"]]
    # the eager decoder's generation is timed beside its forward pass; an ONNX model has no
    # key-value cache to decode with
    assert eager and all(0 < r["ms_first_token"] < r["ms_generate"] for r in eager)
    assert all(r["new_tokens"] == 16 for r in eager)  # half of 32 positions
    assert not any("ms_generate" in r for r in timing["rows"]
                   if r["cell_id"] == recs["onnxruntime"]["cell_id"])
    # the gate re-times the decoder's generation too, beside its forward pass: a threshold
    # on it is judged, never silently ignored
    cmp = subprocess.run([sys.executable, "-m", "modelopt", "compare", str(out), str(out),
                          "--all", "--fail-on", "per_token_ms:50%", "--timing-processes", "3"],
                         capture_output=True,
                         text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    decode = [line for line in cmp.stdout.splitlines() if "token_ms (re-timed" in line]
    assert {line.split("|")[2].split()[0] for line in decode} == {"first_token_ms",
                                                                   "per_token_ms"}
    assert all("50 %" in line for line in decode if "per_token_ms" in line)


def test_a_text_classifier_on_a_csv_trains_and_ships_on_onnx_runtime(tmp_path):
    rows = [("the cat purrs on the mat", "cat"), ("a cat meows", "cat"),
            ("the dog barks at night", "dog"), ("a dog fetches sticks", "dog")] * 15
    csv = tmp_path / "t.csv"
    csv.write_text("sentence,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    cell = parse(f"""
name: cls
defaults:
  dataset: {{name: csv, path: '{csv}', target: label, text: sentence, max_length: 24}}
  model: {{name: transformer, dim: 32, depth: 1, heads: 2}}
  optimizer: {{name: adamw, lr: 0.01}}
  train: {{steps: 40, batch_size: 16, eval_every: 20}}
  deploy: onnxruntime
""").cells[0]
    m = run_cell(cell, 0).metrics
    assert m["accuracy"] >= 0.9  # "cat" and "dog" are in every text
    assert m["deploy_agreement"] >= 0.99 and m["class_names"] == ["cat", "dog"]


def test_a_malformed_generation_timing_is_refused_when_read(tmp_path):
    from modelopt.results.files import ResultsError
    from modelopt.results.latency import read

    row = {"cell_id": "c", "seed": 0, "kind": "model", "process": 0, "ms_batch1": 1.0,
           "p90_ms_batch1": 1.0, "ms_batch": 2.0, "ms_first_token": 1.0, "ms_generate": 9.0,
           "new_tokens": 1}  # one token: no time per further token to divide by
    (tmp_path / "timing.json").write_text(json.dumps({"suite": "s", "processes": 1,
                                                      "rows": [row]}))
    with pytest.raises(ResultsError):
        read(tmp_path)
    row["new_tokens"] = 8
    (tmp_path / "timing.json").write_text(json.dumps({"suite": "s", "processes": 1,
                                                      "rows": [row]}))
    from modelopt.results.latency import figures

    m = figures(read(tmp_path))[("c", 0)]
    assert m["first_token_ms"] == 1.0 and m["per_token_ms"] == pytest.approx(8 / 7)
