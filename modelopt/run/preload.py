"""Imported once by the runner's forkserver: every cell process forks from a server that
already paid for imports and first-call set-up (about 3 s a cell otherwise on 2 cores).

Nothing here may touch the CUDA driver: a process forked after cuInit cannot use CUDA
("initialization error"), so on a GPU machine every cell and timing process would fail.
torch.cuda.is_available() (torch's cpp_extension asks it on import) calls cuInit unless
PYTORCH_NVML_BASED_CUDA_CHECK=1, and an optimizer like Adam asks for the current CUDA stream
in step(); the warm-up uses SGD, which does not."""

import gc
import logging
import os

# before torch is imported: availability through NVML, without cuInit (inherited by the
# forked processes, where it only changes how availability is asked)
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime" noise

import torch  # noqa: E402

torch.set_num_threads(1)  # no OpenMP pool before fork: each cell sizes its own

import mnist1d.data  # noqa: E402, F401
import sklearn.datasets  # noqa: E402, F401
import sklearn.metrics  # noqa: E402, F401
import sklearn.model_selection  # noqa: E402, F401
import torch.utils.benchmark  # noqa: E402, F401
import torch.utils.flop_counter  # noqa: E402, F401
import torch_pruning  # noqa: E402, F401
import torchvision.datasets  # noqa: E402, F401
import torchvision.transforms.v2  # noqa: E402, F401

import modelopt.run.cell  # noqa: E402, F401
from modelopt.run import measure  # noqa: E402
from modelopt.techniques import tasks  # noqa: E402


def _warm_up() -> None:
    """One tiny forward/backward/step, a FLOP count and the metrics: first-call costs."""
    model = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(76, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)  # Adam's step asks for a CUDA stream
    x = torch.randn(4, 1, 40)
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
    opt.step()
    measure.flops(model, x[:1])
    tasks.classification_metrics(model(x).detach(), torch.tensor([0, 1, 2, 0]), 3)


_warm_up()
# what the server holds stays out of every child's garbage collection: a cell's collection
# (PeakMemory collects before its window) walked all of it, 0.35 s a cell, and wrote to
# every object's header, copying the shared pages (+4.5 MB of RSS a cell)
gc.freeze()
