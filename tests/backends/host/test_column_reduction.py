"""The serial host schedule of a sum over leading axes (a bias gradient's collapse_sum in a
train step): reduction loops outside, the contiguous axis inside, same values as numpy; a
row reduction (over the innermost axis) is left as it was."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from tvm import relax, tirx  # noqa: E402
from tvm.script import ir as I  # noqa: E402
from tvm.script import relax as R  # noqa: E402

from anychip.backends.host.schedule import schedule_rules  # noqa: E402

TARGET = {"kind": "llvm"}


@I.ir_module
class Sums:
    @R.function
    def main(x: R.Tensor((2, 64, 48), "float32"), y: R.Tensor((2, 64, 48), "float32"),
             image: R.Tensor((1, 8, 16, 48), "float32")):
        with R.dataflow():
            bias_grad = R.collapse_sum_to(R.multiply(x, y), R.shape([48]))
            per_column = R.sum(x, axis=[0, 1])
            per_row = R.sum(x, axis=[2])
            # an NHWC global average pool (squeeze-excite): a sum, then a divide after it
            pooled = R.mean(image, axis=[1, 2], keepdims=True)
            R.output(bias_grad, per_column, per_row, pooled)
        return (bias_grad, per_column, per_row, pooled)


def _scheduled(parallel: bool) -> tvm.IRModule:
    from tvm.s_tir import dlight

    mod = relax.transform.LegalizeOps()(Sums)
    mod = relax.transform.AnnotateTIROpPattern()(mod)
    mod = relax.transform.FuseOps()(mod)
    mod = relax.transform.FuseTIR()(mod)
    with tvm.target.Target(TARGET):
        return dlight.ApplyDefaultSchedule(*schedule_rules(parallel=parallel))(mod)


def _kernels(mod) -> dict[str, str]:
    return {gv.name_hint: f.script() for gv, f in mod.functions.items()
            if isinstance(f, tirx.PrimFunc)}


@pytest.mark.parametrize("parallel", [False, True])
def test_column_sums_run_rows_outside_and_the_row_sum_is_untouched(parallel):
    """Serial, and in a parallel build too: there a sum with no image axis to split (a pool
    at batch 1, a bias gradient) took TVM's strided nest under OuterParallel (EfficientNet's
    [1, 112, 112, 32] pool: 0.21 ms, 19 us as a column sum)."""
    kernels = _kernels(_scheduled(parallel=parallel))
    loops = {name: [line.strip() for line in text.splitlines() if line.strip().startswith("for ")]
             for name, text in kernels.items()}
    # the sum over axes 0, 1 and the fused multiply + collapse_sum: the output zeroed in
    # vector lanes, then the 2 x 64 rows outside the contiguous 48-wide axis
    columns = [name for name in kernels if "collapse_sum" in name]
    assert len(columns) == 2, kernels
    means = [name for name in kernels if "mean" in name]
    assert len(means) == 1 and "T.vectorized(" in kernels[means[0]], kernels
    # the 8 x 16 pixels outside the 48 contiguous channels, then the divide
    assert any(line.endswith("T.grid(T.int64(8), T.int64(16), T.int64(48)):")
               for line in loops[means[0]]), loops[means[0]]
    for name in columns:
        assert "T.vectorized(" in kernels[name], kernels[name]
        assert loops[name][-1].endswith("T.grid(T.int64(2), T.int64(64), T.int64(48)):"), loops
    # the sum over the innermost axis keeps TVM's loop nest (its reduction is contiguous)
    assert loops["sum"] == ["for ax0, ax1, k2 in T.grid(T.int64(2), T.int64(64), T.int64(48)):"]


@pytest.mark.parametrize("parallel", [False, True])
def test_column_sums_compute_what_numpy_does(parallel):
    exe = tvm.compile(_scheduled(parallel=parallel), target=tvm.target.Target(TARGET))
    vm = relax.VirtualMachine(exe, tvm.cpu())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 64, 48)).astype(np.float32)
    y = rng.standard_normal((2, 64, 48)).astype(np.float32)
    image = rng.standard_normal((1, 8, 16, 48)).astype(np.float32)
    got = [t.numpy() for t in vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(y),
                                          tvm.runtime.tensor(image))]
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    np.testing.assert_allclose(got[0], (x64 * y64).sum(axis=(0, 1)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], x64.sum(axis=(0, 1)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[2], x64.sum(axis=2), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[3], image.astype(np.float64).mean(axis=(1, 2), keepdims=True),
                               rtol=1e-5, atol=1e-6)


@I.ir_module
class ConvRelu:
    @R.function
    def main(x: R.Tensor((1, 16, 16, 32), "float32"), w: R.Tensor((32, 1, 3, 3), "float32")):
        with R.dataflow():
            y = R.nn.relu(R.nn.conv2d(x, w, padding=[1, 1], groups=32, data_layout="NHWC",
                                      kernel_layout="OIHW"))
            R.output(y)
        return y


def test_a_large_reduction_with_an_epilogue_is_not_a_column_reduction():
    """A depthwise convolution + relu (8192 outputs x 9 taps) is a column reduction by shape,
    but its relu would stay an unvectorized loop after it: over MAX_EPILOGUE_OUTPUT outputs
    the rule declines (here 16 x 16 x 32 = 8192 is under; at 64 channels it is over). The
    depthwise rule, which would take this kernel first, is left out."""
    from tvm.s_tir import dlight

    from anychip.backends.host import schedule

    rules = [r for r in schedule_rules(parallel=False)
             if type(r).__name__ != "schedule_depthwise"]

    def window_outside(limit: int) -> bool:
        mod = relax.transform.LegalizeOps()(ConvRelu)
        mod = relax.transform.AnnotateTIROpPattern()(mod)
        mod = relax.transform.FuseTIR()(relax.transform.FuseOps()(mod))
        old, schedule.MAX_EPILOGUE_OUTPUT = schedule.MAX_EPILOGUE_OUTPUT, limit
        try:
            with tvm.target.Target(TARGET):
                mod = dlight.ApplyDefaultSchedule(*rules)(mod)
        finally:
            schedule.MAX_EPILOGUE_OUTPUT = old
        text = next(t for n, t in _kernels(mod).items() if "conv" in n)
        first = next(line.strip() for line in text.splitlines()
                     if line.strip().startswith("for ") and "_init" not in line)
        return first.startswith("for ax3, ax4") or "T.int64(3), T.int64(3)" in first.split(
            "T.grid(")[-1][:40]

    assert window_outside(limit=16384)       # 8192 outputs: the rule takes it
    assert not window_outside(limit=4096)    # over the limit: left to the other rules


@I.ir_module
class BatchPool:
    @R.function
    def main(image: R.Tensor((4, 8, 12, 48), "float32")):
        with R.dataflow():
            pooled = R.mean(image, axis=[1, 2], keepdims=True)   # squeeze-excite at batch 4
            R.output(pooled)
        return pooled


def test_a_batched_pool_runs_its_images_in_parallel_and_matches_numpy():
    """In parallel, a global average pool over a batch keeps the image axis outside
    (parallel), its window inside and the channels contiguous; a matmul, whose operands each
    miss an output axis, is not a column sum and is left to the GEMM rule."""
    from tvm.s_tir import dlight

    from anychip.backends.host import schedule
    from tests.backends.host.test_gemm import _matmul

    mod = relax.transform.LegalizeOps()(BatchPool)
    mod = relax.transform.FuseTIR()(relax.transform.FuseOps()(
        relax.transform.AnnotateTIROpPattern()(mod)))
    target = tvm.target.Target(TARGET)
    with target:
        scheduled = dlight.ApplyDefaultSchedule(*schedule_rules(parallel=True))(mod)
        assert schedule._column_reduction(_matmul(4, 64, 128), target, True) is None
    text = next(t for n, t in _kernels(scheduled).items() if "mean" in n or "sum" in n)
    assert "T.parallel(T.int64(4))" in text and "T.vectorized(" in text, text
    x = np.random.default_rng(3).standard_normal((4, 8, 12, 48)).astype(np.float32)
    exe = tvm.compile(scheduled, target=target)
    vm = relax.VirtualMachine(exe, tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, x.mean(axis=(1, 2), keepdims=True), rtol=1e-5, atol=1e-6)
