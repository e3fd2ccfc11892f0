"""Your own images: imagefolder over tiny folders of real PNG files, streamed by workers."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from modelopt.spec.suite import SuiteError, parse
from modelopt.techniques import data as data_mod
from modelopt.techniques.stream import EpochBatches


def make_folder(root, classes=("cat", "dog", "owl"), per_class=8, size=12):
    """Class k's images are bright in row band k: a pattern a small net can learn."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            img[4 * k:4 * k + 4] = 250
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


def load(root, seed=0, val=0.0, **params):
    return data_mod.load({"name": "imagefolder", "root": str(root), "workers": 0, **params},
                         seed, val)


def test_imagefolder_splits_by_class_and_streams_the_training_split(tmp_path):
    root = make_folder(tmp_path / "imgs")
    d = load(root, val=0.25, image_size=8, test_fraction=0.25)
    assert d.num_classes == 3 and d.input_shape == (3, 8, 8)
    assert len(d.x_train) == 0 and d.stream is not None  # training is not in memory
    assert d.n_train == 14 and len(d.x_val) == 4 and len(d.x_test) == 6  # 24 = 14 + 4 + 6
    assert sorted(d.y_test.tolist()) == [0, 0, 1, 1, 2, 2]  # stratified
    assert 0 <= float(d.x_test.min()) and float(d.x_test.max()) <= 1
    x, y = next(d.stream.batches(4, seed=0))
    assert x.shape == (4, 3, 8, 8) and y.dtype == torch.int64


def test_the_same_seed_streams_the_same_batches_with_or_without_workers(tmp_path):
    root = make_folder(tmp_path / "imgs")
    first = [(x, y) for (x, y), _ in zip(load(root).stream.batches(5, seed=3), range(6))]
    data = load(root, workers=1)
    again = [(x, y) for (x, y), _ in zip(data.stream.batches(5, seed=3), range(6))]
    for (x1, y1), (x2, y2) in zip(first, again):
        assert torch.equal(y1, y2) and torch.equal(x1, x2)
    # the order is the in-memory path's: a permutation per epoch, the tail dropped
    sampler = iter(EpochBatches(n=len(data.stream), batch=5, seed=3))
    order = [i for _ in range(3) for i in next(sampler)]
    assert len(set(order)) == 15


def test_a_separate_test_root_must_have_the_same_classes(tmp_path):
    root = make_folder(tmp_path / "train")
    d = load(root, test_root=str(make_folder(tmp_path / "test", per_class=2)))
    assert d.n_train == 24 and len(d.x_test) == 6
    make_folder(tmp_path / "other", classes=("cat", "emu"), per_class=2)
    with pytest.raises(SuiteError, match=r"test_root's classes \['cat', 'emu'\] differ"):
        parse(f"name: a\ndefaults: {{model: cnn2d, dataset: {{name: imagefolder, root: {root}, "
              f"test_root: {tmp_path / 'other'}}}}}\n")


def test_a_misspelt_class_is_refused_when_the_suite_loads(tmp_path):
    """`classes: [cat, dogs, owl]` passed `plan` and failed each cell as it ran."""
    root = make_folder(tmp_path / "imgs")
    with pytest.raises(SuiteError, match=r"classes \['cat', 'dogs', 'owl'\] are not the class "
                                         r"folders of .*imgs: \['cat', 'dog', 'owl'\]"):
        parse(f"name: a\ndefaults: {{model: cnn2d, dataset: {{name: imagefolder, root: {root}, "
              f"classes: [cat, dogs, owl]}}}}\n")
    parse(f"name: a\ndefaults: {{model: cnn2d, dataset: {{name: imagefolder, root: {root}, "
          f"classes: [owl, cat, dog]}}}}\n")  # any order of the folders' names


def test_a_missing_folder_and_preprocessing_are_refused_when_the_suite_loads(tmp_path):
    with pytest.raises(SuiteError, match=r"is not a folder.*modelopt images digits DEST"):
        parse(f"name: a\ndefaults: {{model: cnn2d, dataset: {{name: imagefolder, "
              f"root: {tmp_path / 'nowhere'}}}}}\n")
    root = make_folder(tmp_path / "imgs")
    with pytest.raises(SuiteError, match=r"preprocess 'standardize' cannot apply to dataset "
                                         r"'imagefolder': it streams .* only subsample"):
        parse(f"name: a\ndefaults: {{model: cnn2d, preprocess: [standardize], dataset: "
              f"{{name: imagefolder, root: {root}}}}}\n")
    # a class of one image failed every cell with scikit-learn's stratify error
    make_folder(tmp_path / "imgs", classes=("yak",), per_class=1)
    text = f"name: a\ndefaults: {{model: cnn2d, dataset: {{name: imagefolder, root: {root}}}}}\n"
    with pytest.raises(SuiteError, match=r"imagefolder: 4 classes in the class folders of .*, "
                                         r"and 1 of them have a single sample \(yak\)"):
        parse(text)
    test_root = make_folder(tmp_path / "t", ("cat", "dog", "owl", "yak"))
    make_folder(tmp_path / "imgs" / "yak" / "more", classes=("x",), per_class=1)
    assert parse(text).cells  # a second image a level below, where ImageFolder reads it too
    (tmp_path / "imgs" / "yak" / "more" / "x" / "0.png").unlink()
    assert parse(text.replace("}}\n", f", test_root: {test_root}}}}}\n")).cells


def test_subsample_keeps_a_balanced_share_of_a_streamed_split_after_validation(tmp_path):
    """Data efficiency on your own images: subsample reads the labels alone, so the streamed
    split keeps its files' positions; validation and test keep every sample."""
    from modelopt.techniques import preprocess

    root = make_folder(tmp_path / "imgs", per_class=20)
    full = load(root, val=0.25, test_fraction=0.25, image_size=8)
    sub = preprocess.apply([{"name": "subsample", "fraction": 0.25, "balanced": True}],
                           full, seed=0)
    # 60 images: 15 test, 11 validation, 34 training; a quarter of each class's
    each = torch.bincount(full.y_train).tolist()
    assert full.n_train == 34 and len(full.x_val) == 11
    assert torch.bincount(sub.y_train).tolist() == [max(1, round(n / 4)) for n in each]
    assert len(sub.stream) == sub.n_train < 10
    assert torch.equal(sub.x_val, full.x_val) and torch.equal(sub.x_test, full.x_test)
    kept = set(sub.stream.indices.tolist())
    assert kept <= set(full.stream.indices.tolist())
    # each kept file's label is the one the split says: positions and labels moved together
    targets = torch.as_tensor(sub.stream.plain.targets)
    assert torch.equal(targets[sub.stream.indices], sub.y_train)
    x, y = next(sub.stream.batches(4, seed=0))
    assert x.shape == (4, 3, 8, 8) and set(y.tolist()) <= {0, 1, 2}
    suite = parse(f"name: a\nseeds: [0]\ndefaults: {{model: cnn2d, dataset: {{name: "
                  f"imagefolder, root: {root}, workers: 0}}, preprocess: [{{name: subsample, "
                  f"balanced: true}}]}}\nmatrix:\n  preprocess.fraction: [0.25, 1.0]\n")
    assert len(suite.cells) == 2


def test_normalize_takes_one_value_per_channel_when_the_suite_loads(tmp_path):
    """ImageNet's three values on grey images would broadcast them into three channels."""
    root = make_folder(tmp_path / "imgs")
    grey = (f"name: a\ndefaults: {{model: cnn2d, dataset: {{name: imagefolder, root: {root}, "
            "channels: 1, mean: MEAN, std: STD}}\n")
    with pytest.raises(SuiteError, match=r"one value per channel: 1 \(channels: 1\), got 3"):
        parse(grey.replace("MEAN", "[0.485, 0.456, 0.406]").replace("STD", "[0.2, 0.2, 0.2]"))
    with pytest.raises(SuiteError, match=r"every value must be above 0; got \[0.0\]"):
        parse(grey.replace("MEAN", "[0.5]").replace("STD", "[0.0]"))
    assert parse(grey.replace("MEAN", "[0.5]").replace("STD", "[0.25]")).cells
    assert load(root, channels=1, mean=[0.5], std=[0.25]).x_test.shape[1] == 1


def test_a_cell_trains_a_torchvision_model_on_streamed_images_and_counts_its_workers(tmp_path):
    from modelopt.run.cell import run_cell
    from modelopt.run.scheduler import job

    root = make_folder(tmp_path / "imgs")
    text = f"""
name: own-images
seeds: [0]
defaults:
  dataset: {{name: imagefolder, root: {root}, image_size: 12, workers: 1, rotate: 10, hflip: true}}
  model: mobilenet_v3_small
  train: {{steps: 6, batch_size: 6, eval_every: 3, val_fraction: 0.2}}
  prune: {{name: l1_structured, amount: 0.5, finetune_steps: 2}}
"""
    (cell,) = parse(text).cells
    assert job(cell, 0, jobs=4).slots == 2  # its thread and its loader worker
    # two ranks, each with its own thread and its own loader worker
    (ranked,) = parse(text.replace("  model:", "  backend: {name: ddp, world_size: 2}\n  model:")
                      ).cells
    assert job(ranked, 0, jobs=8).slots == 4
    out = run_cell(cell, 0)
    m = out.metrics
    assert out.status == "ok" and m["final_step"] == 6 and 0 <= m["accuracy"] <= 1
    assert m["train_samples_s"] > 0 and out.figures_of["slimmed"]["params"] < 0.4 * m["params"]


def test_digits_are_written_out_as_an_image_folder(tmp_path):
    dest = tmp_path / "digits"
    r = subprocess.run([sys.executable, "-m", "modelopt", "images", "digits", str(dest),
                        "--size", "16"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    files = sorted(dest.glob("*/*.png"))
    assert len(files) == 1797 and sorted(p.name for p in dest.iterdir()) == [str(i) for i in range(10)]
    assert Image.open(files[0]).size == (16, 16)
    d = load(dest, channels=1, image_size=16)
    assert d.input_shape == (1, 16, 16) and d.num_classes == 10
