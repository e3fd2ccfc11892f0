"""Stands in for your own images: scikit-learn's digits as PNG files, DEST/train/<class>/
and DEST/test/<class>/, classes named zero ... nine (so their sorted order, which
torchvision's ImageFolder uses for the labels, is not the digits' order)."""

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def main(dest: str, size: int = 40) -> None:
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    for n, i in enumerate(order):
        split = "test" if n % 5 == 0 else "train"
        folder = Path(dest) / split / NAMES[d.target[i]]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8), mode="L")
        pixels.resize((size, size), Image.BILINEAR).save(folder / f"{i:04d}.png")


if __name__ == "__main__":
    main(sys.argv[1])
