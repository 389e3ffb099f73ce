"""npu train steps: lowered by the npu backend itself (cube kernels for the forward and the
backward matmuls/convolutions, simulated), in the chip's training precision mode, and
compared with torch autograd at the tolerance of the precision the step used."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import anychip
from anychip.compiler.registry import profiles

sys.path.insert(0, str(Path(__file__).parents[2] / "compiler" / "training"))
from torch_models import batches, make_model, parity, torch_reference  # noqa: E402


def _train(target: str, name: str, **extra):
    model, shape, _ = make_model(name)
    data = batches(shape, 5, 3)
    optimizer = anychip.optim.SGD(lr=0.1, momentum=0.9)
    ref_losses, ref_state = torch_reference(model, optimizer, data)
    trainer = anychip.compile_training(model, example_inputs=(data[0][0],),
                                       optimizer=optimizer, target=target, **extra)
    losses = [trainer.step(x, y) for x, y in data]
    return trainer, np.array(losses), ref_losses, ref_state


# Every npu chip in CI; the fast lane trains on one (about a minute per chip on 2 cores).
@pytest.mark.parametrize("chip", [pytest.param(n, marks=() if n == "ascend-910b" else
                                               pytest.mark.slow) for n in sorted(
    name for name, p in profiles().items() if p.family == "npu")])
def test_train_step_runs_on_the_simulated_cube(chip):
    """The small ResNet CNN: linear layers, strided and 1x1 convolutions, batch norm."""
    trainer, losses, ref_losses, ref_state = _train(chip, "resnet")
    assert trainer.report["built_for"] == chip and "note" not in trainer.report
    step = trainer.report["backend_report"]["train_step"]
    assert "simulator_llvm_opt_level" not in trainer.report["backend_report"]   # run per step
    # forward and backward matmuls (dX and dW), the weight gradients' conv2d in CNHW/IOHW
    # layouts and the input gradients' conv2d_transpose all reach the cube
    assert step["cube_kernels"] >= 5
    assert step["matmul_conv_on_vector_unit"] == {}
    parity(trainer, losses, ref_losses, ref_state)


@pytest.mark.slow   # two train steps built and run: 85 s on the loaded 2-core machine
def test_precision_mode_moves_the_train_step_numerics():
    """910B keeps float32 on its cube (must_keep_origin_dtype): fp32-level agreement with
    torch. The 910's cube has no float32, so allow_fp32_to_fp16 rounds the cube operands:
    fp16-level error, larger than the 910B's, still within the fp16 training tolerance."""
    exact, exact_losses, ref_losses, _ = _train("ascend-910b", "mlp")
    rounded, rounded_losses, _, _ = _train("ascend-910", "mlp")
    assert exact.precision == "fp32" and rounded.precision == "fp16"
    assert exact.report["backend_report"]["train_step"]["cube_dtypes"] == ["float32"]
    assert rounded.report["backend_report"]["train_step"]["cube_dtypes"] == ["float16"]
    # the estimate counts the lowered step's cube work: forward (16->32->32->5, batch 8),
    # every weight gradient, and the input gradients of fc2 and head (not of the data)
    estimate = exact.report["backend_report"]["estimate"]
    cube = [k for k in estimate["kernels"] if k["unit"] == "cube"]
    forward = 2 * 8 * (16 * 32 + 32 * 32 + 32 * 5)
    assert sum(k["flops"] for k in cube) == 2 * forward + 2 * 8 * (32 * 32 + 32 * 5)
    assert sum(k["calls"] for k in cube) == 8
    assert estimate["total"]["cube_us"] > 0 and estimate["total"]["vector_us"] > 0
    assert estimate["total"]["time_us"] == pytest.approx(
        sum(k["time_us"] for k in estimate["kernels"]), abs=1e-2)
    fp32_error = np.abs(exact_losses - ref_losses).max()
    fp16_error = np.abs(rounded_losses - ref_losses).max()
    assert fp32_error < 1e-5 < fp16_error < 2e-2


def test_a_mode_the_train_step_cannot_take_builds_for_the_host_and_says_so():
    trainer, losses, ref_losses, ref_state = _train("ascend-910b", "mlp",
                                                    precision_mode="force_fp16")
    assert trainer.report["built_for"] == "cpu"
    assert "force_fp16" in trainer.report["note"] and "host CPU" in trainer.report["note"]
    parity(trainer, losses, ref_losses, ref_state)
