"""Matmuls whose output width no 8-lane vector divides, widened to one that does.

The register-tiled GEMM schedule (gemm.py) vectorizes along the output's last axis. Even
widths it splits into whole registers and a short tail (gemm.ragged_rows); an odd width has
no vector at all: ViT's attention scores (197 tokens by 197) ran scalar, 25 GFLOP/s against
170-200 for its other matmuls. Here such a matmul multiplies by its second operand padded
with zero columns to the next multiple of 8 and slices the result back: the pad of a
constant costs nothing per run, and an activation's (attention's K^T) fuses into the
transpose kernel that lays it out; the slice fuses with the elementwise work after it.
Outputs are unchanged: the padded columns are computed and dropped.
"""

from __future__ import annotations

from .relax_passes import _map_main, _op, bound_constant

# widths below this stay as they are (a handful of columns: the pad would dominate)
MIN_WIDTH = 9
MULTIPLE = 8


def _narrow(width: int) -> bool:
    return width >= MIN_WIDTH and width % 2 == 1


def pad_odd_matmuls(mod):
    """matmul(x, w) with a static odd last output axis N -> strided_slice(matmul(x,
    pad(w, N -> a multiple of 8)), N); returns (module, matmuls widened)."""
    import numpy as np
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from anychip.compiler.relax_info import dtype_of, static_shape

    matmul_op = _op("relax.matmul")
    count = [0]

    @mutator
    class Widen(PyExprMutator):
        def visit_call_(self, call):
            new = super().visit_call_(call)
            if not isinstance(new, relax.Call) or not new.op.same_as(matmul_op):
                return new
            out, weight = static_shape(new), static_shape(new.args[1])
            if out is None or weight is None or len(weight) < 2 or \
                    dtype_of(new.args[1]) != "float32" or not _narrow(out[-1]):
                return new
            width = out[-1]
            extra = -width % MULTIPLE
            constant = bound_constant(self, new.args[1])
            if constant is not None:   # a weight: padded once, here
                widths = [(0, 0)] * (constant.ndim - 1) + [(0, extra)]
                padded = relax.const(np.pad(constant, widths))
            else:
                pads = [0] * (2 * len(weight))
                pads[-1] = extra
                padded = self.builder_.emit(relax.op.nn.pad(new.args[1], pads, pad_value=0.0))
            wide = self.builder_.emit(relax.op.matmul(new.args[0], padded,
                                                      out_dtype=new.attrs.out_dtype))
            count[0] += 1
            return relax.op.strided_slice(wide, axes=[len(out) - 1], begin=[0], end=[width])

    return _map_main(mod, lambda m, f: Widen(m)), count[0]
