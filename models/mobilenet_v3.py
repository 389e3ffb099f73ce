"""zoo:mobilenet_v3: a MobileNetV3-Large-style CNN (inverted residuals: 1x1 expand, depthwise
kxk, squeeze-excite with a hard-sigmoid gate, 1x1 project; ReLU and HardSwish; BatchNorm),
defined here.

The MobileNetV3-Large block table (kernel, expanded and output channels, SE, activation,
stride) at 224x224, 1000 classes: 15 blocks, ~0.22 GFLOP. No torchvision (it does not import
with the CPU torch); dropout is training-only and left out. Weights are seeded He-normal and
batch-norm statistics come from training-mode passes over random images, as in models/resnet.py
(same recipe as models/efficientnet.py, repeated here so each file alone keys the model cache).
HardSwish and HardSigmoid export as the ONNX ops of those names.
"""

from __future__ import annotations

import torch
from torch import nn

from .cnn_init import init_and_calibrate

SIZE = 224
NUM_CLASSES = 1000
DESCRIPTION = (f"MobileNetV3-Large-style (torch, 15 inverted residuals: depthwise, "
               f"squeeze-excite, HardSwish), 1x3x{SIZE}x{SIZE} -> 1000 logits")
INPUT_NAMES = ["image"]
OUTPUT_NAMES = ["logits"]
INPUT_RANGES: dict[str, tuple[int, int]] = {}
SEED = 30
# kernel, expanded channels, output channels, squeeze-excite, HardSwish (else ReLU), stride
BLOCKS = ((3, 16, 16, False, False, 1), (3, 64, 24, False, False, 2),
          (3, 72, 24, False, False, 1), (5, 72, 40, True, False, 2),
          (5, 120, 40, True, False, 1), (5, 120, 40, True, False, 1),
          (3, 240, 80, False, True, 2), (3, 200, 80, False, True, 1),
          (3, 184, 80, False, True, 1), (3, 184, 80, False, True, 1),
          (3, 480, 112, True, True, 1), (3, 672, 112, True, True, 1),
          (5, 672, 160, True, True, 2), (5, 960, 160, True, True, 1),
          (5, 960, 160, True, True, 1))


def _divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def conv_bn_act(c_in: int, c_out: int, k: int = 1, stride: int = 1, groups: int = 1,
                act: type[nn.Module] | None = nn.Hardswish) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        squeezed = _divisible(channels // 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.relu = nn.ReLU()
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, k: int, hidden: int, c_out: int, se: bool, hswish: bool,
                 stride: int):
        super().__init__()
        act = nn.Hardswish if hswish else nn.ReLU
        layers = [conv_bn_act(c_in, hidden, act=act)] if hidden != c_in else []
        layers.append(conv_bn_act(hidden, hidden, k, stride, groups=hidden, act=act))
        layers += [SqueezeExcite(hidden)] if se else []
        layers.append(conv_bn_act(hidden, c_out, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV3Large(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        blocks, c_in = [conv_bn_act(3, 16, 3, 2)], 16
        for k, hidden, c_out, se, hswish, stride in BLOCKS:
            blocks.append(InvertedResidual(c_in, k, hidden, c_out, se, hswish, stride))
            c_in = c_out
        blocks.append(conv_bn_act(c_in, 960))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Linear(960, 1280), nn.Hardswish(),
                                  nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def build_module() -> nn.Module:
    return init_and_calibrate(MobileNetV3Large(), torch.Generator().manual_seed(SEED), SIZE)


def example_inputs() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(SEED + 1)
    return (torch.randn(1, 3, SIZE, SIZE, generator=gen),)
