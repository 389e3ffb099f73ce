"""The simulator's host code is built without LLVM optimisation for inference (quick_build):
the same simulated numbers, bit for bit, as the optimised build; train steps stay optimised."""

from __future__ import annotations

import numpy as np

import anychip
from anychip.compiler.inputs import random_inputs

from .conftest import matmul_softmax_model


def test_quick_build_simulates_the_same_bits_as_the_optimised_build(npu_target):
    model = matmul_softmax_model()
    quick = anychip.compile(model, target=npu_target)
    optimised = anychip.compile(model, target=npu_target, quick_build=False)
    assert quick.report["simulator_llvm_opt_level"] == 0
    assert "simulator_llvm_opt_level" not in optimised.report
    feed = random_inputs(quick.inputs, seed=3)
    got, want = quick.run(feed), optimised.run(feed)
    for name in want:
        assert np.array_equal(np.asarray(got[name]), np.asarray(want[name]), equal_nan=True)


def test_an_artifact_run_many_times_gets_the_optimised_build(npu_target):
    """`hot=True` (an LM's decode step) keeps LLVM's optimisation, as a train step does."""
    hot = anychip.compile(matmul_softmax_model(), target=npu_target, hot=True)
    assert "simulator_llvm_opt_level" not in hot.report
    assert hot.manifest["options"]["hot"] is True
