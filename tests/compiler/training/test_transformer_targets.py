"""The transformer train step on other targets: simulated on ascend-910b with the loss curve of
torch eager, and compiled (only: no device here) for one profile of each GPU family."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anychip
from anychip.compiler import registry
from anychip.compiler.backend import Mode
from anychip.compiler.errors import NotExecutable

from .torch_models import EncoderClassifier, lm_batches, tiny_llama, torch_reference

STEPS = 50


def _encoder_data(steps):
    gen = torch.Generator().manual_seed(3)
    return [(torch.randn(4, 5, 8, generator=gen), torch.randint(0, 3, (4,), generator=gen))
            for _ in range(steps)]


@pytest.mark.slow
def test_encoder_on_simulated_ascend_910b_follows_torch():
    from anychip.compiler.pytest_plugin import require_runnable

    require_runnable("ascend-910b")
    torch.manual_seed(0)
    model = EncoderClassifier()
    data = _encoder_data(STEPS)
    optimizer = anychip.optim.AdamW(lr=3e-3)
    ref_losses, _ = torch_reference(model, optimizer, data)
    trainer = anychip.compile_training(model, example_inputs=(data[0][0],),
                                       optimizer=optimizer, target="ascend-910b")
    assert trainer.execution.mode is Mode.SIMULATES
    losses = np.array([trainer.step(x.numpy(), y.numpy()) for x, y in data])
    worst = float(np.max(np.abs(losses - ref_losses)))
    print(f"ascend-910b ({trainer.precision}): max |loss - torch| {worst:.2e} over {STEPS}")
    # 910B trains in float32 (ATC's must_keep_origin_dtype): the fp32 bound applies
    assert trainer.precision == "fp32"
    assert worst <= 1e-4, (losses, ref_losses)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["nvidia-h100", "hygon-k100", "biren-br104"])
def test_encoder_train_step_compiles_for_each_gpu_family(target):
    profile = registry.get_profile(target)
    execution = registry.get_backend(profile).execution(profile)
    if execution.mode is Mode.UNAVAILABLE:
        pytest.skip(f"{target} cannot compile here: {execution.why}")
    torch.manual_seed(0)
    x, y = _encoder_data(1)[0]
    trainer = anychip.compile_training(EncoderClassifier(), example_inputs=(x,),
                                       optimizer=anychip.optim.AdamW(lr=3e-3, clip_grad_norm=1.0),
                                       target=target)
    assert trainer.report["built_for"] == target
    if execution.mode is Mode.COMPILES_ONLY:
        assert "compiled only" in trainer.describe()
        with pytest.raises(NotExecutable, match="compiled but cannot run here"):
            trainer.step(x, y)


@pytest.mark.slow
def test_tiny_llama_on_simulated_ascend_910b_follows_torch():
    """The transformers causal LM (RMSNorm, rotary embeddings, SwiGLU, grouped-query attention,
    token-level loss with an ignore index) on the simulated 910B, 50 steps against torch."""
    from anychip.compiler.pytest_plugin import require_runnable

    require_runnable("ascend-910b")
    model = tiny_llama(vocab=32)
    data = lm_batches(batch=2, seq=6, vocab=32, steps=STEPS)
    optimizer = anychip.optim.AdamW(lr=1e-2)
    ref_losses, _ = torch_reference(model, optimizer, data, loss="token_cross_entropy")
    trainer = anychip.compile_training(model, example_inputs=(data[0][0],),
                                       loss="token_cross_entropy", optimizer=optimizer,
                                       target="ascend-910b")
    assert trainer.execution.mode is Mode.SIMULATES
    losses = np.array([trainer.step(x.numpy(), y.numpy()) for x, y in data])
    worst = float(np.max(np.abs(losses - ref_losses)))
    print(f"llama on ascend-910b ({trainer.precision}): max |loss - torch| {worst:.2e}")
    assert trainer.precision == "fp32"   # 910B trains in float32: the fp32 bound applies
    assert worst <= 1e-4, (losses, ref_losses)
    assert losses[-1] < losses[0]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["nvidia-h100", "hygon-k100", "biren-br104"])
def test_tiny_llama_train_step_compiles_for_each_gpu_family(target):
    profile = registry.get_profile(target)
    execution = registry.get_backend(profile).execution(profile)
    if execution.mode is Mode.UNAVAILABLE:
        pytest.skip(f"{target} cannot compile here: {execution.why}")
    ids, labels = lm_batches(batch=2, seq=6, vocab=32, steps=1)[0]
    trainer = anychip.compile_training(tiny_llama(vocab=32), example_inputs=(ids,),
                                       loss="token_cross_entropy",
                                       optimizer=anychip.optim.AdamW(lr=1e-2,
                                                                     clip_grad_norm=1.0),
                                       target=target)
    assert trainer.report["built_for"] == target
    if execution.mode is Mode.COMPILES_ONLY:
        with pytest.raises(NotExecutable, match="compiled but cannot run here"):
            trainer.step(ids.numpy(), labels.numpy())
