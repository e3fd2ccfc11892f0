"""Text datasets, all offline: the built-in corpus for language modelling, and a user's own
labelled texts for classification (a csv or JSON Lines table with a text column, or a
folder of .txt files per class).

Inputs are token ids, int64 (N, sequence length), 0 where padded; a dataset's `input_shape`
is (sequence length, vocabulary size), what a text model is built for.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import itertools
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from modelopt.spec.registries import DATASETS, TASKS
from modelopt.spec.registry import PositiveInt
from modelopt.techniques import ngram, tokenize
from modelopt.techniques.data import (
    ClassNames,
    Data,
    Split,
    classes_are,
    no_holes,
    numbered,
    single_samples,
)
from modelopt.techniques.errors import DataUnavailable

CORPUS = Path(__file__).resolve().parents[1] / "corpora" / "python_docs.txt.gz"
CORPUS_SHA256 = "2a95af4ac93f5b719944030ce3769070ddf827d847cba42192afa8da989e5dc4"

Truncation = Literal["end", "start"]  # which end of a long text is cut
Padding = Literal["right", "left"]


def read_corpus(path: str | None) -> str:
    """The text of `path`, or the built-in snapshot of Python's documentation (its sha256
    checked: a changed file would change every figure measured on it)."""
    if path is not None:
        p = Path(path).expanduser()
        try:
            return p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataUnavailable(f"corpus: {p} is not UTF-8 text (byte {exc.start}: "
                                  f"{exc.reason}); convert it first, e.g. iconv -t utf-8"
                                  ) from None
    raw = gzip.decompress(CORPUS.read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != CORPUS_SHA256:
        raise DataUnavailable(f"corpus: {CORPUS} has sha256 {digest}, expected {CORPUS_SHA256}"
                              "; reinstall modelopt (tools/snapshot_corpus.py makes it)")
    return raw.decode("utf-8")


def _check_corpus(params: dict) -> None:
    tokenize.check(params.get("tokenizer", "char"))
    held = params.get("validation_fraction", 0.05) + params.get("test_fraction", 0.05)
    if held >= 1:
        raise ValueError(f"corpus: validation_fraction + test_fraction is {held:g}, which "
                         "leaves no training text; keep their sum below 1")
    path = params.get("path")
    if path is not None and not Path(path).expanduser().is_file():
        raise DataUnavailable(f"corpus: no file at {Path(path).expanduser().resolve()}")
    block, where = params.get("block_size", 128), path and Path(path).expanduser().resolve()
    for split, n in zip(SPLITS, _split_tokens(
            where and str(where), where and where.stat().st_mtime_ns,  # an edit: read again
            params.get("tokenizer", "char"), params.get("validation_fraction", 0.05),
            params.get("test_fraction", 0.05), params.get("max_chars"))):
        _fits(n, block, split)


SPLITS = ("training", "validation", "test")


@functools.lru_cache(maxsize=8)
def _split_tokens(path, mtime, tokenizer, validation_fraction, test_fraction, max_chars
                  ) -> tuple[int, int, int]:
    """How many tokens each split of the corpus holds (the suite's check: a window longer
    than a split failed every cell once it ran)."""
    train, val, test = _splits(read_corpus(path)[:max_chars], tokenizer, validation_fraction,
                               test_fraction)[1:4]
    return len(train), len(val), len(test)


def _splits(text: str, tokenizer: str, validation_fraction: float, test_fraction: float):
    """(tokenizer, training, validation and test token ids, the test text), split by
    position."""
    a = int(len(text) * (1 - validation_fraction - test_fraction))
    b = int(len(text) * (1 - test_fraction))
    if a <= 0 or b <= a:
        raise ValueError("corpus: validation_fraction + test_fraction leave no training text")
    tok = tokenize.make(tokenizer, text[:a])
    return (tok, *(tok.encode(t) for t in (text[:a], text[a:b], text[b:])), text[b:])


def _fits(n: int, block: int, split: str) -> None:
    if n < block + 1:
        raise ValueError(f"corpus: its {split} split holds {n} tokens, fewer than one window "
                         f"of block_size + 1 = {block + 1}; lower block_size (or give the "
                         f"{split} split a larger fraction)")


def windows(ids: np.ndarray, block: int, stride: int, split: str = "a"
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets of every window of block + 1 tokens, `stride` apart."""
    _fits(len(ids), block, split)
    w = np.lib.stride_tricks.sliding_window_view(ids, block + 1)[::stride]
    w = torch.from_numpy(np.array(w))  # a copy: the window view is read-only
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


@DATASETS.register("corpus", task="language_modelling", input="tokens", preflight=_check_corpus,
                   fixed_validation=True)
def corpus(seed: int, /, path: str | None = None, tokenizer: str = "char",
           block_size: PositiveInt = 128, stride: PositiveInt | None = None,
           validation_fraction: Split = 0.05, test_fraction: Split = 0.05,
           max_chars: PositiveInt | None = None) -> Data:
    """Language modelling on a text: the built-in snapshot of the English documentation that
    ships inside Python (465k characters, modelopt/corpora) or a UTF-8 file at `path`.
    Split by position (train, then validation, then test: never shuffled, so no test text
    leaks into training); windows of `block_size` tokens predict the next token at every
    position, `stride` apart in training (default: block_size, no overlap) and never
    overlapping in validation and test. Count-based baselines (n-gram, Kneser-Ney) are
    fitted on the same splits and recorded beside every cell's figures."""
    tok, train, val, test, test_text = _splits(read_corpus(path)[:max_chars], tokenizer,
                                               validation_fraction, test_fraction)
    x_train, y_train = windows(train, block_size, stride or block_size, "training")
    x_val, y_val = windows(val, block_size, block_size, "validation")
    x_test, y_test = windows(test, block_size, block_size, "test")
    # the baselines score the tokens the test windows predict, from the same streams
    covered = test[:len(x_test) * block_size + 1]
    chars_per_token = len(test_text) / max(1, len(test))
    nats = ngram.baselines(train, val[:len(x_val) * block_size + 1], covered, tok.vocab_size)
    info = {"tokenizer": tok.name, "vocab_size": tok.vocab_size, "seq_len": block_size,
            "chars_per_token": chars_per_token, "train_tokens": len(train),
            **ngram.figures(nats, chars_per_token)}
    return Data(x_train, y_train, x_val, y_val, x_test, y_test, tok.vocab_size,
                "language_modelling", "corpus", info=info, vocab_size=tok.vocab_size)


# ---------------------------------------------------------------- classification

def labelled(name: str, texts: list[str], labels, tokenizer: str, max_length: int,
             truncation: str, padding: str, test_fraction: float, split_seed: int,
             classes: list[str] | None = None) -> Data:
    """Texts with class labels, split at random (stratified) as the other tables are; the
    tokenizer's vocabulary is the training split's. Classes are numbered in sorted order,
    or in `classes`' (data.numbered)."""
    from sklearn.model_selection import train_test_split

    classes, y = numbered(name, np.asarray(labels), classes)
    if len(classes) < 2:
        raise ValueError(f"{name}: the labels have {len(classes)} class; classification "
                         "needs two or more")
    idx_train, idx_test = train_test_split(np.arange(len(texts)), test_size=test_fraction,
                                           random_state=split_seed, stratify=y)
    tok = tokenize.make(tokenizer, "".join(texts[i] for i in idx_train))
    ids = [tok.encode(t) for t in texts]
    x = torch.as_tensor(tokenize.pad(ids, max_length, truncation, padding))
    y = torch.as_tensor(y, dtype=torch.int64)
    lengths = np.asarray([len(i) for i in ids])
    info = {"tokenizer": tok.name, "vocab_size": tok.vocab_size, "seq_len": max_length,
            "truncated_share": float((lengths > max_length).mean()),
            "class_names": [str(c) for c in classes]}
    empty = x[:0]
    return Data(x[idx_train], y[idx_train], empty, y[:0], x[idx_test], y[idx_test],
                len(classes), "classification", name, info=info, vocab_size=tok.vocab_size)


def table(name: str, path: str, target: str, text: str, *args, classes=None) -> Data:
    """A table's `text` column classified by its `target` column (`labelled`'s *args)."""
    p = Path(path).expanduser()
    df = _READERS[name](p)
    complete(name, p, df[[target, text]])
    return labelled(name, df[text].astype(str).tolist(), df[target].astype(str).to_numpy(),
                    *args, classes=classes)


def check_table(name: str, params: dict) -> None:
    """A text table exists, has its two columns with no value missing, and is classified (a
    task it names must have class outputs), with a tokenizer that can be made."""
    p = Path(params["path"]).expanduser()
    if not p.is_file():
        raise DataUnavailable(f"{name}: no file at {p.resolve()}")
    if params.get("task", "auto") != "auto" and not TASKS.info(params["task"]).class_outputs:
        raise ValueError(f"{name}: a text column is classified; task '{params['task']}' "
                         "does not apply (leave task: auto)")
    tokenize.check(params.get("tokenizer", "char"))
    columns = list(_READERS[name](p, 1000).columns)
    missing = [params[k] for k in ("target", "text") if params.get(k) not in columns]
    if missing:
        raise ValueError(f"{name}: {p} has no column {', '.join(map(repr, missing))}; "
                         f"columns: {', '.join(map(str, columns))}")
    holes, found, lonely = _holes(name, str(p), params["target"], params["text"],
                                  p.stat().st_mtime_ns)
    if holes:
        raise ValueError(holes)
    classes_are(name, params.get("classes"), found)
    if lonely:
        raise ValueError(single_samples(name, f"'{params['target']}' of {p}", found, lonely))


@functools.lru_cache(maxsize=32)
def _holes(name: str, path: str, target: str, text: str, mtime_ns: int
           ) -> tuple[str | None, frozenset, list[str]]:
    """Why the table's two columns cannot be used (a value missing), its labels as text,
    and those only one row has; read whole once per file version: validation asks for
    every cell."""
    p = Path(path)
    df = _READERS[name](p)[[target, text]]
    try:
        complete(name, p, df)
    except ValueError as exc:
        return str(exc), frozenset(), []
    counts = df[target].astype(str).value_counts()
    return None, frozenset(counts.index), sorted(counts.index[counts == 1])


def complete(name: str, p: Path, df) -> None:
    """No text and no label missing (an empty csv field, a JSON line without the key or with
    null): refused, not read as the text "nan"."""
    # a JSON Lines file holds a row per line; a csv field may span lines (quoted newlines)
    no_holes(df, p, name, where="lines" if name == "jsonl" else "data rows", first=1)


def _read_jsonl(path: Path, nrows: int | None = None):
    import pandas as pd

    return pd.read_json(path, lines=True, nrows=nrows, dtype=False)


def _read_csv(path: Path, nrows: int | None = None):
    import pandas as pd

    return pd.read_csv(path, nrows=nrows)


_READERS = {"csv": _read_csv, "jsonl": _read_jsonl}


@DATASETS.register("jsonl", task="classification", input="tokens",
                   preflight=lambda p: check_table("jsonl", p))
def jsonl(seed: int, /, path: str, target: str, text: str, tokenizer: str = "char",
          max_length: PositiveInt = 128, truncation: Truncation = "end",
          padding: Padding = "right", test_fraction: Split = 0.2, split_seed: int = 0,
          classes: ClassNames | None = None) -> Data:
    """Text classification from a local JSON Lines file: one object per line with a `text`
    field and a `target` label. Classes are numbered in sorted order, or in `classes`'."""
    return table("jsonl", path, target, text, tokenizer, max_length, truncation, padding,
                 test_fraction, split_seed, classes=classes)


def _check_folder(params: dict) -> None:
    root = Path(params["root"]).expanduser()
    classes = [d for d in sorted(root.iterdir()) if d.is_dir()] if root.is_dir() else []
    # up to two texts a class: a folder of a million is not listed whole for every cell
    counts = {d.name: sum(1 for _ in itertools.islice(d.glob("*.txt"), 2)) for d in classes}
    found = frozenset(name for name, n in counts.items() if n)
    if len(found) < 2:
        raise DataUnavailable(f"text_folder: {root.resolve()} needs a folder per class, each "
                              "holding .txt files (two classes at least)")
    tokenize.check(params.get("tokenizer", "char"))
    classes_are("text_folder", params.get("classes"), found)
    lonely = sorted(name for name, n in counts.items() if n == 1)
    if lonely:
        raise ValueError(single_samples("text_folder", f"the class folders of {root.resolve()}",
                                        found, lonely, "add .txt files there, or remove them"))


@DATASETS.register("text_folder", task="classification", input="tokens", preflight=_check_folder)
def text_folder(seed: int, /, root: str, tokenizer: str = "char", max_length: PositiveInt = 128,
                truncation: Truncation = "end", padding: Padding = "right",
                test_fraction: Split = 0.2, split_seed: int = 0,
                classes: ClassNames | None = None) -> Data:
    """Text classification from ROOT/<class>/*.txt: one UTF-8 text per file, the folder
    names the class (as torchvision's ImageFolder does for images). Classes are numbered
    in sorted order, or in `classes`'."""
    _check_folder({"root": root, "tokenizer": tokenizer, "classes": classes})
    files = sorted(Path(root).expanduser().glob("*/*.txt"))
    texts = [f.read_text(encoding="utf-8") for f in files]
    return labelled("text_folder", texts, [f.parent.name for f in files], tokenizer,
                    max_length, truncation, padding, test_fraction, split_seed, classes)
