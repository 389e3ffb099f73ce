"""Vector kernels are scheduled once per process for chips whose vector unit and host target
agree (backends/npu/vector.memoised_schedules): a later chip takes the remembered schedules,
which are the ones its own scheduling would have made."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import anychip
from anychip.backends.npu import vector
from anychip.backends.npu.backend import NpuBackend
from anychip.backends.npu.chip import Chip
from anychip.compiler.inputs import random_inputs
from anychip.compiler.registry import get_profile

from .conftest import matmul_softmax_model, npu_targets


def _key(target: str) -> tuple:
    profile = get_profile(target)
    return vector._chip_key(Chip.of(profile), NpuBackend().target(profile))


def _pair_with_one_key() -> tuple[str, str]:
    names = npu_targets()
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if _key(a) == _key(b):
                return a, b
    pytest.skip("no two npu profiles share a vector unit")


def _compile(target: str):
    return anychip.compile(matmul_softmax_model(), target=target)


def test_a_second_chip_reuses_the_schedules_and_gets_the_same_program(monkeypatch):
    monkeypatch.setenv("ANYCHIP_NO_CACHE", "1")
    first, second = _pair_with_one_key()
    monkeypatch.setattr(vector, "_MEMO", type(vector._MEMO)())
    _compile(first)
    remembered = len(vector._MEMO)
    assert remembered > 0
    reused = _compile(second)
    assert len(vector._MEMO) < 2 * remembered      # the kernels the chips share were hits

    monkeypatch.setattr(vector, "_MEMO", type(vector._MEMO)())
    scheduled_here = _compile(second)                # the same chip, scheduled from scratch
    key = lambda k: sorted(k.items())  # noqa: E731
    assert sorted(map(key, reused.report["vector_kernels"])) == \
        sorted(map(key, scheduled_here.report["vector_kernels"]))
    feed = random_inputs(reused.inputs, seed=5)
    got, want = reused.run(feed), scheduled_here.run(feed)
    for name in want:
        assert np.array_equal(np.asarray(got[name]), np.asarray(want[name]), equal_nan=True)


def test_a_chip_with_another_vector_unit_schedules_its_own(monkeypatch):
    """A different repeat width changes the vector schedules: nothing is taken from the memo."""
    import tvm

    target = npu_targets()[0]
    profile = get_profile(target)
    chip = Chip.of(profile)
    wider = dataclasses.replace(chip, raw={**chip.raw, "vector": {
        **chip.raw["vector"], "bytes_per_repeat": 2 * chip.vector_bytes}})
    assert wider.vector_bytes == 2 * chip.vector_bytes
    host = NpuBackend().target(profile)

    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from tests.backends.host.kernels import relax_module

    def fused():   # a new module each time: module passes rewrite theirs in place
        module = relax_module(lambda bb, x: relax.op.nn.relu(relax.op.multiply(x, x)),
                              (64, 256))
        with host:
            return tvm.transform.Sequential(cpu.legalize_passes(host))(module)

    monkeypatch.setattr(vector, "_MEMO", type(vector._MEMO)())
    logs = []
    for c in (chip, wider, chip):
        log: list = []
        with host:
            vector.memoised_schedules(c, log, host)(fused())
        logs.append(log)
    assert len(vector._MEMO) == 2                       # one kernel, two vector units
    assert logs[0] == logs[2] != logs[1]
    assert logs[1][0]["repeat_bytes"] == 2 * logs[0][0]["repeat_bytes"]
