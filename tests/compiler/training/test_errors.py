"""Clear one-line errors for what training does not support, before anything is compiled."""

from __future__ import annotations

import anychip
import pytest
import torch
from anychip.compiler.errors import AnychipError
from torch import nn

from .torch_models import make_model

SGD = anychip.optim.SGD(lr=0.1)


def _single_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_unknown_loss_lists_the_supported_ones():
    model, shape, _ = make_model("mlp")
    with pytest.raises(AnychipError) as exc:
        anychip.compile_training(model, example_inputs=(torch.zeros(shape),), loss="hinge",
                                 optimizer=SGD)
    assert "unknown loss 'hinge'" in _single_line(exc) and "cross_entropy, mse" in str(exc.value)


def test_dropout_p1_is_refused():
    """p = 1 would scale by 1/(1-p): refused (p > 0 trains with a seeded mask, test_dropout)."""
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(1.0), nn.Linear(8, 2))
    with pytest.raises(AnychipError) as exc:
        anychip.compile_training(model, example_inputs=(torch.zeros(2, 4),), optimizer=SGD)
    text = _single_line(exc)
    assert "Dropout" in text and "p=1" in text and "0 <= p < 1" in text


class _NoGradient(nn.Module):
    """Two operators without a gradient (ReduceMax, ReduceProd) behind trainable layers."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = self.a(x)
        return self.b(h - h.amax(-1, keepdim=True) + h.prod(-1, keepdim=True))


def test_every_operator_without_a_gradient_is_listed_with_its_nodes():
    with pytest.raises(AnychipError) as exc:
        anychip.compile_training(_NoGradient(), example_inputs=(torch.zeros(2, 4),),
                                 optimizer=SGD)
    text = _single_line(exc)
    assert "no gradient for 2 operators" in text
    assert "relax.max (1 use; ONNX ReduceMax nodes '/ReduceMax')" in text
    assert "relax.prod (1 use; ONNX ReduceProd nodes '/ReduceProd')" in text


def test_batchnorm_without_running_stats_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(AnychipError) as exc:
        anychip.compile_training(model, example_inputs=(torch.zeros(2, 3, 5, 5),),
                                 loss="mse", optimizer=SGD)
    assert "track_running_stats=False" in _single_line(exc)


@pytest.mark.parametrize("bad", [dict(lr=-1.0), dict(lr=0.1, momentum=-0.5)])
def test_optimizer_arguments_are_checked(bad):
    with pytest.raises(AnychipError, match="must be (a finite number )?>= 0"):
        anychip.optim.SGD(**bad)
    with pytest.raises(AnychipError, match=r"betas\[1\] must be in \[0, 1\)"):
        anychip.optim.Adam(lr=0.1, betas=(0.9, 1.0))


def test_missing_optimizer_and_unknown_target():
    model, shape, _ = make_model("mlp")
    with pytest.raises(AnychipError, match="optimizer=anychip.optim.SGD"):
        anychip.compile_training(model, example_inputs=(torch.zeros(shape),))
    with pytest.raises(AnychipError, match="unknown target 'no-such-chip'"):
        anychip.compile_training(model, example_inputs=(torch.zeros(shape),), optimizer=SGD,
                                 target="no-such-chip")


def test_bad_batches_are_user_errors():
    model, shape, _ = make_model("mlp")
    trainer = anychip.compile_training(model, example_inputs=(torch.zeros(shape),),
                                       optimizer=SGD)
    x = torch.zeros(shape)
    with pytest.raises(AnychipError, match="out of range: the model has 5 classes"):
        trainer.step(x, torch.full((shape[0],), 5))
    with pytest.raises(AnychipError, match="must be float32"):
        trainer.step(x.double(), torch.zeros(shape[0], dtype=torch.int64))
    with pytest.raises(AnychipError, match="one class index per example"):
        trainer.step(x, torch.zeros(shape[0] + 1, dtype=torch.int64))
    assert trainer.steps == 0
