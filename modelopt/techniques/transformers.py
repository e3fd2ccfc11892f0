"""Transformers for token inputs, written with torch's scaled_dot_product_attention:
`transformer`, an encoder that classifies a text, and `gpt`, a causal decoder that predicts
the next token at every position (GPT-2's pre-norm block, as nanoGPT writes it).

Their attention keeps one Linear per projection (q, k, v, o) and derives its head count from
their widths, so that Torch-Pruning's dependency graph can remove whole heads (declared by
`head_projections()`, techniques/structured.py) and the slimmed model still runs. Position embeddings
are an nn.Embedding for the same reason. Id 0 pads (techniques/tokenize.py): the encoder
neither attends to nor averages padded positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modelopt.spec.registries import MODELS
from modelopt.spec.registry import Fraction, Positive, PositiveInt
from modelopt.techniques.errors import TechniqueError

Cache = list[tuple[torch.Tensor, torch.Tensor]]  # per block: keys and values so far


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, causal: bool, dropout: float):
        super().__init__()
        inner = heads * head_dim
        self.q, self.k, self.v = (nn.Linear(dim, inner) for _ in range(3))
        self.o = nn.Linear(inner, dim)
        self.head_dim, self.causal, self.dropout = head_dim, causal, dropout

    @property
    def n_heads(self) -> int:  # fewer once structured pruning removed whole heads
        return self.q.out_features // self.head_dim

    def head_projections(self) -> dict[nn.Module, int]:
        """The projections whose outputs are heads, and how many (structured pruning)."""
        return {m: self.n_heads for m in (self.q, self.k, self.v)}

    def split(self, t: torch.Tensor) -> torch.Tensor:  # (B, T, h*d) -> (B, h, T, d)
        return t.view(t.shape[0], t.shape[1], -1, self.head_dim).transpose(1, 2)

    def forward(self, x, mask=None, cache: Cache | None = None, at: int = 0):
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        causal = self.causal and mask is None
        if cache is not None:  # decoding: attend to every earlier position's keys and values
            if len(cache) > at:
                k = torch.cat([cache[at][0], k], 2)
                v = torch.cat([cache[at][1], v], 2)
                cache[at] = (k, v)
                causal = q.shape[2] > 1  # a prompt's positions still see only earlier ones
            else:
                cache.append((k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.o(y.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


class Block(nn.Module):
    """Pre-norm: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, dim, heads, head_dim, hidden, causal, dropout):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, head_dim, causal, dropout)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask=None, cache=None, at=0):
        x = x + self.drop(self.attn(self.norm1(x), mask, cache, at))
        return x + self.drop(self.fc2(F.gelu(self.fc1(self.norm2(x)))))


class Transformer(nn.Module):
    """Token and position embeddings, blocks, a final norm, then the head: per position
    (`causal`: a language model) or on the mean of the unpadded positions (a classifier)."""

    def __init__(self, seq_len, vocab, num_outputs, dim, depth, heads, mlp_ratio, dropout,
                 causal):
        super().__init__()
        if dim % heads:
            raise TechniqueError(f"width {dim} is not divisible by {heads} heads")
        self.causal, self.seq_len = causal, seq_len
        self.tokens, self.positions = nn.Embedding(vocab, dim), nn.Embedding(seq_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dim // heads, int(dim * mlp_ratio), causal,
                                          dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_outputs, bias=not causal)
        self.apply(_init)

    def forward(self, idx: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        start = cache[0][0].shape[2] if cache else 0
        pos = torch.arange(start, start + idx.shape[1], device=idx.device)
        x = self.drop(self.tokens(idx) + self.positions(pos))
        keep = None if self.causal else idx != 0
        # every position may attend to the first, so a text of padding alone stays finite
        mask = None if keep is None else torch.cat([torch.ones_like(keep[:, :1]), keep[:, 1:]], 1)
        for i, block in enumerate(self.blocks):
            x = block(x, None if mask is None else mask[:, None, None, :], cache, i)
        x = self.norm(x)
        if self.causal:
            return self.head(x)
        w = mask.unsqueeze(-1).to(x.dtype)
        return self.head((x * w).sum(1) / w.sum(1))


def _init(m: nn.Module) -> None:
    """GPT-2's: normal(0, 0.02) weights, zero biases."""
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)


def _shape(input_shape: tuple) -> tuple[int, int]:
    if len(input_shape) != 2:
        raise TechniqueError(f"text models take token ids: (sequence length, vocabulary) "
                             f"inputs; got {input_shape}")
    return int(input_shape[0]), int(input_shape[1])


def check(params: dict) -> None:
    """`dim` splits into `heads` heads of one width (when the suite loads)."""
    dim, heads = params.get("dim"), params.get("heads")
    if dim is not None and heads and dim % heads:
        raise TechniqueError(f"dim {dim} does not split into {heads} heads of one width; "
                             f"say dim: {heads * max(1, round(dim / heads))}")


def _dim(dim: int, width: float, heads: int) -> int:
    """dim x width, rounded to a multiple of the head count (so every head keeps its width)."""
    return max(heads, int(round(dim * width / heads)) * heads)


@MODELS.register("transformer", accepts=("tokens",), tasks=("classification",),
                 preflight=check)
def transformer(input_shape: tuple, num_outputs: int, /, dim: PositiveInt = 64,
                depth: PositiveInt = 2, heads: PositiveInt = 4, mlp_ratio: Positive = 4.0,
                width: Positive = 1.0, dropout: Fraction = 0.0) -> nn.Module:
    """Transformer encoder for text classification: `depth` pre-norm blocks of `heads`
    attention heads over `dim` x `width` features, mean-pooled over the unpadded tokens."""
    seq_len, vocab = _shape(input_shape)
    return Transformer(seq_len, vocab, num_outputs, _dim(dim, width, heads), depth, heads,
                       mlp_ratio, dropout, causal=False)


@MODELS.register("gpt", accepts=("tokens",), tasks=("language_modelling",), preflight=check)
def gpt(input_shape: tuple, num_outputs: int, /, dim: PositiveInt = 128, depth: PositiveInt = 4,
        heads: PositiveInt = 4, mlp_ratio: Positive = 4.0, width: Positive = 1.0,
        dropout: Fraction = 0.0) -> nn.Module:
    """GPT-style causal decoder for language modelling: `depth` pre-norm blocks with causal
    attention; scores over the vocabulary at every position."""
    seq_len, vocab = _shape(input_shape)
    return Transformer(seq_len, vocab, num_outputs, _dim(dim, width, heads), depth, heads,
                       mlp_ratio, dropout, causal=True)


@torch.inference_mode()
def generate(model: Transformer, prompt: torch.Tensor, new_tokens: int,
             step=None) -> tuple[torch.Tensor, Cache]:
    """Greedy decoding with a key-value cache: the prompt in one pass, then one position per
    new token (prompt length + new_tokens must fit the model's positions). `step`: what
    computes a pass (the model compiled), the model itself by default."""
    if prompt.shape[1] + new_tokens > model.seq_len:
        raise TechniqueError(f"a {prompt.shape[1]}-token prompt and {new_tokens} new tokens "
                             f"exceed the model's {model.seq_len} positions")
    step = model if step is None else step
    cache: Cache = []
    logits = step(prompt, cache)[:, -1]
    out = [logits.argmax(-1, keepdim=True)]
    for _ in range(new_tokens - 1):
        out.append(step(out[-1], cache)[:, -1].argmax(-1, keepdim=True))
    return torch.cat(out, 1), cache



class FirstToken:
    """One timed call: a prompt's first new token (the prompt in one pass, a fresh cache)."""

    def __init__(self, model: Transformer, step=None):
        self.model, self.step = model, step

    def __call__(self, prompt):
        return generate(self.model, prompt, 1, self.step)


class Generation(FirstToken):
    """One timed call: `new_tokens` tokens after a prompt, with the key-value cache."""

    def __init__(self, model: Transformer, new_tokens: int, step=None):
        super().__init__(model, step)
        self.new_tokens = new_tokens

    def __call__(self, prompt):
        return generate(self.model, prompt, self.new_tokens, self.step)


PROMPT = 64  # tokens of the timed prompt, and tokens generated after it


def generation_calls(model: nn.Module, example: torch.Tensor) -> dict[str, tuple]:
    """What the timing stage times of a causal decoder besides its forward pass: {"first_token":
    (call, prompt), "generate": (call, prompt)} with a 64-token prompt and 64 new tokens (half
    the positions each where the model has fewer than 128). A decoder shipped compiled
    (deploy: compile, whose forward pass is compiled for whole windows) decodes with the same
    model compiled again with dynamic shapes: one compilation, in the warm-up of each timing
    process. A decoder shipped in half precision decodes as it is (token ids in, its own
    dtype). {} for any other model (an exported program, an ONNX model: no key-value cache
    to decode with)."""
    step = None
    if isinstance(getattr(model, "model", None), Transformer):  # precision.HalfPrecision
        model = model.model
    source = getattr(model, "source", None)
    if isinstance(getattr(source, "model", None), Transformer):  # compiled, in half precision
        source = source.model
    if isinstance(source, Transformer) and not isinstance(model, Transformer):
        step = torch.compile(source, mode=getattr(model, "mode", "default"), dynamic=True)
        model = source
    if not isinstance(model, Transformer) or not model.causal or example.dim() != 2:
        return {}
    prompt_len = min(PROMPT, model.seq_len // 2, example.shape[1])
    new = min(PROMPT, model.seq_len - prompt_len)
    if prompt_len < 1 or new < 2:
        return {}
    prompt = example[:1, :prompt_len]
    return {"first_token": (FirstToken(model, step), prompt),
            "generate": (Generation(model, new, step), prompt)}
