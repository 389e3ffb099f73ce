"""backends/host/pooling.py: NHWC max and average pooling (strided, padded, global, with a
fused epilogue) scheduled with channel vectors computes what TVM's loop nest computes,
serial and parallel; a reduction that is not a pooling is left to the other rules."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402
from tvm.script import relax as R  # noqa: E402

from anychip.backends.host.pooling import schedule_pool  # noqa: E402

from .kernels import fused_kernel  # noqa: E402


def _pool(kind, hw, channels, k, stride, pad):
    op = relax.op.nn.max_pool2d if kind == "max" else relax.op.nn.avg_pool2d
    bias = relax.const(np.linspace(-1, 1, channels, dtype=np.float32))

    def build(bb, x):
        y = bb.emit(op(x, pool_size=k, strides=stride, padding=pad, layout="NHWC"))
        return bb.emit(relax.op.nn.relu(relax.op.add(y, bias)))

    return fused_kernel(build, (2, hw, hw, channels))


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("kind, hw, channels, k, stride, pad", [
    ("max", 15, 32, 3, 2, 0), ("max", 9, 24, 3, 2, 1), ("avg", 10, 48, 3, 1, 1),
    ("avg", 7, 40, 7, 7, 0), ("max", 6, 6, 2, 2, 0),
    ("max", 32, 16, 3, 1, 1),    # padded per block of 8 output rows: 4 blocks an image
    ("max", 33, 16, 3, 2, 1)])   # 17 output rows (prime): blocks of one row
def test_scheduled_pooling_matches_the_loop_nest(kind, hw, channels, k, stride, pad, parallel,
                                                monkeypatch):
    from anychip.backends.cpu.backend import host_cpu_name
    from anychip.backends.host import reduction_kernel

    # small poolings stay serial (reduction_kernel.worth_parallel): these test the parallel nest
    monkeypatch.setattr(reduction_kernel, "MIN_PARALLEL_ITERATIONS", 0)

    target = tvm.target.Target({"kind": "llvm", "mcpu": host_cpu_name(), "num-cores": 2})
    func = _pool(kind, hw, channels, k, stride, pad)
    with target:
        sch = schedule_pool(func, target, parallel)
    assert sch is not None
    fast = tvm.compile(sch.mod, target=target)
    plain = tvm.compile(tvm.IRModule({"main": func}), target=target)
    rng = np.random.default_rng(2)
    args = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in p.shape]).astype(np.float32))
            for p in func.params[:-1]]   # the input, and the bias FuseTIR made a parameter
    outs = [tvm.runtime.tensor(np.full([int(d) for d in func.params[-1].shape], np.nan,
                                       np.float32)) for _ in range(2)]
    fast["main"](*args, outs[0])
    plain["main"](*args, outs[1])
    np.testing.assert_allclose(outs[0].numpy(), outs[1].numpy(), rtol=1e-6, atol=1e-6)


def test_the_pad_is_made_per_block_of_rows_inside_the_parallel_loop():
    """As for depthwise convolutions: no padded copy of the whole input
    (reduction_kernel.PAD_ROWS; ResNet-50's 3x3 max pool at batch 8: 1.93 -> 1.13 ms alone)."""
    from anychip.backends.cpu.backend import host_cpu_name

    target = tvm.target.Target({"kind": "llvm", "mcpu": host_cpu_name(), "num-cores": 2})
    with target:
        text = schedule_pool(_pool("max", 112, 64, 3, 2, 1), target, True).mod.script()
    parallel, pad = text.index("T.parallel("), text.index('T.sblock("pad_temp")')
    assert parallel < pad < text.index('T.sblock("pool_max', pad), text
    assert "T.parallel(T.int64(14))" in text   # 2 images x 56 output rows in blocks of 8


def test_a_sum_that_is_not_a_pooling_is_left_alone():
    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((4, 8, 16), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.sum(x, axis=[1]))
        bb.emit_func_output(out)
    mod = relax.transform.LegalizeOps()(bb.get())
    func = next(f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    target = tvm.target.Target({"kind": "llvm"})
    with target:
        assert schedule_pool(func.with_attr("global_symbol", "main"), target, True) is None
