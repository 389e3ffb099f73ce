"""fold_constants evaluates casts of constants in numpy exactly where numpy's cast is LLVM's
(float widths, integers to floats, integer wrap), and leaves the rest to TVM."""

from __future__ import annotations

import numpy as np
import pytest

from tests.backends.host.kernels import relax_module


def _module(value: np.ndarray, dtype: str):
    from tvm import relax

    def build(bb, x):
        cast = bb.emit(relax.op.astype(relax.const(value), dtype))
        return relax.op.add(x, relax.op.astype(cast, "float32"))

    return relax_module(build, list(value.shape))


def _tvm_built(value: np.ndarray, dtype: str) -> np.ndarray:
    """The same casts compiled by TVM for the host and run (no folding: the reference)."""
    import tvm
    from tvm import relax

    executable = relax.build(_module(value, dtype), tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(np.zeros(value.shape, "float32"))).numpy()


def _folded(value: np.ndarray, dtype: str):
    """fold_constants on main(x) = x + astype(astype(value, dtype), float32): the float32
    constant main adds after folding (both casts evaluated), or None when the cast to
    `dtype` was left to TVM."""
    import tvm

    from anychip.backends.host.relax_passes import _const_value, fold_constants

    mod = fold_constants(_module(value, dtype))
    calls = [b.value for block in mod["main"].body.blocks for b in block.bindings]
    if any(c.op == tvm.ir.Op.get("relax.astype") for c in calls):
        return None
    (add,) = calls
    return _const_value(add.args[1])


@pytest.mark.parametrize("source,dtype", [
    (np.array([1.0, 65504.0, 65520.0, 1e-8, -3.3e38, np.nan, 0.1], "float32"), "float16"),
    (np.array([1.0, 6e4, -0.0, np.inf, 0.1], "float16"), "float32"),
    (np.array([3, -(2 ** 31), 2 ** 31 - 1, 16777217], "int32"), "float32"),
    (np.array([300, -129, 255, 70000], "int32"), "int8"),
    (np.array([1, 0, 1], "bool"), "float32"),
])
def test_exact_casts_are_folded_with_numpy_semantics(source, dtype):
    """Round to nearest even (65520 -> inf in float16, 16777217 -> 16777216 in float32), wrap
    for narrower integers: each value as TVM's own compiled cast computes it."""
    got = _folded(source, dtype)
    assert got is not None
    with np.errstate(all="ignore"):
        want = source.astype(dtype).astype("float32")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, _tvm_built(source, dtype))


@pytest.mark.parametrize("source,dtype", [
    (np.array([1.5, 3e9, -1.0], "float32"), "int32"),    # out of range: undefined in LLVM
    (np.array([1.5, -2.0], "float32"), "uint8"),
])
def test_float_to_integer_casts_are_left_to_tvm(source, dtype):
    assert _folded(source, dtype) is None


@pytest.mark.parametrize("fold", ["cast", "arithmetic"])
def test_folded_float64_constants_stay_float64(fold):
    """relax.const turns a float64 array into float32 unless told the dtype: a folded float64
    constant must keep its dtype, or the op that uses it no longer type-checks (ONNX's
    FlexAttention double test: x_f64 * Cast(scale_f32 -> f64))."""
    from tvm import relax
    from tvm.script import relax as R

    from anychip.backends.host.relax_passes import _const_value, fold_constants

    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((2, 3), "float64"))
    with bb.function("main", [x]):
        with bb.dataflow():
            if fold == "cast":
                c = bb.emit(relax.op.astype(relax.const(np.array([0.25], "float32")), "float64"))
            else:
                c = bb.emit(relax.op.add(relax.const(np.array([0.25], "float64"), "float64"),
                                         relax.const(np.array([1.0], "float64"), "float64")))
            out = bb.emit_output(relax.op.multiply(x, c))
        bb.emit_func_output(out)
    mod = fold_constants(bb.get())
    (call,) = [b.value for block in mod["main"].body.blocks for b in block.bindings]
    value = _const_value(call.args[1])
    assert value is not None and value.dtype == np.float64
    assert value[0] == (0.25 if fold == "cast" else 1.25)
