"""The weights of the NHWC convolutions TVM computes itself, laid out HWIO at compile time.

ONNX weights are OIHW, and the cpu backend keeps them so for the library (which reorders
them once). For a convolution left to TVM, OIHW puts the output channel outermost: the
register-tiled schedule (backends/host/gemm.py) needs a tile's output channels contiguous,
and with OIHW they are a whole filter apart. Transposing the constant here costs nothing per
run, where a per-call copy in the kernel would cost a pass over the weight every time.
Depthwise ones become [kh, kw, 1, C] the same way: their schedule
(backends/host/depthwise.py) wants each tap's channels contiguous, and had copied the weight
so on every call (24,000 scalar moves for a 5x5 over 960 channels, half the kernel's time).
Channel multipliers and weights that are not constants (training) are left as they are.
"""

from __future__ import annotations

import numpy as np

from .relax_passes import _map_main, _op, bound_constant


def hwio_conv_weights(mod):
    """conv2d(x NHWC, W OIHW constant) -> conv2d(x, W^(HWIO)), for every conv2d left in the
    graph but depthwise ones with a channel multiplier."""
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    conv_op = _op("relax.nn.conv2d")

    @mutator
    class ToHwio(PyExprMutator):
        def visit_call_(self, call):
            new = super().visit_call_(call)
            if not isinstance(new, relax.Call) or not new.op.same_as(conv_op):
                return new
            a = new.attrs
            if a.data_layout != "NHWC" or a.kernel_layout != "OIHW":
                return new
            weight = bound_constant(self, new.args[1])
            if weight is None or weight.ndim != 4 or weight.dtype != np.float32:
                return new
            if weight.shape[1] == 1 and 1 < int(a.groups) != weight.shape[0]:
                return new   # a channel multiplier: no rule of ours, TVM's nest either way
            hwio = np.ascontiguousarray(weight.transpose(2, 3, 1, 0))
            return relax.op.nn.conv2d(
                new.args[0], relax.const(hwio), strides=a.strides, padding=a.padding,
                dilation=a.dilation, groups=a.groups, data_layout="NHWC",
                kernel_layout="HWIO", out_layout=a.out_layout or "NHWC",
                out_dtype=a.out_dtype)

    return _map_main(mod, lambda m, f: ToHwio(m))
