"""int8 with torchao (dynamic, weight-only, static PT2E) and the torch.ao fallback."""

import io

import pytest
import torch
from torch import nn

from modelopt.run import rebuild
from modelopt.run.measure import count_params, size_bytes
from modelopt.techniques import quantize
from modelopt.techniques.errors import TechniqueError
from modelopt.techniques.models import build
from modelopt.techniques.program import Program
from tests.rebuilt import rebuilt

torchao = pytest.importorskip("torchao")


def convert(name, model, x=None, **params):
    q = quantize.QUANTIZERS.build(name, **params)
    return q.convert(model, x if x is not None else torch.randn(q.calibration, 12))


def roundtrip(model):
    """What the timing stage does: the whole module saved, then loaded in another process."""
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize("name", ["int8_dynamic", "int8_weight_only"])
def test_torchao_int8_of_linear_layers_is_a_quarter_the_size(name):
    torch.manual_seed(0)
    m = build({"name": "mlp", "hidden": 256}, (12,), 4).eval()  # big enough that weights dominate
    q, info = convert(name, m)
    assert info["quantized_with"] == "torchao" and info["quantized_layers"] == 3
    assert info["float_layers"] == 0
    assert size_bytes(q) < 0.35 * size_bytes(m)
    assert count_params(q)[0] == count_params(m)[0]
    x = torch.randn(64, 12)
    with torch.inference_mode():
        assert (q(x).argmax(1) == m(x).argmax(1)).float().mean() >= 0.9
        assert torch.equal(roundtrip(q)(x), q(x))


def test_the_old_name_and_gru_layers_keep_torch_ao():
    torch.manual_seed(0)
    gru = build({"name": "gru", "hidden": 16}, (1, 40), 10).eval()
    q, info = convert("dynamic_int8", gru, torch.randn(2, 1, 40))
    assert info["quantized_with"] == "torch.ao" and info["quantized_layers"] == 2
    q, info = convert("int8_dynamic", build({"name": "mlp", "hidden": 8}, (12,), 4))
    assert info["quantized_with"] == "torchao"
    # a cnn's convolutions stay float under dynamic int8 (Linear layers only): counted
    _, info = convert("int8_dynamic", cnn64(), torch.randn(2, 1, 40))
    assert (info["quantized_layers"], info["float_layers"]) == (1, 3)


def test_without_torchao_dynamic_int8_falls_back_to_torch_ao(monkeypatch):
    monkeypatch.setattr(quantize, "torchao_version", lambda: None)
    _, info = convert("int8_dynamic", build({"name": "mlp", "hidden": 8}, (12,), 4))
    assert info["quantized_with"] == "torch.ao"


def test_dynamic_int8_of_a_model_without_linear_layers_fails():
    convs = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten())
    with pytest.raises(TechniqueError, match=r"int8_dynamic quantizes Linear layers, and the model"
                                             r" \(Sequential\) has none.*Conv1d.*int8_static"):
        convert("int8_dynamic", convs)


def cnn64():
    torch.manual_seed(0)
    return build({"name": "cnn", "channels": 64}, (1, 40), 10).eval()


def test_every_layer_of_an_exported_model_names_its_type_for_the_quantizer():
    """torch 2.11's matcher (a lent GPU machine's) finds layers only by `source_fn_stack`,
    which non-strict export does not write: int8_static quantized none of them there. Each
    operator of a layer names the layer's type, keyed by its path."""
    from modelopt.techniques import program

    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(152, 3)).eval()
    gm = program.export(model, torch.zeros(4, 1, 40)).module()
    quantize.name_sources(gm, model)
    named = {n.target: n.meta.get("source_fn_stack", [None])[-1] for n in gm.graph.nodes
             if n.op == "call_function"}
    aten = torch.ops.aten
    assert named[aten.conv1d.default] == ("0", nn.Conv1d), named
    assert named[aten.linear.default] == ("3", nn.Linear), named


def test_static_int8_quantizes_the_convolutions_and_ships_a_program():
    m = cnn64()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 40, generator=g)
    q, info = convert("int8_static", m, x)
    assert isinstance(q, Program)
    assert info["quantized_with"] == "torchao pt2e" and info["calibration_samples"] == 256
    assert info["quantized_layers"] == 4 and info["float_layers"] == 0  # 3 Conv1d, the head
    # int8 weights: the tensors a third of the float ones' bytes, the program's graph beside
    assert size_bytes(q) <= 0.35 * size_bytes(m)
    assert info["artifact_bytes"] == q.saved_bytes > size_bytes(q)
    test = torch.randn(64, 1, 40, generator=g)
    with torch.no_grad():
        out, ref = q(test), m(test)
        assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.9
        assert (out - ref).abs().max() < 0.05 * ref.abs().max()
        assert q(test[:1]).shape == (1, 10)  # any batch size
        assert torch.equal(roundtrip(q)(test), out)


def test_a_model_export_cannot_trace_is_refused_with_the_reason():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(12, 4)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    with pytest.raises(TechniqueError, match=r"int8_static: torch.export cannot trace"):
        convert("int8_static", Branchy(), torch.randn(8, 12))


def test_a_static_int8_cell_is_measured_and_timed_on_its_program(tmp_path):
    from modelopt.run.cell import run_cell
    from modelopt.spec.suite import parse

    cfg = parse("""
name: int8
seeds: [0]
defaults:
  dataset: {name: synthetic, n_samples: 400, n_features: 40, n_classes: 4}
  model: {name: cnn, channels: 32}
  optimizer: {name: adam, lr: 0.01}
  train: {steps: 40, batch_size: 32, eval_every: 40}
  quantize: {name: int8_static, calibration: 128}
matrix:
  model: [{name: cnn, channels: 32}]
""").cells[0]
    out = run_cell(cfg, 0)
    m = out.metrics
    assert m["quantized_with"] == "torchao pt2e" and m["calibration_samples"] == 128
    assert 0 < m["accuracy"] <= 1 and m["params"] > 0 and m["artifact_bytes"] > m["size_bytes"]
    assert out.env["torchao"] == torchao.__version__
    # saved as tensors; rebuilt (calibrated again on the saved inputs) to the same outputs
    model, batch = rebuilt(out, rebuild.recipe_of_record(cfg.as_config(), None), tmp_path)
    assert isinstance(model, Program)
    with torch.inference_mode():
        assert model(batch).shape == (len(batch), 4)
    # the int8 program is the user's to take home (never read back): it loads and runs
    saved = tmp_path / "c-0-model.pt2"
    assert saved.read_bytes() == out.models["model"].shipped.blob
    with torch.inference_mode():
        assert torch.allclose(torch.export.load(saved).module()(batch), model(batch))


@pytest.mark.parametrize("name", ["int8_dynamic", "int8_weight_only"])
def test_an_int8_models_counts_are_its_float_weights(name):
    """Rounding to int8 zeroes the smallest weights; those zeros are not pruning's: the
    counts (and sparsity) are the float model's, as int8_static's and every runtime's are."""
    from modelopt.run.cell import run_cell
    from modelopt.spec.suite import parse

    cfg = parse(f"""
name: counts
seeds: [0]
defaults:
  dataset: {{name: mnist1d, num_samples: 600}}
  model: {{name: mlp, hidden: 64}}
  optimizer: {{name: adam, lr: 0.01}}
  train: {{steps: 30, batch_size: 50, eval_every: 30}}
matrix: {{quantize: [{name}]}}
""").cells[0]
    out = run_cell(cfg, 0)
    rounded = [m for m in out.models["model"].shipped.modules() if isinstance(m, nn.Linear)]
    assert rounded  # its Linear layers hold int8 weights, a few of them zero by rounding
    m = out.metrics
    assert m["params_nonzero"] == m["params"] and m["sparsity"] == 0


def test_static_int8_of_mobilenet_quantizes_its_convolutions():
    torch.manual_seed(0)
    m = build({"name": "mobilenet_v3_small"}, (1, 16, 16), 10).eval()
    x = torch.randn(16, 1, 16, 16)
    q, info = convert("int8_static", m, x)
    assert info["quantized_layers"] > 40 and size_bytes(q) < 0.35 * size_bytes(m)


class Tied(nn.Module):
    """An embedding and an output layer sharing one weight, with a buffer, in training mode."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.norm = nn.BatchNorm1d(6)
        self.out = nn.Linear(6, 10, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids):
        return self.out(self.norm(self.emb(ids)))


def float_copy_is_independent(model, copy):
    assert not copy.training and model.training
    assert copy.out.weight is copy.emb.weight  # tied weights stay tied
    assert all(c.device.type == "cpu" for c in [*copy.parameters(), *copy.buffers()])
    for (name, a), b in zip(model.state_dict().items(), copy.state_dict().values()):
        assert torch.equal(a.cpu(), b), name
        assert a.data_ptr() != b.data_ptr(), f"{name} shares memory with the trained model"
    assert [p.requires_grad for p in model.parameters()] == \
        [p.requires_grad for p in copy.parameters()]
    with torch.no_grad():
        copy.emb.weight.add_(1.0)  # the copy is the copy's own
    assert not torch.equal(model.emb.weight.cpu(), copy.emb.weight)
    assert copy(torch.arange(8)).shape == (8, 10)


def test_the_cpu_float_copy_is_a_separate_model_with_its_ties_kept(monkeypatch):
    torch.manual_seed(0)
    model = Tied()
    model.norm.weight.requires_grad_(False)

    def deepcopied(self, memo):
        raise AssertionError("a tensor was deep-copied where it lives, not copied to the CPU")

    # every tensor comes from the memo, copied to the CPU: none is deep-copied in place (on
    # a GPU, that would be a second copy of the weights there)
    monkeypatch.setattr(torch.Tensor, "__deepcopy__", deepcopied)
    monkeypatch.setattr(nn.Parameter, "__deepcopy__", deepcopied)
    copied = quantize.float_copy(model)
    monkeypatch.undo()
    float_copy_is_independent(model, copied)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_cpu_float_copy_of_a_gpu_model_takes_no_second_copy_on_the_gpu():
    torch.manual_seed(0)
    model = Tied().cuda()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    copy = quantize.float_copy(model)
    assert torch.cuda.max_memory_allocated() == before  # nothing allocated on the GPU
    assert next(model.parameters()).is_cuda
    float_copy_is_independent(model, copy)


def test_torchao_int8_compiled_is_said_compiled_not_eager():
    """The int8 note of `quantize: int8_dynamic, deploy: compile` names the compiled path."""
    from modelopt.techniques import deploy

    q, info = convert("int8_dynamic", build({"name": "mlp", "hidden": 16}, (12,), 4).eval())
    assert info["int8_path"] == "torchao int8 tensors (eager)"
    assert deploy._lowered(q) == {"int8_path": "torchao int8 tensors (compiled)"}
    assert deploy._lowered(build({"name": "mlp", "hidden": 16}, (12,), 4)) == {}
