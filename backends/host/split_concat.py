"""1x1 convolutions of a channel concatenation computed per input, the concatenation dropped.

SqueezeNet's fire modules join two expand convolutions along the channels and the next
module's 1x1 squeeze convolution reads the join; a 1x1 convolution is a sum over input
channels, so conv(concat(a, b), W) = conv(a, W_a) + conv(b, W_b), W split along its input
channels. Computed so, the second convolution takes the first's output as a residual in its
fused epilogue, and the join's copy (a pass over both inputs: 0.3 ms of SqueezeNet's 4.1 ms
on 2 cores, 38 GB/s) is gone; what it costs instead is the first output written and read
once, so it applies when the convolution's output has no more channels than the join has
(SqueezeNet: 16-64 against 128-512) and the join has at most MAX_INPUTS inputs (DenseNet's
joins of up to 32 inputs would become as many small kernels). The join must feed nothing
else; a pooling between it and the convolution (SqueezeNet's max pools between modules)
pools each input instead. Outputs match up to the order of the channel sum.
"""

from __future__ import annotations

from .relax_passes import _const_value, _map_main, _op, use_counts

MAX_INPUTS = 4


def split_concat_convs(mod):
    """conv2d(concat([x_i], channels), W) -> sum_i conv2d(x_i, W_i) for NHWC 1x1 stride-1
    unpadded one-group convolutions with a constant HWIO weight; returns (module, count)."""
    import numpy as np
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from anychip.compiler.relax_info import static_shape

    conv_op, concat_op = _op("relax.nn.conv2d"), _op("relax.concat")
    pools = {_op("relax.nn.max_pool2d"), _op("relax.nn.avg_pool2d")}
    count = [0]

    def bindings_of(func) -> dict:
        return {b.var: b.value for block in func.body.blocks for b in block.bindings}

    @mutator
    class Split(PyExprMutator):
        def __init__(self, mod_, func):
            super().__init__(mod_)
            self.uses, self.bound = use_counts(func), bindings_of(func)

        def _parts(self, data):
            """Per input of the join, what the convolution reads of it (a function of the
            input's new expression), when `data` is a join along the channels, or an NHWC
            pooling of one (which pools each input's channels alike: SqueezeNet's max pool
            between fire modules), that feeds only this convolution."""
            value = self.bound.get(data)
            if not isinstance(value, relax.Call) or self.uses.get(data, 0) != 1:
                return None
            if value.op in pools and value.attrs.layout == "NHWC" and \
                    (value.attrs.out_layout or "NHWC") == "NHWC":
                inner = self._parts(value.args[0])
                if inner is None:
                    return None
                return [(part, lambda x, f=f, v=value: relax.Call(v.op, [f(x)], v.attrs))
                        for part, f in inner]
            if not value.op.same_as(concat_op):
                return None
            fields = value.args[0]
            fields = self.bound.get(fields, fields)
            if not isinstance(fields, relax.Tuple) or not 2 <= len(fields.fields) <= MAX_INPUTS:
                return None
            shape = static_shape(value)
            if not shape or int(value.attrs.axis) % len(shape) != len(shape) - 1:
                return None
            return [(part, lambda x: x) for part in fields.fields]

        def visit_call_(self, call):
            if not call.op.same_as(conv_op):
                return super().visit_call_(call)
            a = call.attrs
            weight = _const_value(self.bound.get(call.args[1], call.args[1]))
            parts = self._parts(call.args[0])
            if (parts is None or weight is None or weight.ndim != 4 or a.data_layout != "NHWC"
                    or a.kernel_layout != "HWIO" or int(a.groups) != 1
                    or weight.shape[:2] != (1, 1) or weight.dtype != np.float32
                    or any(int(s) != 1 for s in a.strides) or any(int(p) for p in a.padding)
                    or (a.out_layout or "NHWC") != "NHWC"
                    or weight.shape[3] > weight.shape[2]):
                return super().visit_call_(call)
            widths = [static_shape(p) for p, _ in parts]
            if any(w is None for w in widths) or sum(w[-1] for w in widths) != weight.shape[2]:
                return super().visit_call_(call)
            total, start = None, 0
            for (part, read), shape in zip(parts, widths):
                piece = relax.const(np.ascontiguousarray(weight[:, :, start:start + shape[-1]]))
                start += shape[-1]
                data = read(self.visit_expr(part))
                data = self.builder_.emit(data) if isinstance(data, relax.Call) else data
                conv = relax.op.nn.conv2d(
                    data, piece, strides=a.strides, padding=a.padding,
                    dilation=a.dilation, groups=1, data_layout="NHWC", kernel_layout="HWIO",
                    out_layout="NHWC", out_dtype=a.out_dtype)
                # the running sum is the next convolution's residual: its fused epilogue
                total = self.builder_.emit(conv if total is None else relax.op.add(
                    self.builder_.emit(conv), total))
            count[0] += 1
            return total

    mod = _map_main(mod, lambda m, f: Split(m, f))
    return mod, count[0]
