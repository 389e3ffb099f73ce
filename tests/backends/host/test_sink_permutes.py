"""sink_permutes (backends/host/relax_passes.py): an elementwise op whose tensor operands are
all the same permute_dims (or constants, or scalars) runs on the unpermuted operands and is
permuted once; permutes that meet compose, and vanish when they undo each other. Values equal
the unrewritten module's; operands permuted differently are left alone."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from tvm import relax  # noqa: E402

from anychip.backends.host.relax_passes import sink_permutes  # noqa: E402

from .test_affine_chains import _ops, _run  # noqa: E402

TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def _module(second_axes, after):
    """x NHWC [1, 4, 4, 3]: where(P(x) > 0.5, P(x), c - Q(x)) with P to NCHW, Q =
    `second_axes` and c a (1, 3, 1, 1) constant; then permute_dims(`after`). One permute per
    use, as layout conversion leaves them."""
    rng = np.random.default_rng(4)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4, 4, 3], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a1 = bb.emit(relax.op.permute_dims(x, TO_NCHW))
            a2 = bb.emit(relax.op.permute_dims(x, TO_NCHW))
            b = bb.emit(relax.op.permute_dims(x, second_axes))
            cond = bb.emit(relax.op.greater(a1, relax.const(0.5, "float32")))
            c = relax.const(rng.standard_normal((1, 3, 1, 1)).astype(np.float32))
            other = bb.emit(relax.op.subtract(c, b))
            w = bb.emit(relax.op.where(cond, a2, other))
            out = bb.emit_output(relax.op.permute_dims(w, after))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("second_axes, after, permutes", [
    (TO_NCHW, TO_NHWC, 0),              # all NCHW views of x, back to NHWC: none left
    (TO_NCHW, [0, 2, 1, 3], 1),         # back to another order: one composed permute
    ([0, 3, 2, 1], TO_NHWC, 4),         # operands permuted differently: the where stays
])
def test_permutes_sink_through_where_and_constant_first_ops(second_axes, after, permutes):
    mod = _module(second_axes, after)
    x = np.random.default_rng(1).standard_normal((1, 4, 4, 3)).astype(np.float32)
    want = _run(mod, x)[0]
    rewritten = sink_permutes(mod)
    assert _ops(rewritten).count("relax.permute_dims") == permutes, _ops(rewritten)
    np.testing.assert_array_equal(_run(rewritten, x)[0], want)
