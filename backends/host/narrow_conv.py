"""Convolutions with a handful of output channels (an image-to-image network's RGB output, a
one-channel depth or mask head) vectorized along the output row.

The GEMM schedule (gemm.py) vectorizes along the output channels; three of them fill no
vector, so a 9x9 convolution 32 -> 3 channels on a 128x128 map (a style-transfer network's
last layer) ran at 28 GFLOP/s, 9 ms, a third of that network (oneDNN: 39 GFLOP/s). Here the
output row is the vector: the input is laid out channel-major ([N, C, H, W], one transpose
of the activation), so `lanes` neighbouring output pixels read `lanes` contiguous inputs for
each (channel, tap), each multiplied by one broadcast weight, and a tile of a few vectors
times every output channel stays in registers while the reduction runs. The result is
written straight to NHWC (a few channels: the strided stores are a small part of the work).

Taken: float32 NHWC conv2d by a constant HWIO weight, groups 1, at most MAX_CHANNELS output
channels, unit horizontal stride, an output row of whole vectors.
"""

from __future__ import annotations

import numpy as np

from .relax_passes import bound_constant, rewrite_calls

MAX_CHANNELS = 4
ROW_VECTORS = 4         # vectors of output pixels a register tile holds per channel
BLOCK = "conv2d_rows"   # the TE block the schedule rule recognises


def conv2d_rows(x_nchw, weight, strides, padding, dilation, out_hw):
    """out[n, y, x, o] = sum over (c, ky, kx) of x[n, c, y*sh + ky*dh, x + kx*dw] w[o, c, ky, kx]
    with `x_nchw` padded here (Relax's (top, left, bottom, right))."""
    from tvm import te, topi

    channels_out, channels, kh, kw = (int(d) for d in weight.shape)
    sh = int(strides[0])
    dh, dw = (int(d) for d in dilation)
    top, left, bottom, right = (int(p) for p in padding)
    data = x_nchw
    if top or left or bottom or right:
        data = topi.nn.pad(x_nchw, [0, 0, top, left], [0, 0, bottom, right], name="pad_rows")
    n = x_nchw.shape[0]
    out_h, out_w = out_hw
    rc = te.reduce_axis((0, channels), "rc")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    return te.compute(
        (n, out_h, out_w, channels_out),
        lambda b, y, xx, o: te.sum(data[b, rc, y * sh + ry * dh, xx + rx * dw]
                                   * weight[o, rc, ry, rx], axis=[rc, ry, rx]),
        name=BLOCK)


def narrow_convs(mod, lanes: int):
    """NHWC conv2d with few output channels -> transpose to NCHW + conv2d_rows. Returns
    (module, number rewritten)."""
    from tvm import relax

    from anychip.compiler.relax_info import dtype_of, static_shape

    count = [0]

    def rewrite(mutator, new):
        a = new.attrs
        out, data = static_shape(new), static_shape(new.args[0])
        weight = bound_constant(mutator, new.args[1])
        if out is None or data is None or weight is None or weight.ndim != 4 or \
                weight.dtype != np.float32 or dtype_of(new.args[0]) != "float32" or \
                a.data_layout != "NHWC" or (a.out_layout or "NHWC") != "NHWC" or \
                int(a.groups) != 1 or int(a.strides[1]) != 1:
            return new
        oihw = {"HWIO": (3, 2, 0, 1), "OIHW": (0, 1, 2, 3)}.get(str(a.kernel_layout))
        if oihw is None:
            return new
        weight = weight.transpose(oihw)
        if weight.shape[0] > MAX_CHANNELS or out[2] % lanes or out[2] < lanes:
            return new
        count[0] += 1
        x = mutator.builder_.emit(relax.op.permute_dims(new.args[0], [0, 3, 1, 2]))
        return mutator.builder_.call_te(
            conv2d_rows, x, relax.const(np.ascontiguousarray(weight)),
            [int(s) for s in a.strides], [int(p) for p in a.padding],
            [int(d) for d in a.dilation], (out[1], out[2]), primfunc_name_hint=BLOCK)

    return rewrite_calls(mod, ("relax.nn.conv2d",), rewrite), count[0]


def schedule_rows(func, target, parallel: bool):
    """The schedule of a conv2d_rows kernel (None for any other): rows of output in parallel;
    per tile of ROW_VECTORS vectors of pixels, every channel accumulated in registers over
    (input channel, ky, kx), the pixels' lane loop innermost."""
    from tvm import s_tir

    from .elementwise_loops import _parallel_vectorize
    from .lanes import vector_lanes

    sch = s_tir.Schedule(func)
    try:
        block = sch.get_sblock(BLOCK)
    except Exception:  # noqa: BLE001 - not one of ours
        return None
    lanes = vector_lanes(target)
    try:
        n, y, x, o, rc, ry, rx = sch.get_loops(block)
        width = int(sch.get(x).extent)
        vectors = max(v for v in range(1, ROW_VECTORS + 1) if width % (v * lanes) == 0)
        x_outer, x_vec, x_lane = sch.split(x, factors=[None, vectors, lanes])
        rows = sch.fuse(n, y)
        sch.reorder(rows, x_outer, rc, ry, rx, o, x_vec, x_lane)
        if parallel:   # before the reduction is split (TIR requires it)
            sch.parallel(rows)
        acc = sch.cache_write(block, 0, "local")
        # the accumulators channel-major: each channel's pixels one contiguous vector
        sch.transform_layout(block, ("write", 0), lambda b, yy, xx, oo: (b, yy, oo, xx))
        sch.reverse_compute_at(acc, x_outer)
        init = sch.decompose_reduction(block, rc)
        sch.unroll(o)
        sch.unroll(x_vec)
        sch.unroll(x_lane)
        init_loops = sch.get_loops(init)
        sch.vectorize(init_loops[-1])
        try:
            pad = sch.get_sblock("pad_rows")
            _parallel_vectorize(sch, pad, target, parallel)
        except Exception:  # noqa: BLE001 - unpadded
            pass
    except Exception:  # noqa: BLE001 - TVM's ScheduleError: left to the other rules
        return None
    return sch
