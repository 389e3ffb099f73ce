"""Seeded weights for the zoo's torch CNNs, with batch-norm statistics a trained network would
have: shared by resnet18, mobilenet_v3 and efficientnet.

He-normal weights (fan-in of one group), random biases and BN affine parameters; then the BN
running statistics are the cumulative averages of two training-mode passes over seeded random
images (torch's defaults, mean 0 and variance 1, make each BN almost an identity and let the
activation scale drift through the stages). Everything draws from `gen`, in module order.
"""

from __future__ import annotations

import torch
from torch import nn

PASSES = 2


def init_and_calibrate(model: nn.Module, gen: torch.Generator, size: int) -> nn.Module:
    """Initialise `model` in place as above; returns it in eval mode."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=gen)
                if m.bias is not None:
                    m.bias.normal_(0.0, 0.1, generator=gen)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.1, generator=gen)
                m.momentum = None          # cumulative average over the passes below
        model.train()
        for _ in range(PASSES):
            model(torch.randn(2, 3, size, size, generator=gen))
    return model.eval()
