"""The trained model suites/trained.yaml starts from, made as a user's own training would
be: modelopt's built-in `cnn2d` (16 channels, batch norm) trained on scikit-learn's digits
in a plain PyTorch loop, outside modelopt's harness, on the training split the suite sees
(the test split is never touched). It writes digits_cnn2d.pth (a state_dict) beside itself
and prints the test accuracy it measured, which the suite's `none` row reproduces.

    .venv/bin/python suites/weights/train_digits.py
"""

import json
from pathlib import Path

import torch

from modelopt.techniques.data import digits
from modelopt.techniques.models import build

MODEL = {"name": "cnn2d", "channels": 16, "batchnorm": True}
OUT = Path(__file__).with_name("digits_cnn2d.pth")


def main(epochs: int = 30) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = digits(0)  # the suite's split: test_fraction 0.2, split_seed 0
    model = build(MODEL, tuple(data.x_train.shape[1:]), 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = torch.utils.data.TensorDataset(data.x_train, data.y_train)
    for _ in range(epochs):
        model.train()
        for x, y in torch.utils.data.DataLoader(train, batch_size=64, shuffle=True):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        right = int((model(data.x_test).argmax(1) == data.y_test).sum())
    torch.save(model.state_dict(), OUT)
    print(json.dumps({"test_accuracy": right / len(data.y_test), "test_images":
                      len(data.y_test), "epochs": epochs, "weights": str(OUT)}))


if __name__ == "__main__":
    main()
