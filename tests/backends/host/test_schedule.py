"""The host's default schedules on kernels with symbolic extents (a dynamic batch or sequence):
they must still be parallel and vectorized, and compute the same values as numpy."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from tvm import relax, tirx  # noqa: E402
from tvm.script import ir as I  # noqa: E402
from tvm.script import relax as R  # noqa: E402

from anychip.backends.host.schedule import schedule_rules  # noqa: E402

TARGET = {"kind": "llvm"}   # generic x86-64: 4 float lanes, runs on any host


@I.ir_module
class BiasGelu:
    @R.function
    def main(x: R.Tensor(("batch", "seq", 64), "float32"), b: R.Tensor((64,), "float32")):
        with R.dataflow():
            y = R.nn.gelu(R.add(x, b))
            R.output(y)
        return y


def _scheduled() -> tvm.IRModule:
    from tvm.s_tir import dlight

    target = tvm.target.Target(TARGET)
    mod = relax.transform.LegalizeOps()(BiasGelu)
    mod = relax.transform.AnnotateTIROpPattern()(mod)
    mod = relax.transform.FuseOps()(mod)
    mod = relax.transform.FuseTIR()(mod)
    with target:
        return dlight.ApplyDefaultSchedule(*schedule_rules(parallel=True))(mod)


def test_a_symbolic_elementwise_kernel_is_parallel_over_rows_and_vectorized_along_hidden():
    mod = _scheduled()
    kernels = [f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)]
    assert kernels
    for func in kernels:
        text = func.script()
        assert "T.parallel(" in text and "T.vectorized(" in text, text


@pytest.mark.parametrize("batch,seq", [(1, 1), (3, 7), (2, 64)])
def test_the_scheduled_kernel_computes_what_numpy_does_at_every_size(batch, seq):
    exe = tvm.compile(_scheduled(), target=tvm.target.Target(TARGET))
    vm = relax.VirtualMachine(exe, tvm.cpu())
    rng = np.random.default_rng(batch * 100 + seq)
    x = rng.standard_normal((batch, seq, 64)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    got = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(b)).numpy()
    z = (x + b).astype(np.float64)
    from math import erf
    want = 0.5 * z * (1 + np.vectorize(erf)(z / np.sqrt(2)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
