"""ONNX Clip as Relax's own clip (or maximum and minimum), where TVM's importer emits TE
kernels.

TVM 0.27's converter emits Clip (every opset) as `emit_te(topi.maximum)` and
`emit_te(topi.minimum)`: call_tir kernels, opaque to the passes that work on Relax
operators. The NCHW -> NHWC layout conversion cannot see through them, so every Clip between
two convolutions (MobileNet-v2's ReLU6, after each of its convolutions) got a transpose to
NCHW and back, which also kept it out of the convolution's epilogue: a MobileNet-v2-like
network spent 68% of its run in those transposes (3.8x ONNX Runtime). Constant bounds with
lo <= hi become `relax.clip` (what the library's ReLU6 epilogue pattern and the training
gradients know); other bounds `relax.maximum` / `relax.minimum`. Both are elementwise
epilogues like ReLU.

Semantics (the ONNX spec and ONNX Runtime): min(max(x, lo), hi), so lo > hi gives hi; a
missing bound is the type's lowest / largest finite value (the spec's default, and ORT: -inf
becomes -3.4e38; the ONNX reference implementation and TVM's converter left it -inf); a NaN
bound is no bound (ORT's kernel and TVM's converter; the reference gives NaN everywhere); a
NaN input stays NaN (backends/host/ieee.py wraps maximum/minimum). Cases: test_clip_*.
"""

from __future__ import annotations


def clip_converter():
    """The converter class (imports TVM)."""
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as fe

    def bounded(bb, x, bound, op, for_min: bool):
        if bound is None:   # the spec's default: the type's lowest / largest finite value
            dtype = str(x.ty.dtype)
            if dtype not in ("float16", "float32", "float64"):
                return x   # integers: no value lies beyond; bfloat16 has no numpy finfo
            info = np.finfo(dtype)
            return bb.emit(op(x, relax.const(info.min if for_min else info.max, dtype)))
        dtype = str(bound.ty.dtype)
        if not dtype.startswith(("float", "bfloat")):
            return bb.emit(op(x, bound))
        if isinstance(bound, tvm.ir.expr.GenericConst):   # TVM 0.27's relax constant
            if np.isnan(bound.value.numpy()).any():
                return x   # a NaN bound is no bound
            return bb.emit(op(x, bound))
        # a bound computed at run time: NaN replaced by the unbounded value
        free = relax.const(-np.inf if for_min else np.inf, dtype)
        return bb.emit(op(x, bb.emit(relax.op.where(relax.op.isnan(bound), free, bound))))

    def constant(bound, dtype: str, for_min: bool):
        """A bound as a float: the spec's default when missing, +-inf when NaN; None when it
        is computed at run time or the type is not a float numpy knows."""
        if dtype not in ("float16", "float32", "float64"):
            return None
        if bound is None:
            info = np.finfo(dtype)
            return float(info.min if for_min else info.max)
        if not isinstance(bound, tvm.ir.expr.GenericConst):
            return None
        array = np.asarray(bound.value.numpy())
        if array.size != 1:
            return None   # not the scalar the spec asks for: maximum/minimum broadcast it
        value = float(array.reshape(()))
        return (-np.inf if for_min else np.inf) if np.isnan(value) else value

    def clip(bb, x, lo, hi):
        dtype = str(x.ty.dtype)
        lo_value, hi_value = constant(lo, dtype, True), constant(hi, dtype, False)
        if lo_value is not None and hi_value is not None and lo_value <= hi_value:
            # relax.clip (the library's relu6 epilogue pattern, a gradient, a layout rule
            # from the cpu backend); TOPI's max(min(x, hi), lo) is min(max(x, lo), hi) here
            return bb.emit(relax.op.clip(x, lo_value, hi_value))
        x = bounded(bb, x, lo, relax.op.maximum, True)
        return bounded(bb, x, hi, relax.op.minimum, False)

    class Clip(fe.OnnxOpConverter):
        """ONNX Clip, bounds as attributes (opset 1, 6) or inputs (11, 12, 13)."""

        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            x = inputs[0]
            dtype = str(x.ty.dtype)
            lo = relax.const(attr["min"], dtype) if "min" in attr else None
            hi = relax.const(attr["max"], dtype) if "max" in attr else None
            return clip(bb, x, lo, hi)

        @classmethod
        def _impl_v11(cls, bb, inputs, attr, params):
            return clip(bb, inputs[0], inputs[1] if len(inputs) > 1 else None,
                        inputs[2] if len(inputs) > 2 else None)

    return Clip
