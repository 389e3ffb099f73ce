"""Quickstart: compile a torch model for the host CPU, run it, save/load it, verify it.

    python examples/quickstart.py

Every other target works the same way: change `target=` (see `anychip targets`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

import anychip


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return torch.softmax(self.head(y), dim=-1)


def main() -> None:
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.randn(1, 3, 32, 32)
    art = anychip.compile(model, target="cpu", example_inputs=(x,))
    name = art.inputs[0].name
    out = next(iter(art.run({name: x.numpy()}).values()))
    expected = model(x).detach().numpy()
    print(f"cpu output matches torch: max abs diff {np.abs(out - expected).max():.2e}")
    with tempfile.TemporaryDirectory() as tmp:
        saved = art.save(Path(tmp) / "tiny.anychip")
        again = anychip.load(saved.path)
        print("files in the artifact:", sorted(saved.manifest["files"]))
        print("reloaded output identical:",
              bool(np.array_equal(next(iter(again.run({name: x.numpy()}).values())), out)))
    print(anychip.verify(model, target="cpu", example_inputs=(x,)).summary())


if __name__ == "__main__":
    main()
