"""Output widths widened to whole vectors for the register-tiled GEMM schedule (gemm.py),
which vectorizes along the output's last axis with the widest vector dividing it.

- Odd widths have no vector at all and ran scalar: ViT's 197-token attention scores (25
  GFLOP/s against 170-200 for its other matmuls), an ESPCN-like network's 3x3 convolution to
  27 channels (3 x 3^2 for its pixel shuffle: 17 GFLOP/s, 14.9 ms; at 32: 218, 1.39 ms).
  Matmuls and convolutions from MIN_WIDTH up are padded to a multiple of 8, and then,
  like any width, to a multiple of 16 by the rule below (197 -> 208 on AVX-512: tiles of
  8 rows x one 8-lane vector at 200 ran ViT's scores at 103 GFLOP/s in its batch-8
  profile; zoo:vit 5.50 -> 5.21 ms, at batch 8 40.7 -> 40.0).
- On a 16-lane target (AVX-512), widths of 8 mod 16 get 8-lane vectors and only one vector
  a tile row (1000 = 8 x 125 has no 16- or 32-lane divisor), so each broadcast feeds one
  FMA: SqueezeNet's 13x13 512->1000 classifier convolution, MobileNet-v3's 200 and 184
  channels ran at 85-93 GFLOP/s on one Zen 4 core against 112-116 for the next multiple of
  16 (extra columns included). Convolutions and matmuls of such widths from MIN_WIDE_WIDTH
  up (at most 6% more columns) are padded to a multiple of 16; narrower ones are not (40 ->
  48 broke even, 24 -> 32 lost).

The operation multiplies by its weight padded with zero columns (a constant: once, here; an
activation, attention's K^T: a pad that fuses into the transpose kernel laying it out), and
the result is sliced back. The slice moves past the elementwise epilogue (bias, activation,
residual: `_push_slice`), so the epilogue stays fused into the GEMM's tiles and the slice
lands in the next kernel (a pooling, a reshape) or one copy. Outputs are unchanged: the
padded columns are computed and dropped.
"""

from __future__ import annotations

from .relax_passes import _map_main, _op, bound_constant, bound_value

# odd widths below this stay as they are (a handful of columns: the pad would dominate)
MIN_WIDTH = 9
MULTIPLE = 8
# 8-mod-16 widths from this one up are padded to a multiple of 16 on 16-lane targets
MIN_WIDE_WIDTH = 128
WIDE_MULTIPLE = 16
# elementwise ops a slice moves past: unary ones (their other operands are attributes or
# scalars) and binary ones whose other operand is sliced the same way or a constant
# broadcast along the last axis; a divisor's padding is 1 (no inf in the dropped columns)
_UNARY = ("relax.nn.relu", "relax.sigmoid", "relax.tanh", "relax.clip", "relax.nn.silu",
          "relax.nn.gelu", "relax.nn.gelu_tanh", "relax.nn.leakyrelu", "relax.exp",
          "relax.negative", "relax.abs", "relax.sqrt", "relax.erf")
_BINARY = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide",
           "relax.maximum", "relax.minimum", "relax.power")


def widened_width(width: int, lanes: int) -> int:
    """The width an output of `width` columns is computed at (itself when not widened)."""
    if width >= MIN_WIDTH and width % 2 == 1:
        width += -width % MULTIPLE
    if lanes >= WIDE_MULTIPLE and width >= MIN_WIDE_WIDTH and width % WIDE_MULTIPLE == 8:
        return width + 8
    return width


def widen_outputs(mod, lanes: int):
    """matmul(x, w) and NHWC convolutions by a constant HWIO weight whose last output axis
    N is static and `widened_width` wider -> strided_slice(op(x, pad(w)), N), the slice
    moved past the elementwise ops after it. Returns (module, matmuls widened, convolutions
    widened)."""
    import numpy as np
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from anychip.compiler.relax_info import dtype_of, static_shape

    matmul_op, conv_op = _op("relax.matmul"), _op("relax.nn.conv2d")
    slice_op = _op("relax.strided_slice")
    unary = {_op(n) for n in _UNARY}
    binary = {_op(n) for n in _BINARY}
    divide = _op("relax.divide")
    count = {"matmul": 0, "conv": 0}

    @mutator
    class Widen(PyExprMutator):
        def __init__(self, mod_):
            super().__init__(mod_)
            self.wide: dict = {}   # wide variable -> the width its slice keeps

        def visit_call_(self, call):
            new = super().visit_call_(call)
            if not isinstance(new, relax.Call):
                return new
            if new.op.same_as(matmul_op) or new.op.same_as(conv_op):
                return self._widen(new)
            if new.op in unary or new.op in binary:
                return self._push_slice(new)
            return new

        def _widen(self, call):
            out = static_shape(call)
            is_matmul = call.op.same_as(matmul_op)
            weight = static_shape(call.args[1])
            if out is None or weight is None or len(weight) < 2 or \
                    dtype_of(call.args[1]) != "float32" or dtype_of(call) != "float32":
                return call
            width = out[-1]
            wide = widened_width(width, lanes)
            if wide == width:
                return call
            constant = bound_constant(self, call.args[1])
            if is_matmul:
                if constant is not None:   # a weight: padded once, here
                    pads = [(0, 0)] * (constant.ndim - 1) + [(0, wide - width)]
                    padded = relax.const(np.pad(constant, pads))
                else:
                    pads = [0] * (2 * len(weight))
                    pads[-1] = wide - width
                    padded = self.builder_.emit(relax.op.nn.pad(call.args[1], pads,
                                                                pad_value=0.0))
                result = relax.op.matmul(call.args[0], padded, out_dtype=call.attrs.out_dtype)
            else:
                a = call.attrs
                if constant is None or a.data_layout != "NHWC" or a.kernel_layout != "HWIO" \
                        or int(a.groups) != 1 or (a.out_layout or "NHWC") != "NHWC":
                    return call
                padded = relax.const(np.pad(constant, [(0, 0)] * 3 + [(0, wide - width)]))
                result = relax.op.nn.conv2d(
                    call.args[0], padded, strides=a.strides, padding=a.padding,
                    dilation=a.dilation, groups=a.groups, data_layout="NHWC",
                    kernel_layout="HWIO", out_layout="NHWC", out_dtype=a.out_dtype)
            count["matmul" if is_matmul else "conv"] += 1
            return self._slice(self.builder_.emit(result), width, len(out))

        def _slice(self, wide_var, width: int, rank: int):
            self.wide[wide_var] = width
            return relax.op.strided_slice(wide_var, axes=[rank - 1], begin=[0], end=[width])

        def _sliced(self, expr):
            """(wide variable, width) when `expr` is a slice this pass made, else None."""
            value = bound_value(self, expr) if isinstance(expr, relax.Var) else expr
            if isinstance(value, relax.Call) and value.op.same_as(slice_op) and \
                    isinstance(value.args[0], relax.Var) and value.args[0] in self.wide:
                return value.args[0], self.wide[value.args[0]]
            return None

        def _push_slice(self, call):
            """`call` on the wide tensors, sliced after, when its tensor operands are this
            pass's slices of one width or constants broadcast along the last axis."""
            out = static_shape(call)
            if out is None or dtype_of(call) != "float32" or not call.args:
                return call
            tensors = call.args if call.op in binary else call.args[:1]
            found = [self._sliced(t) for t in tensors]
            hit = next((f for f in found if f is not None), None)
            if hit is None or out[-1] != hit[1]:
                return call
            wide = static_shape(hit[0])[-1]
            args = list(call.args)
            for i, (tensor, sliced) in enumerate(zip(tensors, found)):
                if sliced is not None:
                    if sliced[1] != hit[1] or static_shape(sliced[0])[-1] != wide:
                        return call
                    args[i] = sliced[0]
                    continue
                value = bound_constant(self, tensor)
                if value is None or value.ndim > len(out) or \
                        (value.ndim and value.shape[-1] not in (1, hit[1])):
                    return call
                if value.ndim and value.shape[-1] == hit[1]:
                    fill = 1 if call.op.same_as(divide) and i == 1 else 0
                    pads = [(0, 0)] * (value.ndim - 1) + [(0, wide - hit[1])]
                    args[i] = relax.const(np.pad(value, pads, constant_values=fill))
            result = self.builder_.emit(relax.Call(call.op, args, call.attrs, call.ty_args))
            return self._slice(result, hit[1], len(out))

    mod = _map_main(mod, lambda m, f: Widen(m))
    return mod, count["matmul"], count["conv"]
