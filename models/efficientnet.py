"""zoo:efficientnet: an EfficientNet-B0-style CNN (MBConv blocks: 1x1 expand, depthwise kxk,
squeeze-excite with a sigmoid gate, 1x1 project; SiLU; BatchNorm), defined here.

The B0 stage table (expand ratio, kernel, stride, channels, repeats) at 224x224, 1000 classes:
16 MBConv blocks, 81 convolutions, ~0.39 GFLOP. No torchvision (it does not import with the
CPU torch); stochastic depth and dropout are training-only and left out.

Weights are He-initialised (fan-in per group, so depthwise kernels are not tiny), seeded;
batch-norm statistics are the running averages of a few training-mode passes over seeded random
images, as in models/resnet.py, so activations keep a sane scale through the 16 blocks. The
dynamo exporter folds each eval-mode BatchNorm into its Conv; SiLU exports as Sigmoid and Mul.
"""

from __future__ import annotations

import torch
from torch import nn

from .cnn_init import init_and_calibrate

SIZE = 224
NUM_CLASSES = 1000
DESCRIPTION = (f"EfficientNet-B0-style (torch, 16 MBConv blocks: depthwise, squeeze-excite, "
               f"SiLU), 1x3x{SIZE}x{SIZE} -> 1000 logits")
INPUT_NAMES = ["image"]
OUTPUT_NAMES = ["logits"]
INPUT_RANGES: dict[str, tuple[int, int]] = {}
SEED = 20
# expand ratio, kernel, stride, output channels, repeats (EfficientNet-B0)
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))


def conv_bn_act(c_in: int, c_out: int, k: int = 1, stride: int = 1, groups: int = 1,
                act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, nn.SiLU()) if act else nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.act = nn.SiLU()

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(self.pool(x)))))


class MBConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, expand: int, k: int, stride: int):
        super().__init__()
        hidden = c_in * expand
        layers = [conv_bn_act(c_in, hidden)] if expand != 1 else []
        layers += [conv_bn_act(hidden, hidden, k, stride, groups=hidden),
                   SqueezeExcite(hidden, max(1, c_in // 4)),
                   conv_bn_act(hidden, c_out, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class EfficientNetB0(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        blocks, c_in = [conv_bn_act(3, 32, 3, 2)], 32
        for expand, k, stride, c_out, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(c_in, c_out, expand, k, stride if i == 0 else 1))
                c_in = c_out
        blocks.append(conv_bn_act(c_in, 1280))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1280, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def build_module() -> nn.Module:
    return init_and_calibrate(EfficientNetB0(), torch.Generator().manual_seed(SEED), SIZE)


def example_inputs() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(SEED + 1)
    return (torch.randn(1, 3, SIZE, SIZE, generator=gen),)
