"""Transposed convolutions on NHWC data as ordinary convolutions and a pixel shuffle.

Layout conversion moves a `conv2d_transpose` that follows an NHWC convolution to NHWC too, and
TVM 0.27 lowers `conv2d_transpose` for NCHW only: such a model did not compile on cpu at all
(a U-Net decoder, any upsampling by ConvTranspose after a conv). TOPI's NCHW kernel zero-fills
the input (a stride-s layer computes s*s times the useful products) and is unscheduled.

The sub-pixel form used here computes each output phase directly. Along one axis, with the
kernel dilated into `k` taps, stride `s` and leading pad `p`, output `o = q*s + r` is

    y[q*s + r] = sum_j x[q + c_r - j] * w[m_r + s*j],   t = r + p, m_r = t % s, c_r = t // s

for the taps `m_r + s*j < k`: a correlation of x with a per-phase slice of the kernel, with
no product on the zeros that TOPI inserts. When every phase reads the same window (a kernel the
size of its stride, U-Net's 2x2/2) the phases are one convolution whose output channels are
(phase, channel): a 1x1 convolution for 2x2/2. Otherwise (DCGAN's 4x4/2 pad 1: the phases'
2x2 taps sit at different offsets; one 3x3 window would compute 9 products for 4) each phase
is its own convolution and the phases are stacked. A pixel shuffle (a reshape, one permute)
and a crop to the output size follow; the convolutions are ordinary NHWC conv2d that library
dispatch or TVM's GEMM kernels take like any other. Measured (scripts/probe_families.py):
DCGAN-like generator 1.45 ms vs ONNX Runtime 1.69 (one 3x3 window per layer: 2.6 ms).

What the rewrite does not take (weights that are not constants, symbolic spatial sizes) goes
back to NCHW between two transposes, where TVM's own lowering exists.
"""

from __future__ import annotations

import numpy as np

from .relax_passes import _map_main, _op, bound_constant

# at most this many output phases (strides 8x8): each is a convolution, so a hostile stride
# (1000x1000: a million convolutions to build) goes back to TVM's NCHW lowering instead
MAX_PHASES = 64


def _axis_phases(kernel: int, stride: int, pad: int) -> list[dict[int, int]]:
    """Per output phase r of one axis: {input offset: kernel tap} (empty when the kernel is
    shorter than the stride and the phase gets no tap)."""
    phases = []
    for r in range(stride):
        t = r + pad
        m, c = t % stride, t // stride
        phases.append({c - j: m + stride * j for j in range(-(-(kernel - m) // stride))
                       if m + stride * j < kernel})
    return phases


def _feed(lo: int, hi: int, size_in: int, q: int):
    """The input crop (begin, end) and zero pad (before, after) under which a convolution
    with a window of offsets lo..hi gives outputs 0..q-1; None when nothing is read."""
    crop = (max(0, lo), min(size_in, q + hi))
    if crop[0] >= crop[1]:
        return None
    return crop, (max(0, -lo), max(0, q + hi - size_in))


def _dilated(weight: np.ndarray, dilation) -> np.ndarray:
    dh, dw = dilation
    cin, cout_g, kh, kw = weight.shape
    out = np.zeros((cin, cout_g, (kh - 1) * dh + 1, (kw - 1) * dw + 1), weight.dtype)
    out[:, :, ::dh, ::dw] = weight
    return out


def _oihw(taps: np.ndarray, groups: int) -> np.ndarray:
    """IOHW taps [Cin, Cout/g, a, b] -> a grouped convolution's OIHW [Cout, Cin/g, a, b]."""
    cin, cout_g = taps.shape[:2]
    grouped = taps.reshape(groups, cin // groups, cout_g, *taps.shape[2:])
    return grouped.transpose(0, 2, 1, 3, 4).reshape(groups * cout_g, cin // groups,
                                                    *taps.shape[2:])


def _window(phases: list[dict[int, int]]) -> tuple[int, int]:
    offsets = [o for phase in phases for o in phase]
    return min(offsets), max(offsets)


def _unified_weights(weight, groups, phases_h, phases_w) -> np.ndarray:
    """All phases in one window: OIHW, output channel (group, phase_h, phase_w, channel)."""
    (lo_h, hi_h), (lo_w, hi_w) = _window(phases_h), _window(phases_w)
    cin, cout_g = weight.shape[:2]
    sh, sw = len(phases_h), len(phases_w)
    out = np.zeros((groups, sh, sw, cout_g, cin // groups, hi_h - lo_h + 1, hi_w - lo_w + 1),
                   weight.dtype)
    for rh, ph in enumerate(phases_h):
        for rw, pw in enumerate(phases_w):
            for oh, th in ph.items():
                for ow, tw in pw.items():
                    taps = _oihw(weight[:, :, th:th + 1, tw:tw + 1], groups)[:, :, 0, 0]
                    out[:, rh, rw, :, :, oh - lo_h, ow - lo_w] = taps.reshape(
                        groups, cout_g, cin // groups)
    return out.reshape(-1, cin // groups, *out.shape[-2:])


def _phase_weights(weight, groups, phase_h: dict[int, int], phase_w: dict[int, int]):
    """One phase's own window: OIHW taps at offsets lo..hi of each axis."""
    rows = [phase_h[o] for o in range(min(phase_h), max(phase_h) + 1)]
    cols = [phase_w[o] for o in range(min(phase_w), max(phase_w) + 1)]
    return _oihw(weight[:, :, rows][:, :, :, cols], groups)


def _dims(expr):
    """[batch, H, W, C] with H, W, C static (the batch may be symbolic), else None."""
    from tvm import tirx

    shape = getattr(getattr(expr, "ty", None), "shape", None)
    if shape is None or len(shape) != 4:
        return None
    dims = [int(v) if isinstance(v, tirx.IntImm) else v for v in shape]
    return dims if all(isinstance(d, int) for d in dims[1:]) else None


def conv_transpose_as_conv(mod):
    """Rewrite every NHWC `conv2d_transpose` of the module (see the module docstring)."""
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    conv_t = _op("relax.nn.conv2d_transpose")

    @mutator
    class Rewrite(PyExprMutator):
        def visit_call_(self, call):
            new = super().visit_call_(call)
            if not isinstance(new, relax.Call) or new.op != conv_t \
                    or str(new.attrs.data_layout) != "NHWC":
                return new
            conv = self._as_conv(new)
            return conv if conv is not None else self._in_nchw(new)

        def _as_conv(self, call):
            attrs = call.attrs
            weight = bound_constant(self, call.args[1])
            shape_in, shape_out = _dims(call.args[0]), _dims(call)
            if weight is None or weight.ndim != 4 or shape_in is None or shape_out is None \
                    or str(attrs.kernel_layout) != "IOHW" or str(attrs.out_layout) != "NHWC":
                return None
            groups = int(attrs.groups)
            sh, sw = (int(s) for s in attrs.strides)
            if sh * sw > MAX_PHASES:
                return None
            pads = [int(p) for p in attrs.padding]     # top, left, bottom, right
            weight = _dilated(weight, [int(d) for d in attrs.dilation])
            n, h, w, _ = shape_in
            _, oh, ow, cout = shape_out
            phases_h = _axis_phases(weight.shape[2], sh, pads[0])
            phases_w = _axis_phases(weight.shape[3], sw, pads[1])
            qh, qw = -(-oh // sh), -(-ow // sw)
            if not any(phases_h) or not any(phases_w):
                return None
            useful = sum(map(len, phases_h)) * sum(map(len, phases_w))
            (lo_h, hi_h), (lo_w, hi_w) = _window(phases_h), _window(phases_w)
            if (hi_h - lo_h + 1) * (hi_w - lo_w + 1) * sh * sw == useful:
                # every phase reads the same window (a kernel the size of its stride):
                # one convolution, output channels (group, phase_h, phase_w, channel)
                conv = self._conv(call, weight=_unified_weights(weight, groups, phases_h,
                                                                phases_w),
                                  window=((lo_h, hi_h), (lo_w, hi_w)), q=(qh, qw))
                if conv is None:
                    return None
                per = cout // groups
                split = self.builder_.emit(relax.op.reshape(conv, [n, qh, qw, groups, sh, sw,
                                                                   per]))
                moved = self.builder_.emit(relax.op.permute_dims(split, [0, 1, 4, 2, 5, 3, 6]))
            else:   # a convolution per phase with its own taps: no product on a zero tap
                outs = []
                for ph in phases_h:
                    for pw in phases_w:
                        conv = None
                        if ph and pw:
                            conv = self._conv(call, _phase_weights(weight, groups, ph, pw),
                                              (_window([ph]), _window([pw])), (qh, qw))
                        outs.append(conv if conv is not None else relax.op.zeros(
                            [n, qh, qw, cout], str(call.ty.dtype)))
                stacked = self.builder_.emit(relax.op.stack(outs, axis=3))
                split = self.builder_.emit(relax.op.reshape(stacked, [n, qh, qw, sh, sw, cout]))
                moved = self.builder_.emit(relax.op.permute_dims(split, [0, 1, 3, 2, 4, 5]))
            full = relax.op.reshape(moved, [n, qh * sh, qw * sw, cout])
            if (qh * sh, qw * sw) == (oh, ow):
                return full
            full = self.builder_.emit(full)
            return relax.op.strided_slice(full, [1, 2], [0, 0], [oh, ow])

        def _conv(self, call, weight: np.ndarray, window, q):
            """An NHWC convolution of the transposed one's input with `weight` over the
            window of offsets ((lo_h, hi_h), (lo_w, hi_w)), giving q = (qh, qw) outputs."""
            _, h, w, _ = _dims(call.args[0])
            feeds = [_feed(lo, hi, size, count) for (lo, hi), size, count in
                     zip(window, (h, w), q)]
            if None in feeds:
                return None
            ((h0, h1), (pt, pb)), ((w0, w1), (pl, pr)) = feeds
            x = call.args[0]
            if (h0, h1, w0, w1) != (0, h, 0, w):
                x = self.builder_.emit(relax.op.strided_slice(x, [1, 2], [h0, w0], [h1, w1]))
            return self.builder_.emit(relax.op.nn.conv2d(
                x, relax.const(np.ascontiguousarray(weight)), padding=[pt, pl, pb, pr],
                groups=int(call.attrs.groups), data_layout="NHWC", kernel_layout="OIHW",
                out_dtype=str(call.ty.dtype)))

        def _in_nchw(self, call):
            attrs = call.attrs
            x = self.builder_.emit(relax.op.permute_dims(call.args[0], [0, 3, 1, 2]))
            y = self.builder_.emit(relax.op.nn.conv2d_transpose(
                x, call.args[1], strides=attrs.strides, padding=attrs.padding,
                output_padding=attrs.output_padding, dilation=attrs.dilation,
                groups=attrs.groups, data_layout="NCHW", kernel_layout=attrs.kernel_layout,
                out_dtype=str(call.ty.dtype)))
            return relax.op.permute_dims(y, [0, 2, 3, 1])

    return _map_main(mod, lambda m, f: Rewrite(m))
