"""zoo:resnet18: a ResNet-18-style CNN (BasicBlocks [2, 2, 2, 2], BatchNorm), defined here.

Input 1x3x224x224: the ImageNet size is cheap enough here (TVM 0.27 relax.build for LLVM in
1.1 s, one unscheduled run in 1.4 s on 2 cores, against 26 ms for ONNX Runtime), so no smaller
size was needed.

Batch-norm statistics are not torch's defaults (mean 0, variance 1, an almost-identity BN):
they are the running averages of a few training-mode forward passes over seeded random images,
as a trained network's would be, so activations keep a sane scale through the residual stages;
gamma and beta are random. Weights are He-initialised; everything is seeded. The dynamo
exporter folds each eval-mode BatchNorm into the preceding Conv's weight and bias.
"""

from __future__ import annotations

import torch
from torch import nn

from .cnn_init import init_and_calibrate

SIZE = 224
NUM_CLASSES = 1000
DESCRIPTION = (f"ResNet-18 (torch, BasicBlocks [2,2,2,2], BatchNorm), 1x3x{SIZE}x{SIZE} "
               f"-> 1000 logits")
INPUT_NAMES = ["image"]
OUTPUT_NAMES = ["logits"]
INPUT_RANGES: dict[str, tuple[int, int]] = {}
SEED = 18


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES, blocks=(2, 2, 2, 2)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        stages, c_in = [], 64
        for i, n in enumerate(blocks):
            c_out = 64 * 2**i
            for j in range(n):
                stages.append(BasicBlock(c_in, c_out, 2 if (j == 0 and i > 0) else 1))
                c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def build_module() -> nn.Module:
    return init_and_calibrate(ResNet18(), torch.Generator().manual_seed(SEED), SIZE)


def example_inputs() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(SEED + 1)
    return (torch.randn(1, 3, SIZE, SIZE, generator=gen),)
