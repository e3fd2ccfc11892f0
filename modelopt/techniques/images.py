"""Your own images: a folder of class sub-folders, as torchvision's ImageFolder reads it,
with its training split streamed (techniques/stream.py); and scikit-learn's digits written
out as such a folder, so the image path runs on real files without a download."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from modelopt.spec.registries import DATASETS
from modelopt.spec.registry import Fraction, NonNegative, NonNegativeInt, PositiveInt
from modelopt.techniques.data import Data, Split, single_samples
from modelopt.techniques.errors import DataUnavailable
from modelopt.techniques.stream import Stream

MAX_AUTO_WORKERS = 4


def auto_workers() -> int:
    """Half the machine's cores, 1 to 4: the other half trains (1 intra-op thread per
    core). Workers run decoding, so more of them than cores only queue."""
    return max(1, min(MAX_AUTO_WORKERS, (os.cpu_count() or 2) // 2))


def _workers(params: dict) -> int:
    w = params.get("workers")
    return auto_workers() if w is None else int(w)


def _classes(root: Path) -> dict[str, int]:
    """Each class folder of ROOT that holds images, sorted, with its number of images up to
    two (a folder of a million is not listed whole for every cell)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    counts = {}
    for d in sorted(root.iterdir()):
        if d.is_dir():
            # every level below, as ImageFolder reads it
            images = (f for f in d.rglob("*") if f.suffix.lower() in IMG_EXTENSIONS)
            n = sum(1 for _ in itertools.islice(images, 2))
            if n:
                counts[d.name] = n
    return counts


def _check_folder(params: dict) -> None:
    """ROOT (and TEST_ROOT) hold class sub-folders of images, the same classes in both."""
    hint = ("imagefolder reads ROOT/<class>/<image> (png, jpg, ...), one sub-folder per class; "
            "`modelopt images digits DEST` writes scikit-learn's digits in that layout")
    found = {}
    for key in ("root", "test_root"):
        if params.get(key) is None:
            continue
        root = Path(params[key]).expanduser()
        if not root.is_dir():
            raise DataUnavailable(f"imagefolder: {key} {root.resolve()} is not a folder. {hint}")
        counts = _classes(root)
        found[key] = list(counts)
        if len(found[key]) < 2:
            raise DataUnavailable(f"imagefolder: {key} {root.resolve()} has "
                                  f"{len(found[key])} class folder(s) with images; need 2 or "
                                  f"more. {hint}")
        lonely = [name for name, n in counts.items() if n == 1]
        if key == "root" and params.get("test_root") is None and lonely:
            raise ValueError(single_samples(
                "imagefolder", f"the class folders of {root.resolve()}", found[key], lonely,
                "add images there, remove those folders, or give a test_root"))
    if "test_root" in found and found["test_root"] != found["root"]:
        raise ValueError(f"imagefolder: test_root's classes {found['test_root']} differ from "
                         f"root's {found['root']}")
    classes = params.get("classes")
    if classes is not None and "root" in found and sorted(classes) != found["root"]:
        raise ValueError(f"imagefolder: classes {list(classes)} are not the class folders of "
                         f"{params['root']}: {found['root']}")
    _check_normalize(params.get("mean"), params.get("std"), params.get("channels", 3))


def _check_normalize(mean, std, channels: int) -> None:
    """Normalize takes a value per channel; three values on one channel would broadcast it
    into three (and a model built for one would not fit)."""
    if (mean is None) != (std is None):
        raise ValueError("imagefolder: give mean and std together, one value per channel")
    if mean is not None and not len(mean) == len(std) == channels:
        raise ValueError(f"imagefolder: mean and std take one value per channel: {channels} "
                         f"(channels: {channels}), got {len(mean)} and {len(std)}")
    if std is not None and not all(v > 0 for v in std):
        raise ValueError(f"imagefolder: std divides each channel, so every value must be "
                         f"above 0; got {list(std)}")


def _transforms(size: int, channels: int, rotate: float, crop_scale: float, hflip: bool,
                resize: int | None = None, mean=None, std=None):
    """(training, evaluation) transforms, torchvision.transforms.v2; both end in float32
    images of `channels` x size x size, in [0, 1] or normalised by `mean` / `std`. With
    `resize`, the torchvision recipe a model was trained with: the shorter side resized to
    `resize`, then the centre `size` x `size` crop, both on the PIL image as
    torchvision.transforms does them (so the pixels are the user's own)."""
    from torchvision.transforms import v2

    head = [v2.ToImage()] + ([v2.Grayscale(1)] if channels == 1 else [])
    tail = [v2.ToDtype(torch.float32, scale=True)]
    if mean is not None:
        tail.append(v2.Normalize(list(mean), list(std)))
    if resize is not None:  # on the PIL image, before anything else
        first, fit = [v2.Resize(resize), v2.CenterCrop(size)], []
    else:
        first, fit = [], [v2.Resize((size, size), antialias=True)]
    plain = v2.Compose(first + head + fit + tail)
    aug = ([v2.RandomResizedCrop(size, scale=(crop_scale, 1.0), antialias=True)]
           if crop_scale < 1 else list(fit))
    if rotate:
        aug.append(v2.RandomRotation(rotate))
    if hflip:
        aug.append(v2.RandomHorizontalFlip())
    return v2.Compose(first + head + aug + tail), plain


@DATASETS.register("imagefolder", task="classification", input="image",
                   preflight=_check_folder, workers=_workers)
def imagefolder(seed: int, /, root: str, test_root: str | None = None,
                image_size: PositiveInt = 32, channels: Literal[1, 3] = 3,
                rotate: NonNegative = 0.0, crop_scale: Fraction = 1.0, hflip: bool = False,
                test_fraction: Split = 0.2, split_seed: int = 0,
                workers: NonNegativeInt | None = None, resize: PositiveInt | None = None,
                mean: list[float] | None = None, std: list[float] | None = None,
                classes: list[str] | None = None) -> Data:
    """Images in ROOT/<class>/ (torchvision's ImageFolder layout), classes from the folder
    names. The test split is TEST_ROOT if given, else a stratified `test_fraction` of ROOT
    (fixed by split_seed). The training split streams through a DataLoader with `workers`
    processes (default: half the cores, 1-4) that decode and augment: `rotate` (degrees,
    RandomRotation), `crop_scale` (RandomResizedCrop's smallest area; 1: plain resize),
    `hflip`. Validation and test are decoded once at `image_size`, unaugmented, in memory.
    A model trained elsewhere gets its own pipeline: `resize` (shorter side, then the
    centre `image_size` crop), `mean` / `std` (Normalize), and `classes`, the class folder
    names in the order of the indices it was trained with (default: sorted, as ImageFolder)."""
    from sklearn.model_selection import train_test_split

    _check_folder({"root": root, "test_root": test_root})
    workers = _workers({"workers": workers})
    _check_normalize(mean, std, channels)
    train_tf, plain_tf = _transforms(image_size, channels, rotate, crop_scale, hflip, resize,
                                     mean, std)
    root = str(Path(root).expanduser())
    augmented, plain = _folder(root, train_tf, classes), _folder(root, plain_tf, classes)
    labels = torch.as_tensor(plain.targets)
    if test_root is None:
        train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=test_fraction,
                                               random_state=split_seed, stratify=labels.numpy())
        train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
        test = Stream(plain, plain, test_idx, workers)
    else:
        test_set = _folder(str(Path(test_root).expanduser()), plain_tf, classes)
        test = Stream(test_set, test_set, torch.arange(len(test_set)), workers)
        train_idx = torch.arange(len(labels))
    x_test = test.decode()
    y_test = torch.as_tensor(test.plain.targets)[test.indices]
    empty = torch.zeros(0, *x_test.shape[1:])
    return Data(empty, labels[train_idx], empty, labels[:0], x_test, y_test,
                len(plain.classes), name="imagefolder",
                stream=Stream(augmented, plain, train_idx, workers),
                info={"class_names": list(plain.classes)})  # index order: plots name them


def _folder(root: str, transform, classes: list[str] | None):
    """torchvision's ImageFolder, its class -> index mapping in `classes`' order where given
    (the indices a model was trained with), else sorted as ImageFolder sorts."""
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(root, transform)
    if classes is None:
        return folder
    if sorted(classes) != folder.classes:
        raise ValueError(f"imagefolder: classes {classes} are not the class folders of "
                         f"{root}: {folder.classes}")
    index = {c: i for i, c in enumerate(classes)}
    old = folder.classes
    folder.samples = [(p, index[old[t]]) for p, t in folder.samples]
    folder.imgs, folder.targets = folder.samples, [t for _, t in folder.samples]
    folder.classes, folder.class_to_idx = list(classes), index
    return folder


def write_digits(dest: str | Path, size: int = 32) -> int:
    """scikit-learn's 1,797 digits as DEST/<digit>/<n>.png, grayscale, upscaled from 8x8 to
    size x size (bilinear). Returns the number of files written."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    dest = Path(dest)
    for i, (img, label) in enumerate(zip(d.images, d.target)):
        folder = dest / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = Image.fromarray((img * 255 / 16).astype(np.uint8), mode="L")
        pixels.resize((size, size), Image.BILINEAR).save(folder / f"{i:04d}.png")
    return len(d.target)
