"""Constant weights of the GEMMs and convolutions TVM computes, packed in column panels at
compile time, the layout the register tile (gemm.py) reads them in.

The tile reads, for every step of its reduction, one row of its columns of the weight: in
[K, N] or HWIO that row is one or two vectors, and the next row is a whole row (N floats)
further on. Hot in cache that costs nothing; streamed from memory it does: a 4 KB page holds
two rows of a 512-wide weight, the hardware prefetchers stop at page boundaries, and every
row is a miss. ResNet-50's last stage (3x3x512x512, 9.4 MB, read once a run) ran at 137-145
GFLOP/s in-model against 198-217 alone, hot. Packed as [N / c, K, c] (matmul) or
[O / c, kh, kw, I, c] (convolution), `c` the tile's columns, a tile's panel is one contiguous
stream: on 2 Zen 4 cores, with caches flushed between calls, [49, 4608] x [4608, 512] 2265 ->
1124 us, [49, 512] x [512, 2048] 597 -> 471, GPT-2's [128, 256] x [256, 8192] head 2980 ->
2587; hot, the same or a little faster (docs/performance.md). The packing is a transpose of
a constant, done once here; the kernel (a TE compute indexing the panel) keeps the GEMM's
shape, its epilogue fuses as before, and gemm.py recognises the panel index.

GEMVs (one output row: classifiers, squeeze-excite layers on 1x1 maps) too: their panels of
one or two vectors are contiguous streams where gemm._gemv_vectors' wide rows of an unpacked
weight are pieces of rows a page apart: [1, 1280] x [1280, 1008] cold 153 -> 116 us, VGG's
[1, 25088] x [25088, 4096] 21.0 -> 20.2 ms; zoo:mobilenet_v3 -6% in one A/B run.

Only what the GEMM schedule takes is packed: float32, static shapes, ungrouped NHWC
convolutions with HWIO weights (backends/host/hwio.py), output widths of whole vectors that
are not ragged (gemm.ragged_rows).
"""

from __future__ import annotations

import numpy as np

from .gemm import ACCUMULATORS, REGISTERS, narrow_row, ragged_rows, tile
from .lanes import dividing_lanes
from .relax_passes import _op, bound_constant, rewrite_calls


def panel_columns(pixels: int, width: int, full_lanes: int, weight_first: bool) -> int | None:
    """The columns `c` of a panel: those of the tile gemm.py picks for this output (rows of
    `pixels`, `width` columns), None when the width has no whole vectors to pack for."""
    lanes = dividing_lanes(width, full_lanes)
    if lanes < 4 or width % lanes or ragged_rows(width, full_lanes):
        return None
    narrow = narrow_row(pixels, width, lanes, full_lanes)
    if narrow is not None:   # a tile of the whole row: one panel
        return narrow[1] * lanes
    _, vectors = tile(pixels, width, lanes, REGISTERS.get(lanes, 16),
                      None if weight_first else ACCUMULATORS)
    return vectors * lanes


def pack_matmul(x, panels):
    """x [..., K] @ W, W given as panels [N / c, K, c]: the same values as matmul(x, W)."""
    from tvm import te

    *_, size = x.shape
    groups, _, c = (int(d) for d in panels.shape)
    k = te.reduce_axis((0, size), "k")
    return te.compute(
        (*x.shape[:-1], groups * c),
        lambda *i: te.sum(x(*i[:-1], k) * panels[i[-1] // c, k, i[-1] % c], axis=k),
        name="matmul_packed")


def pack_conv2d(x, panels, strides, padding, dilation):
    """NHWC conv2d of x by W, W given as panels [O / c, kh, kw, I, c]; `padding` is Relax's
    (top, left, bottom, right)."""
    from tvm import te, topi

    n, height, width, _ = x.shape
    groups, kh, kw, channels, c = (int(d) for d in panels.shape)
    (sh, sw), (dh, dw) = strides, dilation
    top, left, bottom, right = padding
    out_h = (int(height) + top + bottom - dh * (kh - 1) - 1) // sh + 1
    out_w = (int(width) + left + right - dw * (kw - 1) - 1) // sw + 1
    data = x
    if top or left or bottom or right:   # named as TOPI's, so gemm.py finds the pad pass
        data = topi.nn.pad(x, [0, top, left, 0], [0, bottom, right, 0], name="pad_temp")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    rc = te.reduce_axis((0, channels), "rc")
    return te.compute(
        (n, out_h, out_w, groups * c),
        lambda b, y, xx, o: te.sum(
            data[b, y * sh + ry * dh, xx * sw + rx * dw, rc]
            * panels[o // c, ry, rx, rc, o % c], axis=[ry, rx, rc]),
        name="conv2d_nhwc_packed")


def _pixels(shape) -> int:
    """The innermost output axis a tile's rows run along, as gemm.py sees it once the unit
    axes are dropped: the last extent above 1 before the columns (1 for a GEMV)."""
    return next((d for d in reversed(shape[:-1]) if d > 1), 1)


def pack_weights(mod, full_lanes: int):
    """matmul(x, W) and NHWC conv2d(x, W HWIO) with W a float32 constant -> the TE kernels
    above with W packed in panels. Returns (module, number packed)."""
    from tvm import relax

    from anychip.compiler.relax_info import dtype_of, static_shape

    matmul_op = _op("relax.matmul")
    count = [0]

    def rewrite(mutator, new):
        out, data = static_shape(new), static_shape(new.args[0])
        if out is None or data is None or dtype_of(new) != "float32" or \
                dtype_of(new.args[0]) != "float32":
            return new
        weight = bound_constant(mutator, new.args[1])
        if weight is None or weight.dtype != np.float32:
            return new
        weight_first = weight.nbytes > 4 * int(np.prod(data))
        c = panel_columns(_pixels(out), out[-1], full_lanes, weight_first)
        if c is None:
            return new
        if new.op.same_as(matmul_op):
            if weight.ndim != 2 or len(data) < 2:
                return new
            k, n = weight.shape
            panels = weight.reshape(k, n // c, c).transpose(1, 0, 2)
            count[0] += 1
            return mutator.builder_.call_te(pack_matmul, new.args[0],
                                         relax.const(np.ascontiguousarray(panels)),
                                         primfunc_name_hint="matmul_packed")
        a = new.attrs
        if a.data_layout != "NHWC" or a.kernel_layout != "HWIO" or int(a.groups) != 1 \
                or (a.out_layout or "NHWC") != "NHWC" or weight.ndim != 4:
            return new
        kh, kw, channels, n = weight.shape
        panels = weight.reshape(kh, kw, channels, n // c, c).transpose(3, 0, 1, 2, 4)
        count[0] += 1
        return mutator.builder_.call_te(
            pack_conv2d, new.args[0], relax.const(np.ascontiguousarray(panels)),
            [int(s) for s in a.strides], [int(p) for p in a.padding],
            [int(d) for d in a.dilation], primfunc_name_hint="conv2d_packed")

    # (the replaced weights are left for the caller's DeadCodeElimination)
    return rewrite_calls(mod, ("relax.matmul", "relax.nn.conv2d"), rewrite), count[0]
