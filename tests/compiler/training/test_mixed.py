"""Mixed-precision training on cpu (compiler/training/mixed.py): fp32 master weights and
optimizer state, forward and backward in bf16/fp16, fp16 dynamic loss scaling as
torch.amp.GradScaler. The fp32 reference is torch eager (anychip's fp32 step follows it
within 1e-7 on this model, test_transformers.py)."""

from __future__ import annotations

import anychip
import numpy as np
import pytest
import torch
from anychip.compiler.errors import AnychipError
from anychip.compiler.tolerances import MIXED_TRAINING_CURVE, compare

from .torch_models import EncoderClassifier, torch_reference

STEPS = 20


def _data():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, 8, generator=gen)
    return x, torch.randint(0, 3, (4,), generator=gen)


def _model():
    torch.manual_seed(0)
    return EncoderClassifier()


@pytest.mark.slow
def test_bf16_curve_stays_within_the_mixed_tolerance_of_fp32():
    x, y = _data()
    opt = anychip.optim.AdamW(lr=1e-2)
    model = _model()
    ref, _ = torch_reference(model, opt, [(x, y)] * STEPS)
    trainer = anychip.compile_training(model, example_inputs=(x,), optimizer=opt,
                                       precision="bf16")
    report = trainer.plan["mixed"]
    assert trainer.precision == "bf16" and report["compute_dtype"] == "bfloat16"
    assert report["master_weights"] == "float32" and report["optimizer_state"] == "float32"
    assert report["ops"]["bfloat16"]["matmul"] >= 4               # the matmuls ran in bf16
    assert report["ops"]["float32"]["nn.layer_norm"] == 2         # the norms in fp32
    losses = np.array([trainer.step(x, y) for _ in range(STEPS)])
    result = compare(losses, ref, MIXED_TRAINING_CURVE["bf16"])
    assert result.passed, (result, losses, ref)
    assert result.max_abs > 0              # really reduced precision, not an fp32 rerun
    state = trainer.state_dict()
    assert all(v.dtype == np.float32 for v in state.values() if v.dtype.kind == "f")


@pytest.mark.slow
def test_fp16_curve_then_an_induced_overflow_skips_the_step_and_halves_the_scale(tmp_path):
    x, y = _data()
    opt = anychip.optim.AdamW(lr=1e-2)
    model = _model()
    ref, _ = torch_reference(model, opt, [(x, y)] * STEPS)
    trainer = anychip.compile_training(model, example_inputs=(x,), optimizer=opt,
                                       precision="fp16")
    assert trainer.plan["mixed"]["compute_dtype"] == "float16"
    assert trainer.scaler.scale == 2.0 ** 16                      # GradScaler's initial scale
    losses = np.array([trainer.step(x, y) for _ in range(STEPS)])
    result = compare(losses, ref, MIXED_TRAINING_CURVE["fp16"])
    assert result.passed and result.max_abs > 0, (result, losses, ref)
    assert trainer.steps == STEPS and trainer.scaler.skipped == 0
    # induce an overflow: loss * 2**24 overflows float16 in the backward pass
    trainer.scaler.scale = 2.0 ** 24
    before = trainer.state_dict()
    trainer.step(x, y)
    assert trainer.scaler.scale == 2.0 ** 23 and trainer.scaler.skipped == 1
    assert trainer.steps == STEPS                                  # no update
    after = trainer.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    more = [trainer.step(x, y) for _ in range(10)]                 # backs off until it fits
    assert trainer.steps > STEPS and trainer.steps + trainer.scaler.skipped == STEPS + 11
    assert all(np.isfinite(more))
    ck = trainer.save_checkpoint(tmp_path / "ck.safetensors")
    scale = trainer.scaler.scale
    trainer.scaler.update(False)
    trainer.load_checkpoint(ck)              # the scaler is part of the checkpoint
    assert trainer.scaler.scale == scale


def test_loss_scaler_follows_grad_scaler_rules():
    from anychip.compiler.training.mixed import LossScaler

    scaler = LossScaler(scale=8.0, growth_interval=2)
    scaler.update(False)
    assert scaler.scale == 4.0 and scaler.skipped == 1
    scaler.update(True)
    assert scaler.scale == 4.0
    scaler.update(True)
    assert scaler.scale == 8.0 and scaler.good_steps == 0


def test_fp16_refuses_mse_and_loss_scale_needs_fp16():
    model = torch.nn.Linear(4, 2)
    with pytest.raises(AnychipError, match="cross-entropy losses only"):
        anychip.compile_training(model, example_inputs=(torch.zeros(2, 4),), loss="mse",
                                 optimizer=anychip.optim.SGD(lr=0.1), precision="fp16")
    with pytest.raises(AnychipError, match="loss_scale"):
        anychip.compile_training(model, example_inputs=(torch.zeros(2, 4),),
                                 optimizer=anychip.optim.SGD(lr=0.1), loss_scale=8.0)
