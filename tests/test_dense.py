"""Train once, compress many (modelopt/run/dense.py)."""

import json

from modelopt.results import store
from modelopt.run import dense, runner
from modelopt.run.cell import run_cell
from modelopt.spec.suite import parse

SUITE = """
name: once
seeds: [0, 1]
defaults:
  dataset: {name: synthetic, n_samples: 300, n_features: 8, n_classes: 3}
  model: {name: mlp, hidden: 32, dropout: 0.2, batchnorm: true}
  optimizer: {name: adam, lr: 0.01}
  train: {steps: 30, batch_size: 32, eval_every: 10}
include:
  - {prune: none}
  - {prune: {name: random_unstructured, amount: 0.5, finetune_steps: 10}}
  - {prune: {name: l1_structured, amount: 0.5, finetune_steps: 10}}
  - {quantize: {name: dynamic_int8, layers: linear}}
  - {quantize: {name: weight_clip, clip: 0.5}}  # acts while training: trains its own
"""

SAME = ("accuracy", "loss", "params_nonzero", "best_val_step", "accuracy_best_val")


def test_the_training_key_ignores_what_happens_after_training_only():
    cells = parse(SUITE).cells
    keys = [dense.key(c, 0) for c in cells]
    assert len(set(keys[:4])) == 1 and keys[4] != keys[0]
    assert dense.key(cells[0], 1) != keys[0]
    timed = cells[0].replaced(train={**cells[0].train.settings.model_dump(), "timeout_s": 5.0})
    assert dense.key(timed, 0) == keys[0]
    assert dense.shared_keys(parse(SUITE).runs()) == {dense.key(cells[0], s)
                                                      for s in (0, 1)}


def test_a_loaded_dense_model_gives_the_figures_of_training_it(tmp_path):
    """Dropout, batch norm and random pruning draw from torch's global generator: a cell
    that loads the trained network must draw as one that trained it."""
    cells = parse(SUITE).cells
    path = str(tmp_path / "k.pt")
    first = run_cell(cells[0], 0, dense_path=path)
    assert first.metrics["dense_reused"] is False
    for cell in cells[1:4]:
        loaded = run_cell(cell, 0, dense_path=path)
        trained = run_cell(cell, 0)
        assert loaded.metrics["dense_reused"] is True
        for m in SAME:
            assert loaded.metrics.get(m) == trained.metrics.get(m), (cell.cell_id, m)
        assert loaded.figures_of == trained.figures_of
        assert _untimed(loaded.curves) == _untimed(trained.curves)
        # the training's speed is that of the cell that trained it, not the load's
        assert loaded.metrics["train_samples_s"] == first.metrics["train_samples_s"]


def _untimed(curves):
    return [{k: v for k, v in c.items() if k != "seconds"} for c in curves]


def test_a_run_trains_each_prefix_once_and_a_resumed_run_reuses_it(tmp_path):
    suite = parse(SUITE)
    out = tmp_path / "out"
    assert not runner.run(suite, out, jobs=2, timing_processes=1).failed
    recs = store.read(out)
    assert len(recs) == 10 and all(r.ok for r in recs)
    reused = [r for r in recs if r.metrics.get("dense_reused")]
    # per seed, one of the four cells sharing a prefix trained it; weight_clip trained its own
    assert len(reused) == 6
    assert not any(r.cell["quantize"] and r.cell["quantize"]["name"] == "weight_clip"
                   for r in reused)
    assert len(list((out / dense.DIR).glob("*.pt"))) == 2
    # a killed run's cells are gone: the resumed run loads what the first one trained
    lines = (out / "results.jsonl").read_text().splitlines()
    kept = [x for x in lines if json.loads(x)["cell"]["prune"] is None]
    (out / "results.jsonl").write_text("\n".join(kept) + "\n")
    assert not runner.run(suite, out, jobs=2, timing_processes=1).failed
    again = [r for r in store.read(out) if r.cell["prune"] is not None]
    assert len(again) == 4 and all(r.metrics["dense_reused"] for r in again)
