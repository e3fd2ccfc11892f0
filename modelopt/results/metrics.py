"""The metric table: every figure modelopt records, declared once.

Report, compare, export and the pytest `extra_info` read this table; a metric that a cell
records but that is not declared here fails the test suite (tests/test_metrics.py).
"""

from __future__ import annotations

from dataclasses import replace

from modelopt.spec.metric import Metric, Tolerance  # noqa: F401  (the table's entries)


def _m(name, title, fmt="g3", better=None, kind="none", tol=0.0, unit="", timing=False):
    return Metric(name, title, fmt, better, kind, tol, unit, timing)


_POINT = 0.01  # one percentage point
TABLE: dict[str, Metric] = {m.name: m for m in [
    # ---- task figures (test split, final step unless named otherwise)
    _m("accuracy", "accuracy %", "pct", True, "points", _POINT, "fraction"),
    _m("accuracy_best_val", "acc @best val %", "pct", True, "points", _POINT, "fraction"),
    _m("f1_macro", "F1 macro", "f3", True, "points", _POINT, "fraction"),
    _m("precision_macro", "precision macro", "f3", True, "points", _POINT, "fraction"),
    _m("recall_macro", "recall macro", "f3", True, "points", _POINT, "fraction"),
    _m("loss", "test loss", "g3", False, "relative", 0.05),
    _m("r2", "R²", "f3", True, "absolute", 0.01),
    _m("r2_best_val", "R² @best val", "f3", True, "absolute", 0.01),
    _m("mse", "MSE", "g3", False, "relative", 0.05),
    _m("rmse", "RMSE", "g3", False, "relative", 0.05),
    _m("mae", "MAE", "g3", False, "relative", 0.05),
    _m("confusion", "confusion matrix", "none"),
    _m("class_names", "class names", "none"),  # an image folder's, in index order
    # ---- a text dataset's (techniques/text.py), whatever its task
    _m("tokenizer", "tokenizer", "none"),
    _m("vocab_size", "vocabulary", "int"),
    _m("seq_len", "sequence length", "int"),
    _m("chars_per_token", "chars/token", "g3"),
    _m("train_tokens", "training tokens", "si"),
    _m("truncated_share", "texts cut %", "pct"),
    _m("val_score", "validation score", "f3", True),  # what tune chooses by; never test
    _m("best_val_step", "best val step", "int"),
    _m("final_step", "steps", "int"),
    _m("cores", "cores", "int"),  # what the backend took of the machine
    _m("gpus", "GPUs", "int"),
    _m("diverged_at_step", "diverged at step", "int"),
    _m("target_reached", "target reached", "f2", True),
    _m("steps_to_target", "steps to target", "f0", False, "relative", 0.10, "steps"),
    _m("time_to_target_s", "time to target s", "f1", False, unit="s", timing=True),
    _m("teacher_accuracy", "teacher %", "pct", True, "points", _POINT, "fraction"),
    _m("teacher_cached", "teacher cached", "bool"),
    _m("teacher_params", "teacher params", "int"),
    _m("teacher_train_seconds", "teacher train s", "f1", unit="s"),  # its own training, once
    # the test split's most common class's share: what always answering it scores; a
    # teacher at or below it teaches nothing (its classes in another order?)
    _m("teacher_majority", "majority class %", "pct"),
    # the trained network came from another cell of the run with the same training (dense.py)
    _m("dense_reused", "dense reused", "bool"),
    # ---- what the model costs (counts are exact: the same seed gives the same model)
    _m("params", "params", "int", False, "exact"),
    _m("params_nonzero", "nonzero", "int", False, "exact"),
    # a statistic of the weights' values, which any change of training moves: not gated
    _m("params_above_1e-3", "weights > 1e-3", "int", False),
    _m("sparsity", "sparsity %", "pct", True),
    _m("flops", "FLOPs", "si", False, "exact", unit="FLOPs"),
    _m("flops_nonzero", "nonzero FLOPs", "si", False, "exact", unit="FLOPs"),
    _m("size_bytes", "size B", "si", False, "exact", unit="bytes"),
    _m("size_bytes_compressed", "zipped B", "si", False, "relative", 0.05, "bytes"),
    _m("prune_amount", "prune amount", "f2"),
    # a model made from another (structured pruning's slimmed model from the masked one):
    # how far its outputs are from the model it was made from
    _m("max_abs_diff", "vs its source max abs Δ", "g3", False),
    _m("channels_removed", "channels removed", "f2"),
    _m("quantized", "quantized", "bool"),
    _m("quantized_engine", "quantized engine", "none"),
    _m("quantized_layers", "quantized layers", "int", True, "exact"),
    _m("quantized_with", "quantized with", "none"),  # torchao, torchao pt2e, or torch.ao
    _m("calibration_samples", "calibration samples", "int"),
    # how the int8 model ran: on int8 kernels, or PT2E's reference path (quantize /
    # dequantize around float kernels: a numerics check, never int8's speed)
    _m("int8_path", "int8 runs on", "none"),
    _m("float_layers", "float layers", "int"),  # weighted layers left in float
    # the runtime a model ships on, where it is not PyTorch (deploy: onnxruntime)
    _m("runtime", "runtime", "none"),
    _m("runtime_version", "runtime version", "none"),
    _m("execution_provider", "execution provider", "none"),
    _m("onnx_opset", "ONNX opset", "int"),
    # the saved program (graph and tensors) of an exported model, beside size_bytes (tensors)
    _m("artifact_bytes", "artifact B", "si", False, "exact", unit="bytes"),
    # deploy formats (compile, export): compiling apart from latency, and the outputs' check
    _m("compile_seconds", "compile s", "f1", False, unit="s", timing=True),
    # where a model trained on a GPU shipped instead (deploy: {device: cpu}, ONNX Runtime,
    # x86 int8 kernels)
    _m("shipped_on", "ships on", "none"),
    _m("deploy_max_abs_diff", "deployed vs undeployed max abs Δ", "g3", False),
    _m("deploy_agreement", "deployed classes agree", "pct", True),
    # ---- data
    _m("train_samples", "train samples", "int"),
    _m("test_samples", "test samples", "int"),  # what one point of accuracy is
    _m("val_samples", "validation samples", "int"),  # what a tuned choice is made on
    _m("duplicates_dropped", "duplicates dropped", "int"),
    _m("input_mb_dense", "input MB dense", "f2", unit="MB"),
    _m("input_mb_sparse", "input MB sparse", "f2", unit="MB"),
    _m("input_density", "input density", "f3"),
    # ---- memory
    _m("peak_rss_mb", "peak RSS MB", "f0", False, "relative", 0.10, "MB"),
    _m("baseline_rss_mb", "RSS at start MB", "f0", unit="MB"),
    _m("peak_cuda_mb", "peak CUDA MB", "f0", False, "relative", 0.05, "MB"),
    # ---- training speed. Gated only as train_samples_s x machine_probe_ms (compare.py):
    # two runs differ by the machine as well as the code
    _m("train_seconds", "train s", "f1", False, unit="s", timing=True),  # fine-tuning included
    _m("finetune_seconds", "fine-tune s", "f1", False, unit="s", timing=True),
    # every step the shipped model trained: training and fine-tuning (a KD teacher's apart)
    _m("steps_total", "steps trained", "int"),
    _m("train_samples_s", "train samples/s", "f0", True, "relative", 0.15, "samples/s", True),
    _m("train_tokens_s", "train tokens/s", "f0", True, unit="tokens/s", timing=True),
    # the machine's speed, not the model's: no direction (compare divides training speed by it)
    _m("machine_probe_ms", "machine probe ms", "g3", unit="ms", timing=True),
    _m("ddp_startup_s", "ddp outside steps s", "f1", False, unit="s", timing=True),
    _m("ddp_world_size", "ddp ranks", "int"),
    # ---- latency, from the run's timing stage (timing.py). Gated only when compare re-times
    # both runs' saved models side by side
    _m("latency_ms_p50", "latency p50 ms", "g3", False, "relative", 0.10, "ms", True),
    # p90 over a process's ~5 ms blocks (each a mean of many calls), not a per-call tail
    _m("latency_ms_p90", "latency p90 ms", "g3", False, unit="ms", timing=True),
    _m("latency_ms_batch_p50", "batch latency ms", "g3", False, "relative", 0.10, "ms", True),
    _m("latency_processes", "timing processes", "int"),
    # a causal decoder's, timed beside its forward pass: a 64-token prompt's first new token,
    # and each of the 63 after it with the key-value cache (transformers.generation_calls)
    _m("first_token_ms", "first token ms", "g3", False, "relative", 0.10, "ms", True),
    _m("per_token_ms", "ms per new token", "g3", False, "relative", 0.10, "ms", True),
    # ---- derived by the report from the timing stage: baseline latency over this row's,
    # both timed in the same processes (see timing.speedups)
    _m("speedup_batch", "speed-up × (batch)", "f2", True, timing=True),
    _m("speedup_batch1", "speed-up × (batch 1)", "f2", True, timing=True),
]}
for _base in ("speedup_batch", "speedup_batch1"):
    for _end in ("ci_low", "ci_high"):
        TABLE[f"{_base}_{_end}"] = _m(f"{_base}_{_end}", f"{TABLE[_base].title} {_end}", "f2",
                                      True, timing=True)

# ---------------------------------------------------------------- figures per model
# A cell measures the model it ships ("model": the masked or int8 copy included), and where
# structured pruning removed channels, the smaller model it built ("slimmed"). A record
# holds each model's figures apart (Record.models); a figure is declared once above, and a
# table column of another model's figure is named by `column` (slimmed_params).
MODELS = {"slimmed": "structured pruning's model, the channels removed"}
PER_MODEL = ("params", "flops", "size_bytes", "max_abs_diff", "compile_seconds",
             "artifact_bytes", "deploy_max_abs_diff", "deploy_agreement", "latency_ms_p50",
             "latency_ms_batch_p50", "first_token_ms", "per_token_ms",
             # what a runtime says of the model it made (the slimmed model's file too)
             "runtime", "runtime_version", "execution_provider", "onnx_opset", "float_layers")


def column(kind: str, figure: str) -> str:
    """The table column of a model's figure: the shipped model's own name, another's
    prefixed by its kind."""
    return figure if kind == "model" else f"{kind}_{figure}"


for _kind in MODELS:
    for _name in PER_MODEL:
        TABLE[column(_kind, _name)] = replace(TABLE[_name], name=column(_kind, _name),
                                              title=f"{_kind} {TABLE[_name].title}")

# the figures modelopt itself records; the rest a run declares (a measure's, a task's)
BUILTIN = frozenset(TABLE)

# latency figures and the model they are taken of
LATENCY_FIGURES = {kind: (column(kind, "latency_ms_p50"), column(kind, "latency_ms_batch_p50"))
                   for kind in ("model", *MODELS)}


class UnknownMetric(KeyError):
    pass


def get(name: str) -> Metric:
    try:
        return TABLE[name]
    except KeyError:
        raise UnknownMetric(f"unknown metric '{name}'; known: {', '.join(TABLE)}") from None


def undeclared(names) -> list[str]:
    """Recorded names that the table does not declare (a test keeps this empty)."""
    return sorted(n for n in names if n not in TABLE)


def gated() -> list[Metric]:
    return [m for m in TABLE.values() if m.gated]


def directed() -> list[Metric]:
    """Numeric figures with a direction: what export charts."""
    return [m for m in TABLE.values() if m.higher_is_better is not None and m.fmt != "none"]


# ---------------------------------------------------------------- metrics a run declares
# A plugin measure (run/measures.py) declares its figures here in the run's process; the run
# writes the declarations into its suite.json, and readers declare them again from there, so
# report, compare and export know a plugin's figures without importing the plugin.

RUN_META = "suite.json"


def declare(metric: Metric) -> Metric:
    """Add a figure to the table; declaring the same one twice is harmless, a clash is not."""
    known = TABLE.get(metric.name)
    if known is not None and known != metric:
        raise ValueError(f"metric '{metric.name}' is declared twice, differently: {known} "
                         f"vs {metric}")
    TABLE[metric.name] = metric
    return metric


def as_dict(metric: Metric) -> dict:
    from dataclasses import asdict

    return asdict(metric)


def declare_all(docs: list[dict], where: str = RUN_META) -> None:
    """Declare the figures a run declared (its suite.json's `metrics`); a malformed
    declaration is a ValueError naming `where`."""
    for doc in docs:
        try:
            declare(Metric(**doc))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: a metric declaration that cannot be read ({exc})") \
                from None
