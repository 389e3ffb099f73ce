"""Dropout with p > 0 in the compiled train step: a seeded counter-based mask
(compiler/training/dropout.py). Torch's masks come from another generator, so curves cannot be
compared with torch's own dropout: the compiled masks are checked against the same draw in
numpy, the draw's statistics against 1 - p, and torch fed those same masks against the
compiled curve."""

from __future__ import annotations

import copy

import anychip
import numpy as np
import pytest
import torch
from anychip.compiler.training.dropout import keep_mask
from torch import nn

P = 0.25
N = 4096


class ScaledDropout(nn.Module):
    """y = dropout(x * w): the gradient of w shows the mask element by element."""

    def __init__(self, n: int = N, p: float = P):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(0.5, 1.5, n))
        self.drop = nn.Dropout(p)

    def forward(self, x):
        return self.drop(x * self.w)


def _sigmas(kept: np.ndarray, p: float) -> float:
    return abs(kept.mean() - (1 - p)) / np.sqrt(p * (1 - p) / kept.size)


def test_numpy_draw_keeps_one_minus_p_and_depends_on_every_key_part():
    masks = [keep_mask((1 << 18,), P, seed, counter, node)
             for seed, counter, node in [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]]
    for mask in masks:
        assert _sigmas(mask, P) < 5
    for other in masks[1:]:     # independent masks agree on P^2 + (1-P)^2 of the elements
        assert abs((masks[0] == other).mean() - (P * P + (1 - P) ** 2)) < 0.01
    assert _sigmas(keep_mask((1 << 18,), 0.9, 3, 7, 0), 0.9) < 5


@pytest.fixture(scope="module")
def trainer():
    """One compiled step (SGD with lr 0: the parameters stay, only the masks change)."""
    x = torch.randn(2, N, generator=torch.Generator().manual_seed(0))
    return anychip.compile_training(ScaledDropout(), example_inputs=(x,), loss="mse",
                                    optimizer=anychip.optim.SGD(lr=0.0), seed=7), x


@pytest.mark.slow
def test_compiled_mask_is_the_numpy_draw_and_the_gradient_is_mask_times_scale(trainer):
    trainer, x = trainer
    assert trainer.plan["dropout"] == {"seed": 7, "rates": [P]}
    xs, w = x.numpy(), np.linspace(0.5, 1.5, N, dtype=np.float32)
    y = np.zeros((2, N), np.float32)
    start = trainer.draws
    loss, _, grads = trainer._forward_backward(xs, y)
    mask = keep_mask((2, N), P, 7, start, 0).astype(np.float32) / np.float32(1 - P)
    out = xs * w * mask
    assert loss.numpy() == pytest.approx(np.mean(out.astype(np.float64) ** 2), rel=1e-5)
    # L = mean(out^2) over 2N: dL/dw = sum_b 2 / (2N) * out * mask * x
    expected = (2.0 / (2 * N) * out * mask * xs).sum(0)
    np.testing.assert_allclose(grads[0].numpy(), expected, rtol=1e-5, atol=1e-9)
    kept = mask != 0
    assert _sigmas(kept, P) < 5
    # evaluation: the identity
    ev = trainer.evaluate(xs, y)
    assert ev == pytest.approx(np.mean((xs * w).astype(np.float64) ** 2), rel=1e-5)


@pytest.mark.slow
def test_same_seed_bit_identical_other_seed_differs_each_step_fresh(trainer, tmp_path):
    trainer, x = trainer
    y = np.zeros((2, N), np.float32)
    ck = trainer.save_checkpoint(tmp_path / "start.safetensors")
    first = [trainer.step(x, y) for _ in range(4)]
    assert len(set(first)) == 4                    # a fresh mask every step (same x, same w)
    trainer.load_checkpoint(ck)
    again = [trainer.step(x, y) for _ in range(4)]
    assert again == first                          # bit-identical
    trainer.load_checkpoint(ck)
    trainer.plan["dropout"]["seed"] = 8            # the seed is an input of the step
    try:
        other = [trainer.step(x, y) for _ in range(4)]
    finally:
        trainer.plan["dropout"]["seed"] = 7
    assert all(a != b for a, b in zip(first, other))
    # a saved trainer keeps the seed and the draw counter: it continues with the same masks
    trainer.load_checkpoint(ck)
    trainer.step(x, y)
    loaded = anychip.load_training(trainer.save(tmp_path / "saved"))
    assert loaded.draws == trainer.draws and loaded.dropout_seed == 7
    assert [loaded.step(x, y) for _ in range(3)] == first[1:]
    # the losses are statistically sane: E[loss] = mean((x w)^2) / (1 - p)
    plain = float(np.mean((x.numpy() * np.linspace(0.5, 1.5, N)) ** 2))
    assert np.mean(first) == pytest.approx(plain / (1 - P), rel=0.05)


@pytest.mark.slow
def test_two_compiles_with_one_seed_give_identical_losses():
    """A dropout MLP trained from scratch twice (two compiles, seed 3) and once with seed 4."""
    def run(seed):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
        gen = torch.Generator().manual_seed(1)
        x, y = torch.randn(4, 8, generator=gen), torch.randint(0, 3, (4,), generator=gen)
        trainer = anychip.compile_training(model, example_inputs=(x,),
                                           optimizer=anychip.optim.SGD(lr=0.1), seed=seed)
        return [trainer.step(x, y) for _ in range(5)]

    a, b, c = run(3), run(3), run(4)
    assert a == b and a != c


@pytest.mark.slow
def test_torch_with_the_same_masks_matches_the_compiled_curve(runnable):
    """torch's own masks differ, but torch fed anychip's masks (keep_mask) must give the same
    curve: the dropout step is forward, gradient and update of x * mask / (1 - p)."""
    p, seed = 0.5, 3
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(p), nn.Linear(16, 3))
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 8, generator=gen), torch.randint(0, 3, (4,), generator=gen)
    opt = anychip.optim.SGD(lr=0.1, momentum=0.9)
    trainer = anychip.compile_training(model, example_inputs=(x,), optimizer=opt, seed=seed,
                                       target=runnable)
    losses = [trainer.step(x, y) for _ in range(6)]
    ref = copy.deepcopy(model)
    topt = opt.to_torch(ref.parameters())
    expected = []
    for step in range(6):
        mask = torch.from_numpy(keep_mask((4, 16), p, seed, step, 0).astype(np.float32))
        topt.zero_grad()
        hidden = torch.relu(ref[0](x)) * mask / (1 - p)
        loss = nn.functional.cross_entropy(ref[3](hidden), y)
        loss.backward()
        topt.step()
        expected.append(loss.item())
    np.testing.assert_allclose(losses, expected, rtol=1e-5, atol=1e-6)
