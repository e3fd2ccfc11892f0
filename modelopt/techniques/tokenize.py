"""Tokenizers for text datasets: characters and bytes (built in, no files) and a Hugging Face
`tokenizers` tokenizer read from a local tokenizer.json (optional extra: `text`).

Every tokenizer here keeps id 0 for padding, so that a model masks padded positions without
being told which id pads (techniques/transformers.py); a Hugging Face tokenizer's ids are
shifted up by one for that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PAD = 0


class Tokenizer:
    """Text to ids in 0..vocab_size-1 and back; id 0 pads."""

    name: str = ""
    vocab_size: int = 0

    def encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError


class Chars(Tokenizer):
    """One id per character seen in the training text (sorted), plus padding and one id for
    every character the training text lacks."""

    name = "char"
    UNK = 1

    def __init__(self, training_text: str):
        self.chars = sorted(set(training_text))
        self.vocab_size = len(self.chars) + 2
        # code point -> id, as a lookup table: encoding the corpus is one numpy indexing
        self.table = np.full(max(map(ord, self.chars), default=0) + 1, self.UNK, dtype=np.int64)
        self.table[[ord(c) for c in self.chars]] = np.arange(2, self.vocab_size)

    def encode(self, text: str) -> np.ndarray:
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ids = np.full(len(points), self.UNK, dtype=np.int64)
        known = points < len(self.table)
        ids[known] = self.table[points[known]]
        return ids

    def decode(self, ids) -> str:
        return "".join(self.chars[i - 2] if i >= 2 else ("" if i == PAD else "?")
                       for i in map(int, ids))


class Bytes(Tokenizer):
    """UTF-8 bytes, id = byte + 1: no vocabulary to build, nothing unknown."""

    name = "byte"
    vocab_size = 257

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64) + 1

    def decode(self, ids) -> str:
        return bytes(int(i) - 1 for i in ids if int(i) > 0).decode("utf-8", errors="replace")


class HuggingFace(Tokenizer):
    """A `tokenizers` tokenizer from a local tokenizer.json (never downloaded); ids + 1."""

    name = "tokenizer.json"

    def __init__(self, path: str):
        try:
            from tokenizers import Tokenizer as HFTokenizer
        except ImportError as e:
            raise ImportError("a tokenizer.json needs Hugging Face tokenizers: "
                              "pip install 'modelopt[text]'") from e
        self.tok = HFTokenizer.from_file(str(Path(path).expanduser()))
        self.tok.no_padding()
        self.tok.no_truncation()  # modelopt pads and truncates, as every tokenizer here
        self.vocab_size = self.tok.get_vocab_size() + 1
        self.name = Path(path).name

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tok.encode(text, add_special_tokens=False).ids, dtype=np.int64) + 1

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) - 1 for i in ids if int(i) > 0])


def check(spec: str) -> None:
    """A suite's `tokenizer:` names one that can be made here: `char`, `byte`, or the path of
    a tokenizer.json that exists (checked when the suite loads)."""
    if spec in ("char", "byte"):
        return
    path = Path(spec).expanduser()
    if path.suffix != ".json":
        raise ValueError(f"tokenizer '{spec}': say char, byte, or the path of a Hugging Face "
                         "tokenizer.json")
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer: no file at {path.resolve()}")


def make(spec: str, training_text: str) -> Tokenizer:
    """The tokenizer a dataset's `tokenizer:` names; a character vocabulary is the training
    text's (validation and test characters it lacks are unknown, as they would be)."""
    check(spec)
    if spec == "char":
        return Chars(training_text)
    if spec == "byte":
        return Bytes()
    return HuggingFace(spec)


def pad(sequences: list[np.ndarray], length: int, truncation: str, padding: str) -> np.ndarray:
    """(N, length) ids: each sequence cut to `length` (`truncation: end` keeps its start,
    `start` its end) and padded with 0 on the `padding` side."""
    out = np.full((len(sequences), length), PAD, dtype=np.int64)
    for i, ids in enumerate(sequences):
        ids = ids[:length] if truncation == "end" else ids[-length:]
        if padding == "right":
            out[i, :len(ids)] = ids
        else:
            out[i, length - len(ids):] = ids
    return out
