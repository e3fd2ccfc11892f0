"""Test-only techniques, loaded through MODELOPT_PLUGINS like a user's own module."""

import os
import time

from torch import nn

from modelopt.spec.registries import AUGMENT, DEPLOYERS, METRICS, MODELS, QUANTIZERS, WEIGHTS


class _Crash(nn.Linear):
    def __init__(self, n_in, n_out, how, rank):
        super().__init__(n_in, n_out)
        self.how, self.rank = how, rank

    def _mine(self) -> bool:
        import torch.distributed as dist

        return self.rank < 0 or (dist.is_initialized() and dist.get_rank() == self.rank)

    def forward(self, x):
        if self.training and self._mine():
            if self.how == "exit":
                os._exit(3)
            if self.how == "raise":
                raise RuntimeError("deliberate failure in forward")
            if self.how == "sleep":
                time.sleep(60)
        return super().forward(x)


@MODELS.register("test_crash", accepts=("signal", "vector", "image"))
def test_crash(input_shape: tuple, num_outputs: int, /, how: str = "raise",
               rank: int = -1) -> nn.Module:
    """A model that fails on purpose in training: raise, exit (os._exit) or sleep; on every
    process, or only on `rank` of a process group."""
    import math

    return nn.Sequential(nn.Flatten(), _Crash(math.prod(input_shape), num_outputs, how, rank))


class Slowed(nn.Module):
    """A saved model made `factor` times slower for real: each call spins until
    `factor` x the wrapped model's own time has passed (the compare gate's test)."""

    def __init__(self, model: nn.Module, factor: float):
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x):
        t0 = time.perf_counter()
        out = self.model(x)
        end = t0 + self.factor * (time.perf_counter() - t0)
        while time.perf_counter() < end:
            pass
        return out


class _Offset(nn.Linear):
    """A layer whose offset is drawn when it is built and not saved (a non-persistent
    buffer): built again from its weights, it computes something else."""

    def __init__(self, n_in, n_out):
        super().__init__(n_in, n_out)
        import torch

        self.register_buffer("offset", 100 * torch.randn(n_out), persistent=False)

    def forward(self, x):
        return super().forward(x) + self.offset


class _Transposed(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.enc, self.head = nn.Linear(n_in, 8), nn.Linear(n_in, n_out)

    def forward(self, x):
        h = nn.functional.relu(self.enc(x.flatten(1)))
        return self.head(nn.functional.linear(h, self.enc.weight.t()))


@MODELS.register("test_transposed", accepts=("vector",))
def test_transposed(input_shape: tuple, num_outputs: int, /) -> nn.Module:
    """An encoder's weight used again, transposed, outside its layer (tied weights)."""
    return _Transposed(input_shape[0], num_outputs)


@MODELS.register("test_unrebuildable", accepts=("signal", "vector", "image"))
def test_unrebuildable(input_shape: tuple, num_outputs: int, /) -> nn.Module:
    """A model that cannot be rebuilt from its state_dict (the timing stage's fall-back)."""
    import math

    return nn.Sequential(nn.Flatten(), _Offset(math.prod(input_shape), num_outputs))


@DEPLOYERS.register("test_slowed")
def test_slowed(factor: float = 1.3):
    """Ships the model wrapped in Slowed: a deploy format that is `factor` times slower."""
    from modelopt.techniques.deploy import Format

    return Format(lambda model, x: (Slowed(model, factor), {}))


@DEPLOYERS.register("test_own_int8")
def test_own_int8():
    """A runtime with its own int8: dynamic int8 through torch.ao's quantize_dynamic (not
    the quantizer's torchao path); static int8 it refuses."""
    import torch

    from modelopt.techniques.deploy import Format

    def realise(intent, model, inputs):
        import copy

        from torch.ao.quantization import quantize_dynamic

        q = quantize_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear}, dtype=torch.qint8)
        return q, {"quantized": True, "quantized_with": f"test_own_int8 ({intent.scheme})"}

    def refuses(intent):
        return (None if intent.scheme == "int8_dynamic" else
                f"test_own_int8 has no {intent.scheme} kernels")

    return Format(quantize=realise, refuses=refuses)


def tiny_net(input_shape: tuple, num_outputs: int, /, width: int = 8) -> nn.Module:
    """Not registered: suites name it by import path, `tests.plugins:tiny_net`."""
    import math

    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(),
                         nn.Linear(width, num_outputs))


class _Attending(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.embed, self.attn = nn.Linear(n_in, 16), nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, n_out)

    def forward(self, x):
        h = self.embed(x.flatten(1)).unsqueeze(1)
        return self.head(self.attn(h, h, h, need_weights=False)[0].squeeze(1))


def attending_net(input_shape: tuple, num_outputs: int, /) -> nn.Module:
    """Not registered (`tests.plugins:attending_net`): a layer of nn.MultiheadAttention."""
    import math

    return _Attending(math.prod(input_shape), num_outputs)


def plain_nadam(params, /, lr: float = 2e-3, momentum_decay: float = 4e-3):
    """Not registered: suites name it by import path, `tests.plugins:plain_nadam`."""
    import torch

    return torch.optim.NAdam(params, lr=lr, momentum_decay=momentum_decay)


def groups_as_a_setting(params, lr: float = 0.1):
    """Not registered, and wrong: the parameter groups are not positional-only."""
    import torch

    return torch.optim.SGD(params, lr=lr)


@WEIGHTS.register("test_npz", suffixes=(".npz",))
def test_npz(path: str, /) -> dict:
    """Trained weights from a NumPy .npz archive (one array per state_dict key)."""
    import numpy as np
    import torch

    with np.load(path) as f:
        return {k: torch.from_numpy(f[k]) for k in f.files}


@QUANTIZERS.register("test_intent_only")
def test_intent_only():
    """Asks for dynamic int8 and leaves it to the runtime (no PyTorch conversion)."""
    from modelopt.techniques.quantize import Intent, Quantizer

    return Quantizer(intent=Intent("int8_dynamic"))


@QUANTIZERS.register("test_no_intent")
def test_no_intent():
    """Converts in PyTorch (a copy, unchanged) and states no intent."""
    import copy

    from modelopt.techniques.quantize import Quantizer

    return Quantizer(convert=lambda model, x: (copy.deepcopy(model).cpu().eval(), {}))


@METRICS.register("test_figure")
def test_figure(*, figure: str = "test_value", returns: str = "number"):
    """A measure as plugin authors write it, mistakes included: one figure named `figure`,
    computed as a number, a tensor, NaN or None."""
    import torch

    from modelopt.results.metrics import Metric
    from modelopt.run.measures import Measure

    value = {"number": 0.5, "tensor": torch.tensor(0.5), "nan": float("nan"), "none": None}
    return Measure((Metric(figure, figure, "f3", True),), lambda e: {figure: value[returns]})


@AUGMENT.register("test_draws", inputs=("vector",))
def test_draws():
    """Noise, and each process's first draws written to $MODELOPT_TEST_DRAWS/<pid>: from the
    augmentation's generator and from torch's global one (dropout's)."""
    import torch

    def fn(x, g):
        noise = torch.randn(x.shape, generator=g)
        out = os.path.join(os.environ["MODELOPT_TEST_DRAWS"], str(os.getpid()))
        if not os.path.exists(out):
            with open(out, "w") as f:
                f.write(f"{noise.flatten()[:3].tolist()} {torch.rand(2).tolist()}")
        return x + 0.1 * noise
    return fn
