"""zoo:mlp: a small multilayer perceptron, batch 4, 64 -> 128 -> 128 -> 10 with ReLU."""

from __future__ import annotations

import torch
from torch import nn

DESCRIPTION = "MLP 64-128-128-10 with ReLU (torch), batch 4 -> 10 logits"
INPUT_NAMES = ["x"]
OUTPUT_NAMES = ["logits"]
INPUT_RANGES: dict[str, tuple[int, int]] = {}
SEED = 1


class MLP(nn.Module):
    def __init__(self, sizes=(64, 128, 128, 10)):
        super().__init__()
        layers = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


def build_module() -> nn.Module:
    """He-initialised weights, small random biases (so a dropped bias shows), seeded."""
    gen = torch.Generator().manual_seed(SEED)
    model = MLP()
    with torch.no_grad():
        for layer in model.layers:
            if isinstance(layer, nn.Linear):
                layer.weight.normal_(0.0, (2.0 / layer.in_features) ** 0.5, generator=gen)
                layer.bias.normal_(0.0, 0.1, generator=gen)
    return model.eval()


def example_inputs() -> tuple[torch.Tensor, ...]:
    return (torch.randn(4, 64, generator=torch.Generator().manual_seed(SEED + 1)),)
