"""Every kind of model the shipped suites save is rebuilt from data alone (run/rebuild.py):
the architectures, slimmed shapes (depthwise and residual convolutions included),
quantizers and deploy formats they use, each checked against the cell's own outputs."""

import pytest
import torch

from modelopt.run import rebuild, timing
from modelopt.run.cell import run_cell
from modelopt.spec.suite import parse

IMAGES = """
name: rb
seeds: [1]
defaults:
  dataset: {name: digits}
  model: MODEL
  optimizer: {name: adam, lr: 0.01}
  train: {steps: 2, batch_size: 16, eval_every: 2, eval_batch_size: 256}
EXTRA
"""
SIGNALS = IMAGES.replace("{name: digits}", "{name: synthetic, n_samples: 300, n_features: 40, "
                                           "n_classes: 4}")
STRUCTURED = "  prune: {name: l1_structured, amount: 0.5}"
CASES = {
    "mobilenet structured": (IMAGES, "mobilenet_v3_small", STRUCTURED),
    "resnet18 structured": (IMAGES, "resnet18", STRUCTURED),
    "cnn2d": (IMAGES, "{name: cnn2d, channels: 8}", ""),
    "gru": (SIGNALS, "{name: gru, hidden: 6, bidirectional: true}", ""),
    "mlp global unstructured": (SIGNALS, "{name: mlp, hidden: 16, batchnorm: true}",
                                "  prune: {name: l1_unstructured, amount: 0.9, global: true}"),
    "cnn int8 weight-only": (SIGNALS, "{name: cnn, channels: 8}", "  quantize: int8_weight_only"),
    "cnn separable structured, compiled": (
        SIGNALS, "{name: cnn, channels: 8, separable: true}", STRUCTURED + "\n  deploy: compile"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_shipped_kind_of_model_is_rebuilt_from_data(case, tmp_path):
    text, model, extra = CASES[case]
    config = parse(text.replace("MODEL", model).replace("EXTRA", extra)).cells[0]
    out = run_cell(config, 1)
    assert out.status == "ok", out.error
    timing.save_all(tmp_path, "c", 1, out.models, out.example, out.batch, out.input_shape,
                    out.num_outputs)
    checked = rebuild.recipe_of_record(config.as_config(), None)
    assert {p.stem.rsplit("-", 1)[1] for p in tmp_path.glob("*.pt")} == set(out.models)
    for kind, item in out.models.items():
        # load() raises unless the rebuilt model gives the cell's own outputs
        model, example, batch = rebuild.load(tmp_path / f"c-1-{kind}.pt", checked)
        with torch.inference_mode():
            assert model(example).shape[0] == 1
        if kind == "slimmed":  # the saved shapes, not the dense architecture's
            assert sum(p.numel() for p in model.parameters()) == \
                sum(p.numel() for p in item.source.parameters())


def test_weights_that_do_not_fit_are_not_rebuilt(tmp_path):
    config = parse(SIGNALS.replace("MODEL", "{name: mlp, hidden: 16}").replace("EXTRA", "")
                   ).cells[0]
    out = run_cell(config, 1)
    timing.save_all(tmp_path, "c", 1, out.models, out.example, out.batch, out.input_shape,
                    out.num_outputs)
    wider = rebuild.recipe_of_record({**config.as_config(), "model": {"name": "mlp", "hidden": 32}}, None)
    # another architecture's keys do not fit: refused, never timed as the cell's model
    other = rebuild.recipe_of_record({**config.as_config(), "model": {"name": "linear"}}, None)
    with pytest.raises(rebuild.NotRebuildable, match="do not fit"):
        rebuild.load(tmp_path / "c-1-model.pt", other)
    # a wider one is resized to the saved shapes, and then is (and computes) the cell's model
    model, _, _ = rebuild.load(tmp_path / "c-1-model.pt", wider)
    assert sum(p.numel() for p in model.parameters()) == \
        sum(p.numel() for p in out.models["model"].source.parameters())
