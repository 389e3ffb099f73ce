"""Train one small CNN on the host CPU and on the simulated Ascend 910B; compare the curves.

    python examples/train_anywhere.py [--targets cpu,ascend-910b] [--epochs 3]

The same torch module is compiled into a train step per target (ONNX -> Relax, loss appended,
gradient by TVM, SGD with momentum inside the step) and fed the same synthetic batches; the
script prints the loss curves side by side, torch's own curve as the reference, and the largest
difference. A target that cannot run here is reported with the reason and left out.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from torch import nn

import anychip
from anychip.compiler.errors import AnychipError


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def synthetic_data(n: int = 128, classes: int = 4, seed: int = 0):
    """Images whose class is the brightest of four quadrants, plus noise: learnable, seeded."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.standard_normal((n, 3, 8, 8)).astype(np.float32) * 0.5
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 1.0
    return x, y.astype(np.int64)


def batches(x, y, batch: int, epochs: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(len(x) // batch):
            idx = order[i * batch:(i + 1) * batch]
            yield x[idx], y[idx]


def torch_curve(model, optimizer, data) -> list[float]:
    ref = copy.deepcopy(model).train()
    opt = optimizer.to_torch(ref.parameters())
    losses = []
    for xb, yb in data:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(ref(torch.from_numpy(xb)), torch.from_numpy(yb))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="cpu,ascend-910b")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = SmallCNN()
    x, y = synthetic_data()
    data = list(batches(x, y, args.batch_size, args.epochs))
    optimizer = anychip.optim.SGD(lr=0.05, momentum=0.9)
    curves = {"torch": torch_curve(model, optimizer, data)}
    for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
        try:
            example = (torch.from_numpy(data[0][0]),)
            trainer = anychip.compile_training(model, example_inputs=example,
                                               loss="cross_entropy", optimizer=optimizer,
                                               target=target)
            print(f"{trainer.describe()}; compiled in {trainer.report['compile_s']:.1f} s")
            curves[target] = [trainer.step(xb, yb) for xb, yb in data]
        except AnychipError as exc:  # NotExecutable included: say why and go on
            print(f"{target}: skipped: {exc}")

    names = list(curves)
    print("\nstep  " + "  ".join(f"{n:>12}" for n in names))
    for step in range(len(data)):
        print(f"{step + 1:4d}  " + "  ".join(f"{curves[n][step]:12.6f}" for n in names))
    compiled = [n for n in names if n != "torch"]
    for name in compiled:
        diff = np.max(np.abs(np.array(curves[name]) - np.array(curves["torch"])))
        print(f"largest |{name} - torch| over the curve: {diff:.3g}")
    if len(compiled) >= 2:
        a, b = compiled[:2]
        diff = np.max(np.abs(np.array(curves[a]) - np.array(curves[b])))
        print(f"largest |{a} - {b}| over the curve: {diff:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
