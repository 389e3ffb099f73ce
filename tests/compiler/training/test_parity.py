"""Losses and parameters after N compiled steps match torch autograd with the same optimizer,
within the training tolerance of the precision the target used (compiler/tolerances.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest

import anychip

from .torch_models import TiedRegressor, batches, make_model, parity, torch_reference

STEPS = 4
OPTIMIZERS = {
    "sgd_momentum": anychip.optim.SGD(lr=0.1, momentum=0.9, weight_decay=1e-3),
    "adam": anychip.optim.Adam(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-3),
}


def _train(trainer, data) -> tuple[list[float], float]:
    losses, started = [], time.perf_counter()
    for x, y in data:
        losses.append(trainer.step(x, y))
    return losses, (time.perf_counter() - started) / len(data)


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("model_name", ["zoo:mlp", "resnet"])
def test_matches_torch_autograd(model_name, opt, runnable):
    model, shape, classes = make_model(model_name)
    data = batches(shape, classes, STEPS)
    optimizer = OPTIMIZERS[opt]
    ref_losses, ref_state = torch_reference(model, optimizer, data)
    # zoo:NAME goes through the zoo's own torch module, the CNN is passed as a module
    source = model_name if model_name.startswith("zoo:") else model
    trainer = anychip.compile_training(source, example_inputs=(data[0][0],),
                                       loss="cross_entropy", optimizer=optimizer,
                                       target=runnable)
    # the user's module is left as it was (exporting in train mode runs it once)
    assert int(model.state_dict().get("stem.1.num_batches_tracked", 0)) == 0
    losses, step_s = _train(trainer, [(x.numpy(), y.numpy()) for x, y in data])
    result = parity(trainer, losses, ref_losses, ref_state)
    print(f"{model_name}/{opt}/{runnable}: loss max rel {result['loss'].max_rel:.2e}, params "
          f"max rel {result['params'].max_rel:.2e} (abs {result['params'].max_abs:.2e}), "
          f"{step_s * 1e3:.2f} ms/step, {trainer.execution.mode.verb}")


def test_mse_tied_weights_batchnorm1d_dropout_p0(runnable):
    """mse with float targets; a weight shared by two layers (one parameter, both state_dict
    keys); BatchNorm1d statistics; Dropout(p=0) compiled as the identity it is."""
    import torch

    torch.manual_seed(0)
    model = TiedRegressor()
    gen = torch.Generator().manual_seed(2)
    data = [(torch.randn(4, 6, generator=gen), torch.randn(4, 3, generator=gen))
            for _ in range(STEPS)]
    optimizer = anychip.optim.SGD(lr=0.05, momentum=0.5)
    ref_losses, ref_state = torch_reference(model, optimizer, data, loss="mse")
    trainer = anychip.compile_training(model, example_inputs=(data[0][0],), loss="mse",
                                       optimizer=optimizer, target=runnable)
    losses = [trainer.step(x, y) for x, y in data]   # torch tensors in
    parity(trainer, losses, ref_losses, ref_state)
    state = trainer.state_dict()
    np.testing.assert_array_equal(state["a.weight"], state["b.weight"])
    assert int(state["bn.num_batches_tracked"]) == STEPS


def test_onnx_model_trains_like_torch(tmp_path):
    """An .onnx file trains too: float initializers are the parameters, keyed by name."""
    import torch

    model, shape, _ = make_model("mlp")
    path = tmp_path / "mlp.onnx"
    torch.onnx.export(model, (torch.zeros(1, 16),), str(path), dynamo=False, opset_version=17,
                      input_names=["features"], output_names=["logits"])
    data = batches(shape, 5, STEPS)
    optimizer = anychip.optim.Adam(lr=0.01)
    ref_losses, ref_state = torch_reference(model, optimizer, data)
    trainer = anychip.compile_training(str(path), loss="cross_entropy", optimizer=optimizer,
                                       shapes={"features": shape})
    losses = [trainer.step(x.numpy(), y.numpy()) for x, y in data]
    assert set(trainer.state_dict()) == set(ref_state)
    ordered = {k: ref_state[k] for k in trainer.state_dict()}
    parity(trainer, losses, ref_losses, ordered)
    assert np.all(np.isfinite(losses))
