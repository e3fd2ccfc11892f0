"""Count-based language models, the baselines a language model's test figures are read
against: unigram, bigram and trigram with add-k smoothing, and interpolated Kneser-Ney
(trigram; Chen & Goodman 1998), each fitted on the training tokens and with its one
parameter (k, the discount) chosen on the validation tokens, then scored on the test tokens.

Tokens are one stream per split; a test token's context is the tokens before it in that
stream (a window's first tokens see the end of the previous window, which a model that
reads one window at a time does not). Counts are kept as sorted int64 keys (token tuples
in base V) with numpy, so a vocabulary of any size costs memory per seen n-gram only.
"""

from __future__ import annotations

import math

import numpy as np

ADD_K = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
DISCOUNTS = (0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


class Counts:
    """How often each key occurs (keys sorted), with lookup of any keys (0 where unseen)."""

    def __init__(self, keys: np.ndarray, weights: np.ndarray | None = None):
        if weights is None:
            self.keys, self.n = np.unique(keys, return_counts=True)
        else:
            order = np.argsort(keys, kind="stable")
            self.keys, start = np.unique(keys[order], return_index=True)
            self.n = np.add.reduceat(weights[order], start) if len(keys) else weights[:0]

    def __getitem__(self, query: np.ndarray) -> np.ndarray:
        if not len(self.keys):
            return np.zeros(len(query))
        at = np.clip(np.searchsorted(self.keys, query), 0, len(self.keys) - 1)
        return np.where(self.keys[at] == query, self.n[at], 0).astype(np.float64)


def _grams(ids: np.ndarray, n: int, v: int) -> np.ndarray:
    """Keys of every n-gram in the stream: (t0, .., tn-1) as t0 V^(n-1) + ... + tn-1."""
    key = np.zeros(len(ids) - n + 1, dtype=np.int64)
    for j in range(n):
        key = key * v + ids[j:len(ids) - n + 1 + j]
    return key


def _nats(p: np.ndarray) -> float:
    return float(-np.log(np.maximum(p, 1e-300)).mean())


class AddK:
    """An n-gram model with add-k smoothing; its counts are made once, whatever k is tried."""

    def __init__(self, train: np.ndarray, v: int, n: int):
        self.v, self.n, self.size = v, n, len(train)
        self.grams = Counts(_grams(train, n, v))
        # c(context .): a context followed by a token
        self.contexts = Counts(_grams(train[:-1], n - 1, v)) if n > 1 else None

    def nats(self, k: float, tokens: np.ndarray) -> float:
        """Nats per token on `tokens` (their first n-1 are context)."""
        q = _grams(tokens, self.n, self.v)
        total = self.size if self.contexts is None else self.contexts[q // self.v]
        return _nats((self.grams[q] + k) / (total + k * self.v))


def add_k(train: np.ndarray, v: int, n: int, k: float, tokens: np.ndarray) -> float:
    """Nats per token of an add-k n-gram model on `tokens` (their first n-1 are context)."""
    return AddK(train, v, n).nats(k, tokens)


class KneserNey:
    """Interpolated Kneser-Ney trigram: the highest order's counts discounted by d, the lower
    orders' continuation counts (in how many contexts a word follows), down to a uniform
    distribution over the vocabulary, so no token has probability zero."""

    def __init__(self, train: np.ndarray, v: int):
        self.v = v
        tri, bi = _grams(train, 3, v), _grams(train, 2, v)
        self.c3 = Counts(tri)
        types3 = np.unique(tri)
        self.c3_ctx = Counts(tri // v)  # c(u v .)
        self.n3_ctx = Counts(types3 // v)  # N1+(u v .)
        self.n1_vw = Counts(types3 % (v * v))  # N1+(. v w): contexts u of each bigram v w
        self.n1_v_ = Counts((types3 % (v * v)) // v)  # N1+(. v .)
        types_vw = np.unique(types3 % (v * v))
        self.n2_ctx = Counts(types_vw // v)  # N1+(v .) among continuation bigrams
        types2 = np.unique(bi)
        self.n1_w = Counts(types2 % v)  # N1+(. w)
        self.n1_all = float(len(types2))
        self.n_words = float(len(np.unique(types2 % v)))

    def prob(self, tokens: np.ndarray, d: float) -> np.ndarray:
        v = self.v
        q3 = _grams(tokens, 3, v)
        w, vw, uv = q3 % v, q3 % (v * v), q3 // v
        p1 = (np.maximum(self.n1_w[w] - d, 0) + d * self.n_words / v) / self.n1_all
        cont = self.n1_v_[vw // v]
        with np.errstate(divide="ignore", invalid="ignore"):
            p2 = np.where(cont > 0, (np.maximum(self.n1_vw[vw] - d, 0)
                                     + d * self.n2_ctx[vw // v] * p1) / cont, p1)
            ctx = self.c3_ctx[uv]
            p3 = np.where(ctx > 0, (np.maximum(self.c3[q3] - d, 0)
                                    + d * self.n3_ctx[uv] * p2) / ctx, p2)
        return p3


def baselines(train: np.ndarray, val: np.ndarray, test: np.ndarray, v: int) -> dict:
    """Test nats per token of each baseline, its parameter chosen on validation:
    {"unigram": nats, ..., "kneser_ney": nats, "kneser_ney_discount": d}."""
    out: dict = {}
    for n, name in ((1, "unigram"), (2, "bigram"), (3, "trigram")):
        model = AddK(train, v, n)
        k = min(ADD_K, key=lambda k: model.nats(k, val))
        # the test stream scored from its 3rd token, as Kneser-Ney's trigram is
        out[name] = model.nats(k, test[3 - n:])
        out[f"{name}_k"] = k
    kn = KneserNey(train, v)
    d = min(DISCOUNTS, key=lambda d: _nats(kn.prob(val, d)))
    out["kneser_ney"], out["kneser_ney_discount"] = _nats(kn.prob(test, d)), d
    return out


def figures(nats: dict, chars_per_token: float) -> dict:
    """The baselines as a record's figures: perplexity of each, and bits per character of
    Kneser-Ney's (the strongest)."""
    out = {f"baseline_{name}_perplexity": math.exp(nats[name])
           for name in ("unigram", "bigram", "trigram", "kneser_ney")}
    out["baseline_kneser_ney_bits_per_char"] = nats["kneser_ney"] / math.log(2) / chars_per_token
    out["baseline_kneser_ney_discount"] = nats["kneser_ney_discount"]
    return out
