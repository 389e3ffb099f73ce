"""fold_affine_chains (backends/host/relax_passes.py): a chain of elementwise ops by
per-channel constants becomes one multiply and one add with the chain's values (float32
rounding apart); a link whose value is used elsewhere ends the chain there, and constants
along different axes are not merged."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from tvm import relax  # noqa: E402

from anychip.backends.host.relax_passes import fold_affine_chains  # noqa: E402

RNG = np.random.default_rng(2)


def _const(shape) -> relax.Constant:
    return relax.const(RNG.uniform(0.5, 1.5, shape).astype(np.float32))


def _module(branch: bool, other_axis: bool):
    """x [2, 3, 4, 5] - m / d * g + b (channel axis 1, constants (3, 1, 1)); `branch` also
    returns the divided value; `other_axis` makes the last add run along axis 3."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([2, 3, 4, 5], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.subtract(x, _const((3, 1, 1))))
            b = bb.emit(relax.op.divide(a, _const((3, 1, 1))))
            c = bb.emit(relax.op.multiply(_const((1, 3, 1, 1)), b))
            d = bb.emit(relax.op.add(c, _const((5,) if other_axis else (3, 1, 1))))
            out = bb.emit_output(relax.Tuple([d, b]) if branch else d)
        bb.emit_func_output(out)
    return bb.get()


def _run(mod, x):
    exe = tvm.compile(mod, target="llvm")
    out = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x))
    return [t.numpy() for t in (out if isinstance(out, (list, tuple)) or not hasattr(
        out, "numpy") else [out])]


def _ops(mod) -> list[str]:
    ops = []
    relax.analysis.post_order_visit(
        mod["main"], lambda e: ops.append(e.op.name) if isinstance(e, relax.Call)
        and isinstance(e.op, tvm.ir.Op) else None)
    return ops


@pytest.mark.parametrize("branch, other_axis, want", [
    (False, False, {"relax.multiply": 1, "relax.add": 1}),
    (True, False, {"relax.subtract": 1, "relax.divide": 1, "relax.multiply": 1,
                   "relax.add": 1}),        # b is an output: the chain stops before it
    (False, True, {"relax.multiply": 1, "relax.add": 2}),   # (x-m)/d*g folds; +b[axis 3] not
])
def test_chains_fold_to_one_multiply_and_add_with_the_same_values(branch, other_axis, want):
    mod = _module(branch, other_axis)
    folded = fold_affine_chains(mod)
    ops = _ops(folded)
    assert {op: ops.count(op) for op in set(ops)} == want, ops
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    for got, expected in zip(_run(folded, x), _run(mod, x)):
        np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-6)


def test_a_zero_divisor_ends_the_chain_and_keeps_the_infinities():
    """(x - m) / d with a zero in d gives +-inf (or NaN at x == m); folded as x * (1/d) + ...
    it would give inf - inf = NaN: the division is left as a link of its own."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 3, 2, 2], "float32"))
    d = np.array([2.0, 0.0, 4.0], np.float32).reshape(3, 1, 1)
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.subtract(x, relax.const(np.full((3, 1, 1), 0.5, np.float32))))
            b = bb.emit(relax.op.divide(a, relax.const(d)))
            c = bb.emit(relax.op.multiply(b, _const((3, 1, 1))))
            out = bb.emit_output(relax.op.add(c, _const((3, 1, 1))))
        bb.emit_func_output(out)
    mod = bb.get()
    folded = fold_affine_chains(mod)
    assert "relax.divide" in _ops(folded)
    xs = RNG.standard_normal((1, 3, 2, 2)).astype(np.float32)
    got, want = _run(folded, xs)[0], _run(mod, xs)[0]
    assert np.isinf(want[0, 1]).all()
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)], rtol=2e-6)
