"""Text data, tokenizers, n-gram baselines and the transformer models (techniques/text.py,
tokenize.py, ngram.py, transformers.py); the language-modelling task end to end is in
test_text_cells.py."""

import gzip
import json
import math

import numpy as np
import pytest
import torch

from modelopt.spec.registry import RegistryError
from modelopt.spec.suite import SuiteError, parse
from modelopt.techniques import distill, ngram, optim, text, tokenize
from modelopt.techniques import transformers as T
from modelopt.techniques.data import DATASETS, split_validation
from modelopt.techniques.errors import DataUnavailable

# ---------------------------------------------------------------- tokenizers

def test_char_tokenizer_round_trips_and_marks_characters_training_lacked():
    tok = tokenize.make("char", "hello world")
    ids = tok.encode("hold the world")
    assert ids.dtype == np.int64 and ids.min() >= 1 and ids.max() < tok.vocab_size
    assert tok.decode(ids) == "hold ?he world"  # 't' was not in the training text
    assert tok.vocab_size == len(set("hello world")) + 2  # + padding + unknown


def test_byte_tokenizer_needs_no_vocabulary_and_round_trips_any_text():
    tok = tokenize.make("byte", "")
    s = "naïve — ✓"
    assert tok.decode(tok.encode(s)) == s and tok.vocab_size == 257
    assert tok.encode(s).min() >= 1  # 0 pads


def test_a_hugging_face_tokenizer_json_is_read_locally(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE(unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.train_from_iterator(["the cat sat on the mat"] * 20,
                           trainers.BpeTrainer(vocab_size=40, special_tokens=["[UNK]"]))
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    tok = tokenize.make(str(path), "ignored")
    ids = tok.encode("the cat sat")
    assert tok.vocab_size == hf.get_vocab_size() + 1 and ids.min() >= 1
    assert list(ids - 1) == hf.encode("the cat sat").ids  # shifted so that 0 pads
    assert tok.decode(ids).replace(" ", "") == "thecatsat"
    with pytest.raises(FileNotFoundError):
        tokenize.check(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="char, byte"):
        tokenize.check("gpt2")


def test_padding_and_truncation_sides():
    seqs = [np.array([1, 2, 3, 4, 5]), np.array([7])]
    assert tokenize.pad(seqs, 3, "end", "right").tolist() == [[1, 2, 3], [7, 0, 0]]
    assert tokenize.pad(seqs, 3, "start", "left").tolist() == [[3, 4, 5], [0, 0, 7]]


# ---------------------------------------------------------------- the corpus

def test_the_built_in_corpus_is_split_by_position_into_next_token_windows():
    raw = text.read_corpus(None)
    d = DATASETS.build("corpus", 0, block_size=32, max_chars=20_000)
    tok = tokenize.make("char", raw[:int(20_000 * 0.9)])
    assert d.task == "language_modelling" and d.input_shape == (32, tok.vocab_size)
    assert d.x_train.dtype == torch.int64 and d.num_classes == tok.vocab_size
    # targets are the inputs shifted by one; windows follow the text in order
    assert torch.equal(d.x_train[:, 1:], d.y_train[:, :-1])
    assert tok.decode(d.x_train[0]) == raw[:32]
    assert tok.decode(d.x_val[0]) == raw[18_000:18_032]
    assert tok.decode(d.x_test[0]) == raw[19_000:19_032]
    # the validation split is the corpus's own: never re-drawn from training windows
    assert split_validation(d, 0.1, 0) is d
    with pytest.raises(ValueError, match="cross-validation"):
        split_validation(d, 0.1, 0, folds=3)
    # and a suite asking for it is refused when it loads, before anything runs
    with pytest.raises(SuiteError, match="cv does not apply to dataset 'corpus'"):
        parse("""
name: cvc
defaults:
  dataset: {name: corpus, max_chars: 20000}
  model: {name: gpt, dim: 32, depth: 1, heads: 2}
cv: {folds: 3}
""")


def test_a_changed_corpus_file_is_refused_by_its_sha256(tmp_path, monkeypatch):
    fake = tmp_path / "python_docs.txt.gz"
    fake.write_bytes(gzip.compress(b"not the snapshot"))
    monkeypatch.setattr(text, "CORPUS", fake)
    with pytest.raises(DataUnavailable, match="sha256"):
        text.read_corpus(None)


def test_a_user_text_file_is_a_corpus(tmp_path):
    p = tmp_path / "mine.txt"
    p.write_text("abc " * 500, encoding="utf-8")
    d = DATASETS.build("corpus", 0, path=str(p), block_size=16)
    assert d.info["vocab_size"] == 6 and len(d.x_train) == (1800 - 1) // 16
    # a text this regular: Kneser-Ney predicts it almost perfectly, the unigram cannot
    assert d.info["baseline_kneser_ney_perplexity"] < 1.2
    assert d.info["baseline_unigram_perplexity"] > 3.5


# ---------------------------------------------------------------- n-gram baselines

def test_kneser_ney_is_a_distribution_over_the_vocabulary():
    rng = np.random.default_rng(0)
    v = 7
    train = rng.integers(1, v, 2000)
    kn = ngram.KneserNey(train, v)
    for u, w in [(1, 2), (3, 3), (6, 0), (0, 0)]:  # seen and unseen contexts
        for d in (0.3, 0.75, 0.95):
            # the next token after (u, w), every one of the vocabulary: sums to one
            probs = [kn.prob(np.array([u, w, x]), d)[0] for x in range(v)]
            assert sum(probs) == pytest.approx(1.0, abs=1e-9), (u, w, d)


def test_baselines_rank_as_expected_on_text_with_structure():
    d = DATASETS.build("corpus", 0, block_size=64, max_chars=60_000)
    ppl = [d.info[f"baseline_{n}_perplexity"] for n in ("unigram", "bigram", "trigram",
                                                        "kneser_ney")]
    assert ppl[0] > ppl[1] > ppl[2] >= ppl[3] > 1
    assert d.info["baseline_unigram_perplexity"] < d.info["vocab_size"]
    assert d.info["baseline_kneser_ney_discount"] in ngram.DISCOUNTS


def test_add_k_on_uniform_text_is_the_vocabulary_size():
    v = 4
    train = np.tile(np.arange(v), 500)  # every token equally often
    assert math.exp(ngram.add_k(train, v, 1, 1.0, train[:400])) == pytest.approx(v, rel=1e-3)


# ---------------------------------------------------------------- text classification

def _write_table(tmp_path):
    rows = [("the cat purrs", "cat"), ("a cat meows softly", "cat"), ("cats nap", "cat"),
            ("the dog barks", "dog"), ("a dog fetches", "dog"), ("dogs dig", "dog")] * 5
    csv = tmp_path / "t.csv"
    csv.write_text("sentence,label,extra\n" + "".join(f"{t},{y},x\n" for t, y in rows))
    jl = tmp_path / "t.jsonl"
    jl.write_text("".join(json.dumps({"sentence": t, "label": y}) + "\n" for t, y in rows))
    return csv, jl, rows


def test_csv_with_a_text_column_is_a_text_classification_table(tmp_path):
    csv, jl, rows = _write_table(tmp_path)
    d = DATASETS.build("csv", 0, path=str(csv), target="label", text="sentence", max_length=12)
    assert d.input_shape[0] == 12 and d.vocab_size > 10 and d.num_classes == 2
    assert d.info["class_names"] == ["cat", "dog"]
    assert d.info["truncated_share"] > 0  # "a cat meows softly" is longer than 12
    assert (d.x_test == 0).any() and d.x_test.dtype == torch.int64  # padded with 0
    j = DATASETS.build("jsonl", 0, path=str(jl), target="label", text="sentence", max_length=12)
    assert torch.equal(j.x_train, d.x_train) and torch.equal(j.y_test, d.y_test)


def test_a_text_table_without_text_names_the_key_to_give(tmp_path):
    csv, _, _ = _write_table(tmp_path)
    with pytest.raises(SuiteError, match=r"non-numeric feature columns \['sentence', 'extra'\].*name the "
                                         r"text column: `text: sentence`"):
        parse(f"name: t\ndefaults: {{dataset: {{name: csv, path: '{csv}', target: label}}, "
              "model: mlp}\n")


def test_a_class_of_one_text_is_refused_when_the_suite_loads(tmp_path):
    """It failed every cell with scikit-learn's stratify error, naming no column."""
    rows = [("the cat purrs", "cat"), ("the dog barks", "dog")] * 4 + [("a bird", "bird")]
    (tmp_path / "t.csv").write_text("sentence,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    with pytest.raises(SuiteError, match=r"csv: 3 classes in 'label' of .*t.csv, and 1 "
                       r"of them have a single sample \(bird\).*merge or drop the rare"):
        parse(f"name: t\ndefaults: {{dataset: {{name: csv, path: '{tmp_path}/t.csv', "
              "target: label, text: sentence}, model: transformer}\n")


def test_a_missing_text_or_label_is_refused_naming_its_row(tmp_path):
    rows = [("the cat purrs", "cat"), ("the dog barks", "dog")] * 4
    csv = tmp_path / "t.csv"
    csv.write_text("sentence,label\n" + "".join(f"{t},{y}\n" for t, y in rows)
                   + ",cat\n")  # an empty text on the ninth data row
    jl = tmp_path / "t.jsonl"
    lines = [json.dumps({"sentence": t, "label": y}) for t, y in rows]
    lines[2] = json.dumps({"label": "cat"})  # no text at all
    lines[5] = json.dumps({"sentence": None, "label": "dog"})
    jl.write_text("\n".join(lines) + "\n")
    base = ("name: t\ndefaults: {{dataset: {{name: {name}, path: '{p}', target: label, "
            "text: sentence}}, model: transformer}}\n")
    for name, p, said in (("csv", csv, "'sentence': 1; first on data rows 9"),
                          ("jsonl", jl, "'sentence': 2; first on lines 3, 6")):
        with pytest.raises(SuiteError, match=f"dataset.*has empty values \\({said}\\)"):
            parse(base.format(name=name, p=p))
        with pytest.raises(ValueError, match=said):  # the cell that reads the file says so too
            DATASETS.build(name, 0, path=str(p), target="label", text="sentence")


def test_a_corpus_that_leaves_no_training_text_or_is_not_utf8_says_so(tmp_path):
    with pytest.raises(SuiteError, match="test_fraction is 1.2, which leaves no training"):
        parse("name: t\ndefaults: {dataset: {name: corpus, validation_fraction: 0.6, "
              "test_fraction: 0.6}, model: gpt}\n")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 ".encode("latin-1") * 100)
    with pytest.raises(DataUnavailable, match="latin1.txt is not UTF-8 text"):
        DATASETS.build("corpus", 0, path=str(latin))


def test_a_window_longer_than_a_split_is_refused_when_the_suite_loads(tmp_path):
    """It failed every cell once the run had started, naming no split."""
    small = tmp_path / "small.txt"
    small.write_text("hello world. " * 1500, encoding="utf-8")  # 19,500 characters
    text = ("name: t\ndefaults: {dataset: {name: corpus, path: " + str(small)
            + ", block_size: BLOCK}, model: {name: gpt, dim: 16, depth: 1, heads: 2}}\n")
    with pytest.raises(SuiteError, match=r"defaults.dataset: corpus: its validation split "
                                         r"holds 975 tokens, fewer than one window of "
                                         r"block_size \+ 1 = 1025"):
        parse(text.replace("BLOCK", "1024"))
    assert parse(text.replace("BLOCK", "512")).cells


def test_a_folder_of_txt_files_per_class(tmp_path):
    for cls, words in (("neg", "bad awful"), ("pos", "good great")):
        (tmp_path / cls).mkdir()
        for i in range(6):
            (tmp_path / cls / f"{i}.txt").write_text(f"{words} {i}", encoding="utf-8")
    d = DATASETS.build("text_folder", 0, root=str(tmp_path), test_fraction=0.5)
    assert d.num_classes == 2 and len(d.y_train) == len(d.y_test) == 6
    assert d.info["class_names"] == ["neg", "pos"]
    (tmp_path / "odd").mkdir()  # one text: no stratified split can share it
    (tmp_path / "odd" / "0.txt").write_text("meh", encoding="utf-8")
    text = (f"name: t\ndefaults: {{dataset: {{name: text_folder, root: '{tmp_path}'}}, "
            "model: transformer}\n")
    with pytest.raises(SuiteError, match=r"text_folder: 3 classes in the class folders of .*, "
                                         r"and 1 of them have a single sample \(odd\)"):
        parse(text)


def test_suites_check_text_data_and_models_before_running(tmp_path):
    csv, _, _ = _write_table(tmp_path)
    base = ("name: t\ndefaults: {{dataset: {{name: csv, path: '{p}', target: label, "
            "text: {col}}}, model: {model}}}\n")
    parse(base.format(p=csv, col="sentence", model="transformer"))  # loads
    with pytest.raises((SuiteError, RegistryError), match="tokens"):  # an mlp cannot read ids
        parse(base.format(p=csv, col="sentence", model="mlp"))
    with pytest.raises((SuiteError, ValueError), match="no column 'body'"):
        parse(base.format(p=csv, col="body", model="transformer"))
    with pytest.raises((SuiteError, ValueError), match="is classified"):
        parse(base.format(p=csv, col="sentence, task: regression", model="transformer"))
    with pytest.raises((SuiteError, RegistryError), match="gpt|transformer"):
        parse("name: t\ndefaults: {dataset: corpus, model: cnn}\n")
    with pytest.raises((SuiteError, RegistryError), match="made for language_modelling"):
        parse(base.format(p=csv, col="sentence", model="gpt"))  # a decoder scores positions
    with pytest.raises((SuiteError, RegistryError), match="made for classification"):
        parse("name: t\ndefaults: {dataset: corpus, model: transformer}\n")
    with pytest.raises((SuiteError, RegistryError), match="say dim: 15"):
        parse("name: t\ndefaults: {dataset: corpus, model: {name: gpt, dim: 16, heads: 3}}\n")
    with pytest.raises((SuiteError, RegistryError), match="token ids"):
        parse("name: t\ndefaults: {dataset: corpus, model: gpt, preprocess: [standardize]}\n")
    with pytest.raises((SuiteError, RegistryError), match="augment"):
        parse("name: t\ndefaults: {dataset: corpus, model: gpt, augment: [noise]}\n")


# ---------------------------------------------------------------- models

def test_the_decoder_is_causal_and_its_cache_decodes_what_a_full_pass_predicts():
    torch.manual_seed(0)
    m = T.gpt((32, 20), 20, dim=32, depth=2, heads=4).eval()
    x = torch.randint(1, 20, (2, 32))
    y = x.clone()
    y[:, 20:] = torch.randint(1, 20, (2, 12))
    with torch.no_grad():
        assert torch.allclose(m(x)[:, :20], m(y)[:, :20], atol=1e-5)  # no look-ahead
        assert not torch.allclose(m(x)[:, 20:], m(y)[:, 20:])
    new, cache = T.generate(m, x[:1, :16], 16)
    full = m(torch.cat([x[:1, :16], new[:, :-1]], 1))[:, 15:].argmax(-1)
    assert torch.equal(new, full) and cache[0][0].shape[2] == 31
    with pytest.raises(Exception, match="positions"):
        T.generate(m, x[:1, :20], 16)


def test_the_encoder_ignores_padding():
    torch.manual_seed(0)
    m = T.transformer((16, 30), 3, dim=32, depth=1, heads=2).eval()
    short = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        a = m(short)
        b = m(torch.cat([short[:, :3], torch.zeros(1, 13, dtype=torch.long)], 1))
        c = m(torch.tensor([[5, 6, 7, 9] + [0] * 12]))
        assert torch.isfinite(m(torch.zeros(1, 16, dtype=torch.long))).all()
    assert torch.allclose(a, b) and not torch.allclose(a, c)


def test_width_keeps_whole_heads():
    m = T.gpt((16, 10), 10, dim=64, heads=4, width=0.3)
    attn = m.blocks[0].attn
    assert attn.q.out_features % 4 == 0 and attn.n_heads == 4


def test_structured_pruning_removes_whole_heads_and_mlp_channels():
    from modelopt.techniques import prune

    torch.manual_seed(0)
    d = split_validation(DATASETS.build("corpus", 0, block_size=32, max_chars=20_000), 0.1, 0)
    m = T.gpt(d.input_shape, d.num_outputs, dim=32, depth=2, heads=4)
    out = prune.apply({"name": "l1_structured", "amount": 0.5}, m, d, lambda *a: None)
    slim = out.slimmed
    for block in slim.blocks:
        assert block.attn.n_heads == 2 and block.attn.head_dim == 8  # heads gone, not narrowed
        assert block.fc1.out_features == 64  # half of 128 MLP channels
    assert slim.tokens.embedding_dim == 32  # the residual width is kept
    assert out.slimmed_diff < 1e-4  # the slimmed model computes what the masked one does
    new, _ = T.generate(slim.eval(), d.x_test[:1, :8], 8)  # and still decodes
    assert new.shape == (1, 8)


def test_only_declared_attention_heads_are_pruned_as_heads():
    from torch import nn

    from modelopt.techniques import structured

    class Classifier(nn.Module):  # torchvision's ViT names its classifier `heads`
        def __init__(self):
            super().__init__()
            self.heads = nn.Sequential(nn.Linear(4, 2))

    assert structured.attention_heads(Classifier()) == {}
    m = T.gpt((16, 10), 10, dim=32, depth=2, heads=4)
    found = structured.attention_heads(m)
    assert len(found) == 6 and set(found.values()) == {4}  # q, k, v of both blocks


def test_weight_decay_skips_embeddings_norms_and_biases():
    m = T.gpt((16, 10), 10, dim=32, depth=1, heads=2)
    groups = optim.param_groups(m, 0.1, decay_all=False)
    decayed = {id(p) for p in groups[0]["params"]}
    assert id(m.tokens.weight) not in decayed and id(m.positions.weight) not in decayed
    assert id(m.blocks[0].attn.q.weight) in decayed and id(m.head.weight) in decayed
    assert id(m.blocks[0].attn.q.bias) not in decayed and id(m.norm.weight) not in decayed


def test_distillation_compares_distributions_token_by_token():
    s, t = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    per_token = distill.kd_loss(s, t, 2.0, 1.0)
    assert per_token == pytest.approx(float(distill.kd_loss(s.reshape(10, 7), t.reshape(10, 7),
                                                            2.0, 1.0)))


def test_a_compiled_decoder_is_timed_decoding_with_its_model_compiled():
    from modelopt.techniques.deploy import Compiled

    torch.manual_seed(0)
    m = T.gpt((16, 10), 10, dim=16, depth=1, heads=2).eval()
    x = torch.randint(1, 10, (1, 16))
    calls = T.generation_calls(Compiled(m, "default", None), x)
    (first, prompt), (gen, _) = calls["first_token"], calls["generate"]
    assert first.step is not None and gen.model is m and gen.new_tokens == 8
    assert torch.equal(gen(prompt)[0], T.generate(m, prompt, 8)[0])  # the same tokens
    assert T.generation_calls(m, x)["generate"][0].step is None  # eager: the model itself


def test_a_decoder_shipped_in_bf16_is_timed_decoding_in_bf16():
    from modelopt.techniques.quantize import QUANTIZERS

    torch.manual_seed(0)
    m = T.gpt((16, 10), 10, dim=16, depth=1, heads=2).eval()
    half, _ = QUANTIZERS.build("bf16").convert(m, torch.zeros(2, 16, dtype=torch.long))
    x = torch.randint(1, 10, (1, 16))
    (gen, prompt) = T.generation_calls(half, x)["generate"]
    assert gen.model is half.model and next(gen.model.parameters()).dtype == torch.bfloat16
    tokens, _ = gen(prompt)
    assert tokens.shape == (1, 8)
    with torch.inference_mode():  # its first token is the one the shipped model predicts
        assert torch.equal(tokens[:, 0], half(prompt)[:, -1].argmax(-1))
    from modelopt.techniques.deploy import Compiled

    (gen, _) = T.generation_calls(Compiled(half, "default", None), x)["generate"]
    assert gen.model is half.model and gen.step is not None  # compiled, decoding in bf16


def test_classes_that_are_not_the_labels_are_refused_when_the_suite_loads(tmp_path):
    """`classes:` (a trained model's own numbering) naming a label the file lacks was found
    by each cell as it read its data, after the suite had started."""
    from modelopt.spec.suite import SuiteError, parse

    (tmp_path / "t.csv").write_text("x,label\n1.0,pos\n2.0,neg\n3.0,pos\n4.0,neg\n")
    table = f"{{name: csv, path: '{tmp_path}/t.csv', target: label, classes: [pos, bad]}}"
    with pytest.raises(SuiteError, match=r"dataset.*csv: classes \['pos', 'bad'\] are not the "
                                         r"labels found, each once: neg, pos"):
        parse(f"name: c\ndefaults: {{dataset: {table}, model: mlp}}\n")
    for c in ("a", "b"):
        (tmp_path / "f" / c).mkdir(parents=True)
        for i in (1, 2):
            (tmp_path / "f" / c / f"{i}.txt").write_text(f"text {c} {i}")
    folder = f"{{name: text_folder, root: '{tmp_path}/f', classes: [b, a, a]}}"
    with pytest.raises(SuiteError, match=r"text_folder: classes \['b', 'a', 'a'\] are not"):
        parse(f"name: c\ndefaults: {{dataset: {folder}, model: transformer}}\n")
    parse(f"name: c\ndefaults: {{dataset: {folder.replace(', a, a]', ', a]')}, "
          "model: transformer}\n")
