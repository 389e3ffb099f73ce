"""ONNX MaxPool's second output, Indices (SegNet-style encoders hand it to MaxUnpool), and
MaxUnpool with its output_shape input.

TVM 0.27's converter returns the pooled values only ("Missing outputs during conversion" for
a node that asks for both). The values stay TVM's; the indices are computed from the same
windows in Relax ops: each of the K window taps is a strided slice of the input padded with
the lowest value, the K slices are stacked and `argmax` picks the first tap holding the
maximum (ONNX Runtime's scan order: row-major in the window, a later equal value does not
win), and the tap's position becomes the flat index the spec asks for:
`plane * H * W + h * W + w` (storage_order 0) or `plane * H * W + w * H + h` (1), plane being
n * C + c, h and w positions in the unpadded input. 2-D pools with static shapes; other
ranks and symbolic sizes are refused with the reason. Cases:
test_maxpool_with_argmax_2d_precomputed_pads, test_maxpool_with_argmax_2d_precomputed_strides.

MaxUnpool: the indices address a tensor of output_shape (what MaxPool's input was: the spec's
reason for the input, ONNX Runtime and torch's max_unpool), and TVM's converter scatters into
it, but failed on `.tolist()` of the constant: the constant is handed over as numpy. The ONNX
reference instead scatters into the shape inferred from the pool and pads that to
output_shape, and test_maxunpool_export_with_output_shape's data follow it: that case stays
an expected failure, as it is for ONNX Runtime (docs/conformance.md).
"""

from __future__ import annotations

import numpy as np

# window taps one Indices computation stacks (one strided slice each): a larger window is
# refused rather than built (a hostile 1000x1000 kernel would be a million slices)
MAX_TAPS = 1024


def max_pool_converter():
    """The converter class (imports TVM)."""
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as fe

    from .refusal import NotSupported
    from .relax_values import known_shape

    tvm_max_pool = fe.MaxPool

    def indices(bb, x, values, attr):
        shape, out = known_shape(x), known_shape(values)
        if len(shape) != 4 or None in shape or None in out:
            raise NotSupported("MaxPool's Indices output is supported for 2-D pools with "
                               "static shapes only (compile with --shape)")
        auto_pad = attr.get("auto_pad", b"NOTSET")
        if (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) != "NOTSET":
            raise NotSupported("MaxPool's Indices output with auto_pad and a symbolic size")
        n, c, h, w = shape
        oh, ow = out[2:]
        kh, kw = [int(k) for k in attr["kernel_shape"]]
        if kh * kw > MAX_TAPS:
            raise NotSupported(f"MaxPool's Indices output for a {kh}x{kw} window (more than "
                               f"{MAX_TAPS} taps)")
        sh, sw = [int(s) for s in attr.get("strides", [1, 1])]
        dh, dw = [int(d) for d in attr.get("dilations", [1, 1])]
        top, left = [int(p) for p in attr.get("pads", [0, 0, 0, 0])[:2]]
        reach_h, reach_w = (oh - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1
        dtype = str(x.ty.dtype)
        # the pad is never a window's maximum (MaxPool ignores pads): -inf, or the least int
        lowest = float("-inf") if "float" in dtype else float(np.iinfo(dtype).min)
        padded = bb.emit(relax.op.nn.pad(
            x, [0, 0, 0, 0, top, max(0, reach_h - h - top), left, max(0, reach_w - w - left)],
            "constant", lowest))
        taps = [(i, j) for i in range(kh) for j in range(kw)]
        slices = [bb.emit(relax.op.strided_slice(
            padded, [2, 3], [i * dh, j * dw], [i * dh + (oh - 1) * sh + 1,
                                               j * dw + (ow - 1) * sw + 1], [sh, sw]))
            for i, j in taps]
        tap = bb.emit(relax.op.argmax(relax.op.stack(slices, axis=4), axis=4))
        def ints(values):   # relax.const makes numpy int64 arrays int32 unless told
            return relax.const(np.asarray(values, np.int64), "int64")

        row = relax.op.take(ints([i * dh for i, _ in taps]), tap)
        col = relax.op.take(ints([j * dw for _, j in taps]), tap)
        hh = relax.op.add(row, ints((np.arange(oh) * sh - top).reshape(1, 1, oh, 1)))
        ww = relax.op.add(col, ints((np.arange(ow) * sw - left).reshape(1, 1, 1, ow)))
        inside = relax.op.add(relax.op.multiply(ww, relax.const(h, "int64")), hh) \
            if int(attr.get("storage_order", 0)) else \
            relax.op.add(relax.op.multiply(hh, relax.const(w, "int64")), ww)
        planes = ints((np.arange(n * c) * h * w).reshape(n, c, 1, 1))
        return bb.emit(relax.op.add(inside, planes))

    class MaxPool(fe.OnnxOpConverter):
        """TVM's MaxPool, and the Indices output when the node asks for it."""

        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            wants = int(attr.get("tvm_custom", {}).get("num_outputs", 1))
            values = tvm_max_pool._impl_v1(bb, inputs, attr, params)
            if wants < 2:
                return values
            values = bb.emit(values)
            return relax.Tuple([values, indices(bb, inputs[0], values, attr)])

    return MaxPool


def max_unpool_converter():
    """TVM's MaxUnpool, its constant output_shape handed over as numpy."""
    import tvm
    from tvm.relax.frontend.onnx import onnx_frontend as fe

    from .refusal import NotSupported

    class MaxUnpool(fe.OnnxOpConverter):
        @classmethod
        def _impl_v9(cls, bb, inputs, attr, params):
            inputs = list(inputs) + [None] * (3 - len(inputs))
            if inputs[2] is not None:
                shape = fe.get_constant(inputs[2], params)
                if not isinstance(shape, tvm.ir.expr.GenericConst):
                    raise NotSupported("MaxUnpool with an output_shape computed at run time")
                inputs[2] = np.asarray(shape.value.numpy()).astype(np.int64)
            return fe.MaxUnpool._impl_v9(bb, inputs, attr, params)

    return MaxUnpool
