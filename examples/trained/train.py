"""Your own training, in plain PyTorch, as you already have it: torchvision's ImageFolder
with its transforms, your model, a loop; it saves model.pth and prints the test accuracy
you measured. modelopt then benchmarks compression of exactly this model (suite.yaml).

    python train.py DATA OUT/model.pth
"""

import json
import sys

import torch
from my_model import small_cnn
from torchvision import datasets, transforms

MEAN, STD = [0.1, 0.1, 0.1], [0.25, 0.25, 0.25]
TRANSFORM = transforms.Compose([transforms.Resize(36), transforms.CenterCrop(32),
                                transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def accuracy(model, loader) -> float:
    model.eval()
    right = total = 0
    with torch.no_grad():
        for x, y in loader:
            right += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return right / total


def main(data: str, out: str, epochs: int = 4) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    train = datasets.ImageFolder(f"{data}/train", TRANSFORM)
    test = datasets.ImageFolder(f"{data}/test", TRANSFORM)
    loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True)
    model = small_cnn((3, 32, 32), len(train.classes), width=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    acc = accuracy(model, torch.utils.data.DataLoader(test, batch_size=256))
    torch.save(model.state_dict(), out)
    print(json.dumps({"test_accuracy": acc, "test_images": len(test)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
