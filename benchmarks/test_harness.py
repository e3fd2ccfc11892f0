"""How fast is the harness itself, and are its figures the model's and not the harness's?

Each benchmark measures modelopt against the limit in the same run and records the ratio
in extra_info (and prints it). Targets are stated, not asserted: these machines are noisy.
Run alone with `pytest benchmarks/test_harness.py --benchmark-only --harness -s`.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from modelopt.results import store as results
from modelopt.run import runner
from modelopt.run.plan import load_data, train_here
from modelopt.spec.suite import parse
from modelopt.techniques.models import build

pytestmark = pytest.mark.harness
ROOT = Path(__file__).resolve().parent.parent

CNN = """
name: harness
seeds: [0]
defaults:
  dataset: mnist1d
  model: cnn
  optimizer: {name: adam, lr: 0.01}
  train: {steps: STEPS, batch_size: 100, eval_every: STEPS, val_fraction: 0.1}
matrix:
  model: [cnn]
"""


def report(benchmark, **figures):
    benchmark.extra_info.update(figures)
    print("\n" + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in figures.items()))


def hand_loop(data, steps: int, batch: int) -> float:
    """The minimal loop: in-memory tensors, a seeded permutation sliced per step."""
    torch.manual_seed(0)
    model = build({"name": "cnn"}, data.input_shape, 10)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    return plain_steps(model, opt, data.x_train, data.y_train, steps, batch)


def plain_steps(model, opt, x, y, steps: int, batch: int, sync=lambda: None) -> float:
    """Samples/s of `steps` plain optimizer steps: a permutation drawn where `x` lives,
    sliced per step, the loss never read; `sync` waits for a GPU before each clock read."""
    n = len(x)
    order, pos = torch.randperm(n, device=x.device), 0
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        if pos + batch > n:
            order, pos = torch.randperm(n, device=x.device), 0
        idx = order[pos:pos + batch]
        pos += batch
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    return steps * batch / (time.perf_counter() - t0)


def dataloader_loop(data, steps: int, batch: int) -> float:
    """What users usually write: DataLoader over a TensorDataset."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = build({"name": "cnn"}, data.input_shape, 10)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=batch,
                        shuffle=True, drop_last=True)
    return loader_rate(model, opt, loader, steps, batch)


def loader_rate(model, opt, loader, steps: int, batch: int) -> float:
    """Samples/s of `steps` optimizer steps over `loader`, epoch after epoch. The first
    iterator (where a DataLoader starts its workers) is made before the clock starts, as
    modelopt's fit makes its stream's: neither figure counts worker start-up."""
    batches = iter(loader)
    done, t0 = 0, time.perf_counter()
    while done < steps:
        try:
            xb, yb = next(batches)
        except StopIteration:  # a new epoch
            batches = iter(loader)
            continue
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += 1
    return steps * batch / (time.perf_counter() - t0)


@pytest.mark.benchmark(group="harness: training throughput")
def test_training_loop_overhead(benchmark):
    """modelopt's loop vs a hand-written one vs DataLoader, one thread each, same process."""
    cfg = parse(CNN.replace("STEPS", "2000")).cells[0]
    backend = cfg.backend.build()
    backend.prepare(1)
    data = load_data(cfg, 0)
    rates = {"hand": [], "dataloader": [], "modelopt": []}

    def once():
        rates["hand"].append(hand_loop(data, 2000, 100))
        rates["dataloader"].append(dataloader_loop(data, 2000, 100))
        outcome = train_here(backend, cfg, 0, data).outcome
        rates["modelopt"].append(outcome.samples / outcome.train_seconds)

    benchmark.pedantic(once, rounds=3, iterations=1)
    med = {k: statistics.median(v) for k, v in rates.items()}
    report(benchmark, hand_samples_s=med["hand"], dataloader_samples_s=med["dataloader"],
           modelopt_samples_s=med["modelopt"], modelopt_over_hand=med["modelopt"] / med["hand"],
           dataloader_over_hand=med["dataloader"] / med["hand"], target_modelopt_over_hand=0.95)


QUICK_SHORT = """
name: quick_short
seeds: [0, 1, 2]
defaults:
  dataset: mnist1d
  optimizer: {name: adam, lr: 0.01}
  train: {steps: 1000, batch_size: 100, eval_every: 500, val_fraction: 0.05}
matrix:
  model: [linear, mlp, cnn, gru]
"""


@pytest.mark.benchmark(group="harness: suite throughput")
def test_parallel_cells(benchmark, tmp_path):
    """The quick suite's cells (1,000 steps instead of 6,000) with --jobs 1 (cells one after
    another, 2 threads each; and again with 1 thread each) vs --jobs 2 (two 1-thread cells
    side by side). Wall time with and without the timing stage. Accuracy, loss and params
    must not depend on it; the wall time should."""
    one = parse(QUICK_SHORT.replace("train: {", "backend: {name: cpu, threads: 2}\n  train: {"))
    two = parse(QUICK_SHORT)
    wall = {}

    def run_both():
        for name, suite, jobs in (("jobs1", one, 1), ("jobs2", two, 2)):
            t0 = time.perf_counter()
            stage = []  # when the timing stage began: cells before, latency after
            runner.run(suite, tmp_path / name, jobs=jobs, resume=False,
                       on_timing=lambda k, n: stage.append(time.perf_counter()))
            wall[name] = time.perf_counter() - t0
            wall[f"{name}_cells"] = stage[0] - t0

    benchmark.pedantic(run_both, rounds=1, iterations=1)
    n = len(two.runs())
    by = {d: {(r.cell["model"]["name"], r.seed): r for r in results.read(tmp_path / d)}
          for d in ("jobs1", "jobs2")}
    phases: dict[str, float] = {}
    for r in by["jobs2"].values():
        for k, v in r.extra.get("phase_seconds", {}).items():
            phases[k] = phases.get(k, 0.0) + v
    overhead = sum(r.duration_s for r in by["jobs2"].values()) - sum(phases.values())
    same_1thread = parse(QUICK_SHORT)
    t0, stage = time.perf_counter(), []
    runner.run(same_1thread, tmp_path / "jobs1_1thread", jobs=1, resume=False,
               on_timing=lambda k, n: stage.append(time.perf_counter()))
    wall["jobs1_1thread"], wall["jobs1_1thread_cells"] = time.perf_counter() - t0, stage[0] - t0
    serial = {(r.cell["model"]["name"], r.seed): r
              for r in results.read(tmp_path / "jobs1_1thread")}
    identical = all(serial[k].metrics[m] == by["jobs2"][k].metrics[m]
                    for k in serial for m in ("accuracy", "loss", "params"))
    report(benchmark, runs=n, wall_jobs1_s=wall["jobs1"], wall_jobs2_s=wall["jobs2"],
           runs_per_min_jobs1=60 * n / wall["jobs1"], runs_per_min_jobs2=60 * n / wall["jobs2"],
           speedup=wall["jobs1"] / wall["jobs2"], target_speedup=1.85,
           cells_wall_jobs1_s=wall["jobs1_cells"], cells_wall_jobs2_s=wall["jobs2_cells"],
           wall_jobs1_1thread_s=wall["jobs1_1thread"],
           speedup_over_1thread_cells_one_at_a_time=wall["jobs1_1thread"] / wall["jobs2"],
           cells_speedup_over_1thread=wall["jobs1_1thread_cells"] / wall["jobs2_cells"],
           cells_speedup=wall["jobs1_cells"] / wall["jobs2_cells"],
           identical_results_jobs1_vs_jobs2=identical,
           **{f"cell_{k}_s": v for k, v in phases.items()},
           cell_process_and_waiting_s=overhead)
    assert identical  # parallelism changes speed, never results


@pytest.mark.benchmark(group="harness: latency stability")
def test_latency_repeatability(benchmark, tmp_path):
    """The same 2-seed cell run three times. Across runs (each its own timing stage): the
    coefficient of variation of latency_ms_batch_p50. Within a run: seed 1's model over
    seed 0's (the same architecture), per timing process; target within 1.00 ± 0.03."""
    from modelopt.results import latency

    suite = parse(CNN.replace("STEPS", "300").replace("seeds: [0]", "seeds: [0, 1]"))
    lat, ratios = [], []

    def three():
        for i in range(3):
            runner.run(suite, tmp_path / str(i), jobs=1, resume=False)
            lat.append(results.load(tmp_path / str(i))["latency_ms_batch_p50"].mean())
            rows = latency.read(tmp_path / str(i))["rows"]
            for p in sorted({r["process"] for r in rows}):
                t = {r["seed"]: r["rounds_batch"] for r in rows if r["process"] == p}
                # as timing.ratio does: the median over rounds of the ratio within a round
                ratios.append(statistics.median(a / b for a, b in zip(t[1], t[0])))

    benchmark.pedantic(three, rounds=1, iterations=1)
    cv = statistics.stdev(lat) / statistics.mean(lat)
    report(benchmark, latency_ms_batch_p50=statistics.mean(lat), cv_across_runs=cv,
           same_architecture_ratio_min=min(ratios), same_architecture_ratio_max=max(ratios),
           processes=len(ratios), target_ratio_within=0.03)


BARE = textwrap.dedent("""
    import json, sys, torch
    from modelopt.run.plan import load_data
    from modelopt.spec import plugins
    from modelopt.spec.cell import Cell
    from modelopt.techniques.models import build
    plugins.load()
    cell = Cell.of(json.loads(sys.argv[1]))
    torch.set_num_threads(1)
    data = load_data(cell, 0)
    torch.manual_seed(0)
    model = build(cell.model, data.input_shape, 10)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for step in range(cell.train.settings.steps):
        idx = torch.randint(0, len(data.x_train), (100,))
        loss = torch.nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad(); loss.backward(); opt.step()
    print(json.dumps({"peak_mb": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024}))
""")


@pytest.mark.benchmark(group="harness: memory")
def test_peak_memory_vs_bare_script(benchmark, tmp_path):
    """Peak RSS of a cell vs the same training in a bare script (target <= 1.1x)."""
    suite = parse(CNN.replace("STEPS", "500"))
    out = {}

    def both():
        runner.run(suite, tmp_path, jobs=1, resume=False)
        rec = results.read(tmp_path)[0]
        bare = subprocess.run([sys.executable, "-c", BARE, json.dumps(suite.cells[0].as_config())],
                              capture_output=True, text=True, check=True)
        out["cell"] = rec.metrics["peak_rss_mb"]
        out["baseline"] = rec.metrics["baseline_rss_mb"]
        out["bare"] = json.loads(bare.stdout.strip().splitlines()[-1])["peak_mb"]

    benchmark.pedantic(both, rounds=1, iterations=1)
    report(benchmark, cell_peak_mb=out["cell"], cell_baseline_mb=out["baseline"],
           bare_peak_mb=out["bare"], ratio=out["cell"] / out["bare"], target_ratio=1.1)


# the hand-written loop above, in a fresh process: glibc's defaults, nothing of the runner
PLAIN = textwrap.dedent("""
    import json, sys, torch
    from benchmarks.test_harness import hand_loop
    from modelopt.run.plan import load_data
    from modelopt.spec import plugins
    from modelopt.spec.cell import Cell
    plugins.load()
    cell, threads = Cell.of(json.loads(sys.argv[1])), int(sys.argv[2])
    torch.set_num_threads(threads)
    t = cell.train.settings
    rate = hand_loop(load_data(cell, 0), t.steps, t.batch_size)
    print(json.dumps({"samples_s": rate}))
""")


@pytest.mark.benchmark(group="harness: training throughput")
def test_cell_rate_vs_plain_loop(benchmark, tmp_path):
    """One cell through the runner (its own process, 2 threads) against a plain PyTorch loop
    in a fresh process with glibc's defaults, alternated A B A B A B (target >= 0.95x)."""
    suite = parse(CNN.replace("STEPS", "3000").replace("train: {", "backend: {name: cpu, "
                                                      "threads: 2}\n  train: {"))
    cfg = suite.cells[0].as_config()
    cell, plain = [], []

    def alternate():
        for i in range(3):
            runner.run(suite, tmp_path / str(i), jobs=2, resume=False)
            cell.append(results.read(tmp_path / str(i))[0].metrics["train_samples_s"])
            out = subprocess.run([sys.executable, "-c", PLAIN, json.dumps(cfg), "2"],
                                 capture_output=True, text=True, check=True, cwd=ROOT)
            plain.append(json.loads(out.stdout.strip().splitlines()[-1])["samples_s"])

    benchmark.pedantic(alternate, rounds=1, iterations=1)
    pairs = [c / p for c, p in zip(cell, plain)]
    report(benchmark, cell_samples_s=statistics.median(cell),
           plain_samples_s=statistics.median(plain), cell_over_plain=statistics.median(pairs),
           cell_over_plain_min=min(pairs), cell_over_plain_max=max(pairs),
           target_cell_over_plain=0.95)


GPU = """
name: harness-gpu
seeds: [0]
defaults:
  dataset: digits
  model: resnet18
  backend: {name: cuda}
  optimizer: {name: adam, lr: 0.002}
  train: {steps: STEPS, batch_size: 1024, eval_every: STEPS, val_fraction: 0.1}
"""


def gpu_plain_loop(data, model_config: dict, steps: int, batch: int, dev: str = "cuda") -> float:
    """The minimal GPU loop: the training set on the GPU, each epoch's permutation drawn
    there, the loss never read; the clock stops once the GPU has finished."""
    torch.manual_seed(0)
    model = build(model_config, data.input_shape, data.num_outputs).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=0.002)
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    return plain_steps(model, opt, data.x_train.to(dev), data.y_train.to(dev), steps, batch,
                       sync)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.benchmark(group="harness: training throughput")
def test_cuda_cell_rate_vs_plain_loop(benchmark):
    """suites/gpu.yaml's resnet18 cell (fp32, batch 1024, the 8x8 digits held on the GPU)
    trained by modelopt against the plain loop above on the same model, data and batch,
    alternated in one process, 5 pairs after one of each to warm the GPU (target >= 0.95x,
    as on the CPU). The device check runs it (tools/device_check.py)."""
    steps = 300
    cfg = parse(GPU.replace("STEPS", str(steps))).cells[0]
    backend = cfg.backend.build()
    backend.prepare(1)
    data = load_data(cfg, 0)
    rates = {"plain": [], "modelopt": []}

    def once():
        rates["plain"].append(gpu_plain_loop(data, cfg.model, steps, 1024))
        outcome = train_here(backend, cfg, 0, data).outcome
        rates["modelopt"].append(outcome.samples / outcome.train_seconds)

    once()  # CUDA context, cuDNN and cuBLAS set-up: paid here, not by the first pair
    for figures in rates.values():
        figures.clear()
    benchmark.pedantic(once, rounds=5, iterations=1)
    ratios = [m / p for m, p in zip(rates["modelopt"], rates["plain"])]
    report(benchmark, device=torch.cuda.get_device_name(0),
           plain_samples_s=statistics.median(rates["plain"]),
           modelopt_samples_s=statistics.median(rates["modelopt"]),
           modelopt_over_plain=statistics.median(ratios), ratio_min=min(ratios),
           ratio_max=max(ratios), pairs=len(ratios), target=0.95)


IMAGES = """
name: harness-images
seeds: [0]
defaults:
  dataset: {name: imagefolder, root: ROOT, channels: 1, image_size: 32, rotate: 15,
            crop_scale: 0.8, hflip: true, workers: 1}
  model: {name: cnn2d, channels: 16}
  optimizer: {name: adam, lr: 0.003}
  train: {steps: STEPS, batch_size: 64, eval_every: STEPS, val_fraction: 0.1}
"""


def imagefolder_loop(root: str, steps: int, batch: int, workers: int) -> float:
    """The seeds' loop: ImageFolder + RandomRotation / RandomResizedCrop / RandomHorizontalFlip
    through a DataLoader with workers, the same transforms and model as the cell; its
    workers persist across epochs and start before the clock (loader_rate)."""
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    tf = v2.Compose([v2.ToImage(), v2.Grayscale(1),
                     v2.RandomResizedCrop(32, scale=(0.8, 1.0), antialias=True),
                     v2.RandomRotation(15), v2.RandomHorizontalFlip(),
                     v2.ToDtype(torch.float32, scale=True)])
    torch.manual_seed(0)
    model = build({"name": "cnn2d", "channels": 16}, (1, 32, 32), 10)
    opt = torch.optim.Adam(model.parameters(), lr=0.003)
    # persistent workers: later epochs do not start them again, as modelopt's endless stream
    # does not (the plain loop's best case: the harder bar)
    loader = DataLoader(ImageFolder(root, tf), batch_size=batch, shuffle=True, drop_last=True,
                        num_workers=workers, multiprocessing_context="fork",
                        persistent_workers=workers > 0)
    return loader_rate(model, opt, loader, steps, batch)


@pytest.mark.benchmark(group="harness: streamed images")
def test_streamed_imagefolder_throughput(benchmark, tmp_path):
    """modelopt's imagefolder stream vs the plain DataLoader loop over the same folder (the
    digits as 32x32 PNG files), same transforms, 1 worker + 1 training thread, alternated
    in one process. Target: modelopt >= 0.9x."""
    from modelopt.techniques.images import write_digits

    root = str(tmp_path / "digits")
    write_digits(root, 32)
    steps = 150
    cfg = parse(IMAGES.replace("ROOT", root).replace("STEPS", str(steps))).cells[0]
    backend = cfg.backend.build()
    backend.prepare(1)
    data = load_data(cfg, 0)
    rates = {"plain": [], "modelopt": []}

    def once():
        rates["plain"].append(imagefolder_loop(root, steps, 64, 1))
        outcome = train_here(backend, cfg, 0, data).outcome
        rates["modelopt"].append(outcome.samples / outcome.train_seconds)

    benchmark.pedantic(once, rounds=5, iterations=1)
    ratios = [m / p for m, p in zip(rates["modelopt"], rates["plain"])]
    report(benchmark, plain_samples_s=statistics.median(rates["plain"]),
           modelopt_samples_s=statistics.median(rates["modelopt"]),
           modelopt_over_plain=statistics.median(ratios),
           ratio_min=min(ratios), ratio_max=max(ratios), target=0.9)
