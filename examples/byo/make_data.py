"""Writes this example's own data: a folder of images (three shapes, as PNG files in one
sub-folder per class) and a CSV table with string labels. Stands in for your data.

    python examples/byo/make_data.py DEST
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def shapes(dest: Path, per_class: int = 80, size: int = 24) -> None:
    rng = np.random.default_rng(0)
    for label in ("circle", "square", "triangle"):
        (dest / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 80, 3)))
            draw = ImageDraw.Draw(img)
            r = int(rng.integers(5, 10))
            cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
            color = tuple(int(v) for v in rng.integers(150, 256, 3))
            box = (cx - r, cy - r, cx + r, cy + r)
            if label == "circle":
                draw.ellipse(box, fill=color)
            elif label == "square":
                draw.rectangle(box, fill=color)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
            img.save(dest / label / f"{i:03d}.png")


def table(path: Path, rows: int = 600) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(rows, 6))
    score = x[:, 0] + 0.5 * x[:, 1] - x[:, 2]
    labels = np.where(score > 0.5, "high", np.where(score < -0.5, "low", "medium"))
    lines = ["age,dose,weight,bp,hr,glucose,risk"]
    lines += [",".join(f"{v:.4f}" for v in row) + f",{lab}" for row, lab in zip(x, labels)]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    dest = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/byo/data")
    shapes(dest / "shapes")
    table(dest / "patients.csv")
    print(f"wrote {dest}/shapes/<class>/*.png and {dest}/patients.csv")
