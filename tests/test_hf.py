"""Hugging Face transformers models as modelopt models (techniques/hf.py): built from a
config or a local folder, never downloaded; trained, quantized and scored like ours."""

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from modelopt.run.cell import run_cell  # noqa: E402
from modelopt.spec.suite import parse  # noqa: E402
from modelopt.techniques import hf  # noqa: E402
from modelopt.techniques.errors import TechniqueError  # noqa: E402

LLAMA = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2}


def test_a_causal_model_from_a_config_scores_modelopt_ids():
    torch.manual_seed(0)
    m = hf.hf((16, 30), 30, config=LLAMA).eval()
    assert m.causal and m.model.config.vocab_size == 29  # the tokenizer's ids, without padding
    x = torch.randint(1, 30, (2, 16))
    out = m(x)
    assert out.shape == (2, 16, 30) and (out.argmax(-1) != 0).all()  # padding is never chosen
    # its scores for id k are the model's for the tokenizer's id k - 1
    raw = m.model(input_ids=x - 1).logits
    assert torch.allclose(out[..., 1:], raw, atol=1e-5)


def test_building_a_model_logs_no_deprecation_of_torchs_own():
    """transformers imports torchao as it builds a model, and torchao logs two lines of a
    pytree deprecation in every cell's output (not the user's to act on)."""
    import subprocess
    import sys

    code = f"from modelopt.techniques import hf; hf.hf((16, 30), 30, config={LLAMA!r})"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0 and "register_constant" not in run.stderr, run.stderr


def test_a_saved_folder_loads_its_weights_locally(tmp_path):
    torch.manual_seed(0)
    m = hf.hf((16, 30), 30, config=LLAMA).eval()
    m.model.save_pretrained(tmp_path)
    again = hf.hf((16, 30), 30, path=str(tmp_path)).eval()
    x = torch.randint(1, 30, (1, 16))
    assert torch.allclose(m(x), again(x))
    with pytest.raises(TechniqueError, match="vocabulary has 29 ids"):
        hf.hf((16, 40), 40, path=str(tmp_path))
    with pytest.raises(TechniqueError, match="no config.json"):
        hf.hf((16, 30), 30, path=str(tmp_path / "nothing"))


def test_a_sequence_classifier_from_a_config():
    torch.manual_seed(0)
    bert = {"model_type": "bert", "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 2}
    m = hf.hf((24, 50), 3, config=bert).eval()
    x = torch.randint(1, 50, (4, 24))
    x[:, 12:] = 0  # padded
    assert m(x).shape == (4, 3) and not m.causal


def test_a_hf_language_model_trains_and_quantizes_in_a_cell():
    cell = parse("""
name: hf
defaults:
  dataset: {name: corpus, block_size: 32, max_chars: 20000}
  model: {name: hf, config: {model_type: llama, hidden_size: 32, intermediate_size: 64,
                             num_hidden_layers: 1, num_attention_heads: 2,
                             num_key_value_heads: 2}}
  optimizer: {name: adamw, lr: 0.01}
  train: {steps: 30, batch_size: 16, eval_every: 30}
  quantize: int8_dynamic
""").cells[0]
    m = run_cell(cell, 0).metrics
    assert m["quantized_layers"] >= 7  # q, k, v, o, gate, up, down (and the head)
    assert m["perplexity"] < m["vocab_size"]


def test_structured_pruning_of_a_hf_model_is_refused_when_the_suite_loads():
    from modelopt.spec.registry import RegistryError
    from modelopt.spec.suite import SuiteError

    with pytest.raises((SuiteError, RegistryError), match="removes channels"):
        parse("name: t\ndefaults: {dataset: corpus, model: {name: hf, config: {model_type: "
              "llama}}, prune: l1_structured}\n")


def test_a_hf_model_without_its_source_is_refused_when_the_suite_loads(tmp_path):
    from modelopt.spec.registry import RegistryError
    from modelopt.spec.suite import SuiteError

    base = "name: t\ndefaults: {{dataset: corpus, model: {model}}}\n"
    for model, said in (("hf", "got neither"), (f"{{name: hf, path: '{tmp_path}'}}",
                                                 "no config.json"),
                        ("{name: hf, config: {hidden_size: 8}}", "model_type")):
        with pytest.raises((SuiteError, RegistryError), match=said):
            parse(base.format(model=model))


def test_a_head_made_for_another_task_is_refused_when_the_suite_loads(tmp_path):
    from modelopt.spec.registry import RegistryError
    from modelopt.spec.suite import SuiteError

    table = tmp_path / "t.csv"
    table.write_text("text,label\n" + "the cat,a\nthe dog,b\n" * 5)
    model = "{{name: hf, head: {head}, config: {{model_type: llama}}}}"
    corpus = "name: t\ndefaults: {{dataset: corpus, model: {model}}}\n"
    texts = f"name: t\ndefaults: {{{{dataset: {{{{name: csv, path: '{table}', target: label, " \
            "text: text}}, model: {model}}}\n"
    for suite, head, said in ((corpus, "sequence_classification", "made for classification"),
                              (texts, "causal_lm", "made for language_modelling")):
        with pytest.raises((SuiteError, RegistryError), match=f"head: {head} is {said}"):
            parse(suite.format(model=model.format(head=head)))
    for suite, head in ((corpus, "causal_lm"), (texts, "sequence_classification"),
                        (corpus, "auto"), (texts, "auto")):
        parse(suite.format(model=model.format(head=head)))  # loads


def test_an_unknown_model_type_is_named_with_the_nearest():
    with pytest.raises(TechniqueError, match="no model_type 'lama'; did you mean llama"):
        hf.hf((16, 30), 30, config={**LLAMA, "model_type": "lama"})


def test_a_hf_models_own_state_dict_loads_as_trained_weights(tmp_path):
    from modelopt.techniques import weights

    torch.manual_seed(0)
    trained = hf.hf((16, 30), 30, config=LLAMA).eval()
    path = tmp_path / "mine.pth"
    torch.save(trained.model.state_dict(), path)  # the transformers model's own keys
    fresh = hf.hf((16, 30), 30, config=LLAMA).eval()
    weights.load_into(fresh, torch.load(path), str(path))
    x = torch.randint(1, 30, (1, 16))
    assert torch.allclose(fresh(x), trained(x))


def test_gpt2s_blocks_are_weighted_layers_and_its_tied_head_is_its_embedding():
    """GPT-2 builds its blocks from transformers' Conv1D: unstructured pruning zeroed only the
    lm_head, which is the embedding table (tied), and int8 counted one layer of five."""
    from modelopt.run import measure
    from modelopt.techniques import prune, quantize

    gpt2 = {"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 32}
    torch.manual_seed(0)
    m = hf.hf((16, 30), 30, config=gpt2).eval()
    blocks = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
    assert [n for n, _, _ in prune.weights(m)] == [f"model.transformer.h.0.{b}" for b in blocks]
    p = prune.PRUNERS.build("l1_unstructured", amount=0.5)
    before = prune._zeros(m)
    p.mask(m, 0.5, None)
    prune.make_permanent(m)
    prune.check_unstructured(m, "l1_unstructured", p, before)  # each block at 50 %
    assert not (m.model.transformer.wte.weight == 0).any()  # the table (and head) whole
    assert quantize._weighted(m) == 5  # four blocks and the head
    x = torch.randint(1, 30, (1, 16))
    assert measure.flops_nonzero(m, x) < 0.8 * measure.flops(m, x)


def test_a_classifier_numbering_its_classes_otherwise_than_the_data_is_refused():
    """A saved pos/neg classifier (id2label 0: pos, 1: neg) scored 0 % on a table whose
    labels modelopt numbered in sorted order (neg 0, pos 1), and nothing said why. The
    table's `classes:` numbers them as the model does."""
    from modelopt.techniques import text
    from modelopt.techniques.models import check_classes

    bert = {"model_type": "bert", "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 2, "id2label": {0: "pos", 1: "neg"}}
    m = hf.hf((16, 30), 2, config=bert)
    assert m.class_names == ["pos", "neg"]
    texts, labels = ["good", "fine", "bad", "awful"] * 3, ["pos", "pos", "neg", "neg"] * 3
    sorted_ = text.labelled("csv", texts, labels, "char", 16, "end", "right", 0.5, 0)
    with pytest.raises(TechniqueError, match=r"numbers its classes pos, neg .* the dataset "
                                             r"numbers them neg, pos: .*`classes: \[\"pos\", \"neg\"\]`"):
        check_classes(m, sorted_, "hf")
    own = text.labelled("csv", texts, labels, "char", 16, "end", "right", 0.5, 0,
                        classes=["pos", "neg"])
    check_classes(m, own, "hf")
    assert own.info["class_names"] == ["pos", "neg"]
    from modelopt.techniques.data import numbered

    assert numbered("csv", labels, ["pos", "neg"])[1].tolist() == [0, 0, 1, 1] * 3
    assert numbered("csv", np.array([0, 1, 1]), [1, 0])[1].tolist() == [1, 0, 0]  # numbers
    with pytest.raises(ValueError, match=r"csv: classes \['pos', 'bad'\] are not the labels"):
        text.labelled("csv", texts, labels, "char", 16, "end", "right", 0.5, 0,
                      classes=["pos", "bad"])
