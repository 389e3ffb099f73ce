"""Transformers train on cpu with the loss curve of torch eager: 50 steps from the same initial
weights, data and optimizer, every loss within 1e-4 (fp32). Gradients the graphs need and TVM
0.27 lacks (squeeze, strided_slice, take with 2-D ids, ...) come from training/gradients.py."""

from __future__ import annotations

import anychip
import numpy as np
import pytest
import torch

from .torch_models import (EncoderClassifier, lm_batches, tiny_llama, tiny_vit,
                           torch_reference)

STEPS = 50
LOSS_TOLERANCE = 1e-4   # absolute, per step, fp32


def _curve(trainer, data):
    return np.array([trainer.step(x.numpy(), y.numpy()) for x, y in data])


def _assert_follows_torch(name: str, losses, ref_losses) -> None:
    """Every step's loss within LOSS_TOLERANCE of torch eager's, and the loss fell."""
    worst = float(np.max(np.abs(losses - ref_losses)))
    print(f"{name}: {STEPS} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
          f"max |loss - torch| {worst:.2e}")
    assert worst <= LOSS_TOLERANCE, (losses, ref_losses)
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_transformer_encoder_layer_matches_torch_for_50_steps():
    torch.manual_seed(0)
    model = EncoderClassifier()
    gen = torch.Generator().manual_seed(3)
    data = [(torch.randn(4, 5, 8, generator=gen), torch.randint(0, 3, (4,), generator=gen))
            for _ in range(STEPS)]
    optimizer = anychip.optim.Adam(lr=3e-3, weight_decay=1e-2)
    ref_losses, _ = torch_reference(model, optimizer, data)
    trainer = anychip.compile_training(model, example_inputs=(data[0][0],),
                                       loss="cross_entropy", optimizer=optimizer)
    # x @ W^T and the weight gradients run as matmuls of transposed views, no transpose kernels
    dispatch = trainer.report["backend_report"]["dispatch"]
    assert dispatch["transposed_operands"] >= 10, dispatch
    _assert_follows_torch("encoder", _curve(trainer, data), ref_losses)


@pytest.mark.slow
def test_tiny_llama_causal_lm_matches_torch_for_50_steps():
    model = tiny_llama(vocab=32)
    data = lm_batches(batch=2, seq=6, vocab=32, steps=STEPS)
    optimizer = anychip.optim.Adam(lr=1e-2)
    ref_losses, ref_state = torch_reference(model, optimizer, data, loss="token_cross_entropy")
    trainer = anychip.compile_training(model, example_inputs=(data[0][0],),
                                       loss="token_cross_entropy", optimizer=optimizer)
    _assert_follows_torch("llama", _curve(trainer, data), ref_losses)
    state = trainer.state_dict()
    weight = "lm.model.layers.0.mlp.gate_proj.weight"
    np.testing.assert_allclose(state[weight], ref_state[weight], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_tiny_vit_image_classifier_matches_torch_for_50_steps():
    """transformers' ViT (patch conv, class token, position embeddings, layer norms, GELU) with
    AdamW and gradient clipping, as a fine-tune would run it."""
    model = tiny_vit(classes=3)
    gen = torch.Generator().manual_seed(4)
    pool = [(torch.randn(4, 3, 8, 8, generator=gen), torch.randint(0, 3, (4,), generator=gen))
            for _ in range(4)]
    data = [pool[i % len(pool)] for i in range(STEPS)]
    optimizer = anychip.optim.AdamW(lr=3e-3, weight_decay=1e-2, clip_grad_norm=1.0)
    ref_losses, _ = torch_reference(model, optimizer, data)
    trainer = anychip.compile_training(model, example_inputs=(data[0][0],),
                                       loss="cross_entropy", optimizer=optimizer)
    _assert_follows_torch("vit", _curve(trainer, data), ref_losses)
