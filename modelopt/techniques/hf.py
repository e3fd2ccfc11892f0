"""Hugging Face `transformers` models for token inputs (optional extra: `text`), built from
a local directory (its config.json and weights, `save_pretrained`'s layout) or from a config
alone (random weights): nothing is downloaded (`local_files_only`).

modelopt's token ids are a tokenizer's ids + 1, with 0 for padding (techniques/tokenize.py),
so the wrapper shifts them back and masks padded positions; a language model's scores get
a column for id 0 that is never chosen, so that scores and targets index one vocabulary.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from modelopt.spec.registries import MODELS
from modelopt.techniques.errors import TechniqueError
from modelopt.techniques.onnx_runtime import installed
from modelopt.techniques.program import silence_pytree_log

Head = Literal["auto", "causal_lm", "sequence_classification"]
NEVER = -1e4  # the score of id 0 (padding) in a language model's outputs


class HFText(nn.Module):
    """A transformers model called on modelopt's token ids, returning its logits."""

    def __init__(self, model: nn.Module, causal: bool):
        super().__init__()
        self.model, self.causal = model, causal
        # a classifier's own class order (id2label), where its config names its classes
        labels = getattr(model.config, "id2label", None) or {}
        names = [str(labels.get(i, "")) for i in range(len(labels))]
        generic = names == [f"LABEL_{i}" for i in range(len(names))]
        self.class_names = None if causal or generic else names

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        mask = (idx != 0).long()
        logits = self.model(input_ids=(idx - 1).clamp_min(0), attention_mask=mask).logits
        if not self.causal:
            return logits
        pad = torch.full((*logits.shape[:-1], 1), NEVER, dtype=logits.dtype, device=logits.device)
        return torch.cat([pad, logits], -1)


MISSING = "model 'hf' needs Hugging Face transformers: pip install 'modelopt[text]'"


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise TechniqueError(MISSING) from e
    transformers.logging.set_verbosity_error()  # "weights newly initialized" for a new head
    silence_pytree_log()  # a model it builds imports torchao, where installed
    return transformers


def check(params: dict) -> None:
    """One of `path` (a folder with a config.json) and `config` (with its model_type), and
    transformers installed: said when the suite loads."""
    path, config = params.get("path"), params.get("config")
    if (path is None) == (config is None):
        raise TechniqueError("model 'hf': give one of `path` (a local folder, as "
                             "save_pretrained writes it) and `config` (a transformers config "
                             f"with its model_type); got {'both' if path else 'neither'}")
    if path is not None and not (Path(path).expanduser() / "config.json").is_file():
        raise TechniqueError(f"model 'hf': no config.json in {Path(path).expanduser().resolve()}")
    if config is not None and "model_type" not in config:
        raise TechniqueError("model 'hf': its config needs a model_type (llama, bert, gpt2, ...)")
    if installed("transformers") is None:  # its metadata: loading a suite imports nothing
        raise TechniqueError(MISSING)


def _config(t, path: str | None, config: dict | None, vocab: int, seq_len: int, labels: int):
    check({"path": path, "config": config})
    if path is not None:
        # never the folder's own code (a config's auto_map): it may come from elsewhere
        cfg = t.AutoConfig.from_pretrained(str(Path(path).expanduser()), local_files_only=True,
                                           trust_remote_code=False)
    else:
        params = dict(config)
        kind = params.pop("model_type")
        if kind not in t.CONFIG_MAPPING:  # transformers' own error lists every type it has
            near = difflib.get_close_matches(str(kind), list(t.CONFIG_MAPPING.keys()), n=3)
            raise TechniqueError(f"model 'hf': transformers {t.__version__} has no model_type "
                                 f"'{kind}'" + (f"; did you mean {', '.join(near)}?" if near
                                                else ""))
        cfg = t.AutoConfig.for_model(kind, **params)
        cfg.vocab_size = vocab - 1  # the tokenizer's own ids: modelopt adds one for padding
        for key in ("max_position_embeddings", "n_positions"):
            if getattr(cfg, key, seq_len) < seq_len:
                setattr(cfg, key, seq_len)
    if cfg.vocab_size != vocab - 1:
        raise TechniqueError(f"model 'hf': its vocabulary has {cfg.vocab_size} ids, the "
                             f"dataset's tokenizer {vocab - 1}; use the model's tokenizer.json")
    cfg.num_labels = labels
    if getattr(cfg, "pad_token_id", None) is None:
        cfg.pad_token_id = 0  # sequence classification finds the last token by it
    return cfg


# channels=False: structured pruning is checked on modelopt's own transformers only (each
# transformers family's attention would need declaring to Torch-Pruning); refused at load
@MODELS.register("hf", accepts=("tokens",), channels=False, preflight=check, tasks_by="head",
                 trained_by="path",
                 tasks_of=(("causal_lm", ("language_modelling",)),
                           ("sequence_classification", ("classification",))))
def hf(input_shape: tuple, num_outputs: int, /, path: str | None = None,
       config: dict | None = None, head: Head = "auto") -> nn.Module:
    """A Hugging Face transformers model: from a local `path` (save_pretrained's folder:
    config.json and weights) or from a `config` mapping (`model_type` and its fields; random
    weights). `head`: a causal language model or a sequence classifier; `auto` follows the
    dataset (a language-modelling corpus: causal_lm)."""
    seq_len, vocab = int(input_shape[0]), int(input_shape[1])
    causal = head == "causal_lm" or (head == "auto" and num_outputs == vocab)
    t = _transformers()
    cfg = _config(t, path, config, vocab, seq_len, 0 if causal else num_outputs)
    auto = t.AutoModelForCausalLM if causal else t.AutoModelForSequenceClassification
    if path is not None:
        model = auto.from_pretrained(str(Path(path).expanduser()), config=cfg,
                                     local_files_only=True, trust_remote_code=False)
    else:
        model = auto.from_config(cfg)
    model.config.use_cache = False  # a forward pass scores a whole window
    return HFText(model, causal)
