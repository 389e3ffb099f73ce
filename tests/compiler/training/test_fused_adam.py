"""Adam/AdamW's per-parameter update as one kernel on cpu (optim._adam_kernel): the optimizer
function calls one `adam_update` kernel per parameter instead of Relax operators, and the
parameters and moments it produces follow torch as the operator version does."""

from __future__ import annotations

import copy

import anychip
import numpy as np
import pytest
import torch
from anychip.compiler.training import optim
from torch import nn

from .torch_models import MLP

SHAPE, CLASSES = (8, 16), 5


def _optimizer_calls(fused: bool) -> list[str]:
    from tvm import relax

    from anychip.compiler.training.backbone import build_backbone
    from anychip.compiler.training.graph import training_graph
    from anychip.compiler.training.step import OPTIMIZER, setup_trainer

    torch.manual_seed(0)
    graph = training_graph(MLP(), (torch.zeros(SHAPE),), None)
    mod, _, _, _ = setup_trainer(build_backbone(graph), "cross_entropy",
                                 anychip.optim.AdamW(lr=1e-2), "mlp", fused)
    calls = []

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and hasattr(expr.op, "name"):
            callee = expr.args[0]
            calls.append(callee.name_hint if expr.op.name == "relax.call_tir" else expr.op.name)

    relax.analysis.post_order_visit(mod[OPTIMIZER], visit)
    return calls


def test_the_fused_update_is_one_kernel_per_parameter():
    fused, plain = _optimizer_calls(True), _optimizer_calls(False)
    assert sum(c.startswith("adam_update") for c in fused) == 6, fused   # 3 weights, 3 biases
    assert fused.count("relax.sqrt") == 1, fused      # only sqrt(bias correction 2) is left
    assert plain.count("relax.sqrt") == 7 and not any(c.startswith("adam") for c in plain)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", [anychip.optim.AdamW(lr=2e-2, weight_decay=0.05),
                                       anychip.optim.Adam(lr=2e-2, weight_decay=0.05)],
                         ids=["adamw", "adam-l2"])
def test_fused_and_operator_updates_follow_torch(optimizer, monkeypatch):
    torch.manual_seed(0)
    model = MLP()
    gen = torch.Generator().manual_seed(4)
    data = [(torch.randn(*SHAPE, generator=gen), torch.randint(0, CLASSES, (SHAPE[0],),
                                                              generator=gen)) for _ in range(6)]
    ref = copy.deepcopy(model)
    opt = optimizer.to_torch(list(ref.parameters()))
    for x, y in data:
        opt.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()
        opt.step()
    want = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    states = {}
    for fused in (True, False):
        if not fused:   # the Relax-operator update the other families get
            original = optim.Adam.relax_optimizer
            monkeypatch.setattr(optim.Adam, "relax_optimizer",
                                lambda self, fused=False: original(self, False))
        trainer = anychip.compile_training(copy.deepcopy(model),
                                           example_inputs=(torch.zeros(SHAPE),),
                                           optimizer=optimizer, target="cpu")
        for x, y in data:
            trainer.step(x.numpy(), y.numpy())
        states[fused] = trainer.state_dict()
        for key, value in want.items():
            np.testing.assert_allclose(states[fused][key], value, rtol=2e-5, atol=2e-6,
                                       err_msg=f"fused={fused} {key}")
    for key in want:
        np.testing.assert_allclose(states[True][key], states[False][key], rtol=1e-6, atol=1e-7)
