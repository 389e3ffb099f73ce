"""3x3 stride-1 convolutions left to TVM computed as Winograd F(m x m, 3 x 3).

A 3x3 convolution does 9 multiply-adds per output and input channel. Winograd's minimal
filtering (Lavin & Gray, arXiv:1509.09308) computes an m x m tile of outputs from an
(m + 2) x (m + 2) tile of inputs with (m + 2)^2 products per channel pair, after transforming
both into that space: F(4x4, 3x3) does 36 where the direct form does 144 (4x fewer), F(2x2,
3x3) 16 where it does 36. The products are one batched GEMM, [alpha^2, tiles, C] x
[alpha^2, C, O], which gemm.py's register tile runs at the same rate as a convolution; the
weight's transform (G g G^T) is a constant computed here in float64; the input's (B^T d B)
and the output's (A^T M A) are two light kernels around the GEMM: the input's written out in
TIR (`winograd_input`: the separable sums of B's nonzero coefficients), the output's a TE
compute that fusion gives the convolution's epilogue, scheduled by `schedule_winograd` (each
output position in the tile unrolled, so the matrices' zero coefficients vanish); both
vectorize the channels and run the tiles in parallel. ONNX Runtime's CPU convolutions (MLAS)
are direct.

Where it loses: the transformed weight is (m + 2)^2 / 9 times the weight (4x for F(4, 3)), and
on small maps (7x7 x 512) the GEMM has few rows and streams that weight; `estimate` keeps
the direct kernel wherever Winograd is not clearly better.

Numerics: the transform matrices of TVM's own Winograd (`topi.nn.winograd_util`, Cook-Toom at
the interpolation points of Barabasz et al., arXiv:1803.10986, chosen for float32 error); the
error of F(4, 3) there is about 3e-7 of the output's magnitude per layer, within the fp32
tolerances (measured against ONNX Runtime in docs/performance.md). A NaN or infinity in an
input tile reaches every output of that tile (the transforms mix the whole tile), where a
direct convolution spreads it over the 3x3 window only: `--winograd false` (API:
`winograd=False`) keeps every convolution direct.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .relax_passes import bound_constant, rewrite_calls

KERNEL = 3
# F(4x4, 3x3) or F(2x2, 3x3): larger tiles lose float32 accuracy fast (F(6, 3): 8.8e-7,
# F(7, 3): 3.7e-6 in Barabasz et al.) and grow the transforms' unrolled bodies.
TILES = (4, 2)
# The machine's balance for the estimate: FLOPs of one core's GEMM per byte it streams from
# memory (about 100 GFLOP/s against about 12 GB/s on the 2-core Zen 4 this was measured on).
FLOPS_PER_BYTE = 8.0
# The transforms' cost per element they write (input: alpha^2 x tiles x C, output's reads:
# alpha^2 x tiles x O), in GEMM FLOP-equivalents: on ResNet's 56x56x64 layer each transform
# took the time of about 32 GEMM FLOPs per element (65 and 60 us against the GEMM's 256 us
# for 58 MFLOP, 2 Zen 4 cores), and at 24 a 17x23 32->48 layer that the estimate takes ran
# in 0.09 ms against the direct kernel's 0.13: small layers' direct kernels are slower too.
TRANSFORM_FLOPS_PER_ELEMENT = 24.0
# Winograd only where it is estimated at most this share of the direct kernel's time.
MIN_GAIN = 0.75


@functools.lru_cache(maxsize=None)
def transform_matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A [alpha, m], B [alpha, alpha], G [alpha, 3]) of F(m, 3) in float64, as TVM's topi
    Winograd has them (output = A^T [(G g G^T) * (B^T d B)] A); computed once per m (every
    convolution and kernel asks), read-only."""
    from tvm.topi.nn.winograd_util import _cook_toom_convolution, _interpolation_points

    a, b, g = _cook_toom_convolution(_interpolation_points(m + KERNEL - 1), m, KERNEL)
    matrices = tuple(np.array(x, np.float64) for x in (a, b, g))
    for x in matrices:
        x.setflags(write=False)
    return matrices


def _tiles(extent: int, m: int) -> int:
    return -(-extent // m)


def estimate(batch: int, out_h: int, out_w: int, channels: int,
             outputs: int) -> tuple[int | None, float]:
    """(m of the F(m, 3) estimated fastest, None for the direct kernel; that kernel's cost in
    GEMM FLOP-equivalents): GEMM FLOPs plus the weight streamed, plus the transforms."""
    direct = 2.0 * batch * out_h * out_w * channels * outputs * KERNEL * KERNEL \
        + FLOPS_PER_BYTE * 4 * KERNEL * KERNEL * channels * outputs
    best, best_cost = None, MIN_GAIN * direct
    for m in TILES:
        if min(out_h, out_w) < m:
            continue
        alpha2 = (m + KERNEL - 1) ** 2
        tiles = batch * _tiles(out_h, m) * _tiles(out_w, m)
        cost = (2.0 * alpha2 * tiles * channels * outputs
                + FLOPS_PER_BYTE * 4 * alpha2 * channels * outputs
                + TRANSFORM_FLOPS_PER_ELEMENT * alpha2 * tiles * (channels + outputs))
        if cost < best_cost:
            best, best_cost = m, cost
    return best, (best_cost if best is not None else direct)


def winograd_tile(batch: int, out_h: int, out_w: int, channels: int, outputs: int) -> int | None:
    """The m of the F(m, 3) estimated fastest for this convolution, None where the direct
    kernel is."""
    return estimate(batch, out_h, out_w, channels, outputs)[0]


def eligible(attrs, weight_shape, dtype: str) -> bool:
    """Whether a conv2d's attributes and weight (OIHW or HWIO shape) are the kind this
    rewrites: float32, 3x3, stride 1, no dilation, one group."""
    return (dtype == "float32" and int(attrs.groups) == 1
            and all(int(s) == 1 for s in attrs.strides)
            and all(int(d) == 1 for d in attrs.dilation)
            and tuple(weight_shape[2:] if attrs.kernel_layout == "OIHW"
                      else weight_shape[:2]) == (KERNEL, KERNEL))


def _select(index, branches):
    """branches[i] where index == i, as a chain of Selects: one branch once the schedule has
    unrolled the index (schedule_winograd)."""
    from tvm import tirx

    expr = branches[-1]
    for i in range(len(branches) - 2, -1, -1):
        expr = tirx.Select(index == i, branches[i], expr)
    return expr


def _weighted_sum(terms):
    """sum(c * x) over the nonzero coefficients c (float32 constants), 0 when none."""
    from tvm import tirx

    expr = None
    for coefficient, value in terms:
        if coefficient == 0:
            continue
        term = value if coefficient == 1 else (
            -value if coefficient == -1 else value * tirx.const(float(coefficient), "float32"))
        expr = term if expr is None else expr + term
    return expr if expr is not None else tirx.const(0.0, "float32")


def winograd_input(shape, m: int, padding, lanes: int, parallel: bool):
    """The kernel x [N, H, W, C] -> V [alpha^2, tiles, C], V[xi * alpha + nu, t] =
    (B^T d_t B)[xi, nu] for each m x m output tile t (row-major over N, tile rows, tile
    columns); `padding` is Relax's (top, left, bottom, right), read as zeros.

    Written out as TIR rather than TE: one loop nest per (tile, channel vector) storing all
    alpha^2 values, each the separable sum of B's nonzero coefficients. A TE compute indexes
    its output by (xi, nu) and needs a Select chain unrolled away, whose alpha^4 terms cost
    7 s of compile per kernel. The values are expressions, not Let bindings: TVM 0.27
    compiles a Let inside a vectorized loop as lane 0's value broadcast (docs/tvm-notes.md)."""
    from tvm import tirx
    from tvm.script.ir_builder import IRBuilder
    from tvm.script.ir_builder import tirx as T

    _, b_mat, _ = transform_matrices(m)
    alpha = m + KERNEL - 1
    n, height, width, channels = shape
    top, left, bottom, right = padding
    n_h = _tiles(height + top + bottom - KERNEL + 1, m)
    n_w = _tiles(width + left + right - KERNEL + 1, m)
    tiles = n * n_h * n_w
    zero = tirx.const(0.0, "float32")
    with IRBuilder() as ib:
        with T.prim_func(s_tir=True):
            x = T.arg("x", T.Buffer(tuple(shape), "float32"))
            v = T.arg("v", T.Buffer((alpha * alpha, tiles, channels), "float32"))
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            with T.sblock("root"):   # Relax's pattern analysis reads a root block
                with (T.parallel if parallel else T.serial)(0, tiles) as t:
                    with T.serial(0, channels // lanes) as c_out:
                        with T.vectorized(0, lanes) as c_in:
                            c = c_out * lanes + c_in
                            b = tirx.floordiv(t, n_h * n_w)
                            y0 = tirx.floordiv(tirx.floormod(t, n_h * n_w), n_w) * m - top
                            x0 = tirx.floormod(t, n_w) * m - left

                            def d(i, j, b=b, y0=y0, x0=x0, c=c):
                                y, xx = y0 + i, x0 + j
                                inside = tirx.all(y >= 0, y < height, xx >= 0, xx < width)
                                return tirx.if_then_else(inside, x[b, y, xx, c], zero)

                            rows = [[_weighted_sum([(b_mat[i, xi], d(i, j)) for i in range(alpha)])
                                     for j in range(alpha)] for xi in range(alpha)]
                            for xi in range(alpha):
                                for nu in range(alpha):
                                    value = _weighted_sum([(b_mat[j, nu], rows[xi][j])
                                                           for j in range(alpha)])
                                    T.buffer_store(v, value, [xi * alpha + nu, t, c])
    func = ib.get()   # named by the Relax module it joins (bb.add_func), not by a symbol
    return func.without_attr("global_symbol") if "global_symbol" in (func.attrs or {}) else func


def winograd_output(products, m: int, batch: int, out_h: int, out_w: int):
    """M [alpha^2, tiles, O] (the GEMM of the transformed input and weight) -> the
    convolution's output [N, out_h, out_w, O]: (A^T M_t A) placed at tile t, in two separable
    stages: rows R[t, xi, vx] = sum_nu A[nu, vx] M[xi * alpha + nu, t], then
    Y[vy, vx] = sum_xi A[xi, vy] R[t, xi, vx]. Each stage picks its coefficients with a Select
    chain of m branches over one position (folded once schedule_winograd unrolls it); one
    chain of m^2 branches over both positions was 5x the compile (0.45 against 0.09 s a
    kernel, the same run time)."""
    from tvm import te, tirx

    a_mat, _, _ = transform_matrices(m)
    alpha = m + KERNEL - 1
    n_h, n_w = _tiles(out_h, m), _tiles(out_w, m)
    tiles, outputs = int(products.shape[1]), int(products.shape[2])

    def row_value(t, xi, vx, o):
        return _select(vx, [_weighted_sum([(a_mat[nu, c], products[xi * alpha + nu, t, o])
                                           for nu in range(alpha)]) for c in range(m)])

    rows = te.compute((tiles, alpha, m, outputs), row_value, name="winograd_rows")

    def value(b, y, xx, o):
        t = b * (n_h * n_w) + tirx.floordiv(y, m) * n_w + tirx.floordiv(xx, m)
        vx = tirx.floormod(xx, m)
        return _select(tirx.floormod(y, m),
                       [_weighted_sum([(a_mat[xi, r], rows[t, xi, vx, o]) for xi in range(alpha)])
                        for r in range(m)])

    return te.compute((batch, out_h, out_w, outputs), value,
                      name=f"winograd_output_{m}")   # m read back by schedule_winograd


def transformed_weight(hwio: np.ndarray, m: int) -> np.ndarray:
    """W [3, 3, C, O] -> U [alpha^2, C, O] = G W G^T per channel pair, in float64 then float32."""
    _, _, g_mat = transform_matrices(m)
    u = np.einsum("ak,bl,klco->abco", g_mat, g_mat, hwio.astype(np.float64))
    alpha = m + KERNEL - 1
    return np.ascontiguousarray(u.reshape(alpha * alpha, *hwio.shape[2:]).astype(np.float32))


def winograd_convs(mod, full_lanes: int, parallel: bool = True):
    """Every float32 NHWC conv2d with a constant HWIO 3x3 weight, stride 1, no dilation or
    groups, static shapes, where `winograd_tile` picks a tile -> input transform, batched
    matmul with the transformed weight, output transform. Returns (module, number rewritten)."""
    from tvm import relax

    from anychip.compiler.relax_info import dtype_of, static_shape

    from .lanes import dividing_lanes

    count = [0]

    def rewrite(mutator, call):
        a = call.attrs
        if a.data_layout != "NHWC" or a.kernel_layout != "HWIO" \
                or (a.out_layout or "NHWC") != "NHWC":
            return call
        out, data = static_shape(call), static_shape(call.args[0])
        if out is None or data is None or dtype_of(call.args[0]) != "float32":
            return call
        weight = bound_constant(mutator, call.args[1])
        if weight is None or weight.dtype != np.float32 or weight.ndim != 4 \
                or not eligible(a, weight.shape, dtype_of(call)):
            return call
        batch, out_h, out_w, outputs = out
        m = winograd_tile(batch, out_h, out_w, weight.shape[2], outputs)
        if m is None:
            return call
        count[0] += 1
        alpha, channels = m + KERNEL - 1, weight.shape[2]
        bb = mutator.builder_
        kernel = bb.add_func(winograd_input(   # one per shape: add_func dedupes them
            data, m, [int(p) for p in a.padding], dividing_lanes(channels, full_lanes),
            parallel), "winograd_input")
        tiles = bb.emit(relax.call_tir(kernel, [call.args[0]], relax.TensorType(
            (alpha * alpha, batch * _tiles(out_h, m) * _tiles(out_w, m), channels),
            "float32")))
        products = bb.emit(relax.op.matmul(tiles, relax.const(transformed_weight(weight, m))))
        return bb.call_te(winograd_output, products, m, batch, out_h, out_w,
                          primfunc_name_hint="winograd_output")

    return rewrite_calls(mod, ("relax.nn.conv2d",), rewrite), count[0]


def schedule_winograd(func, target, parallel: bool):
    """The output transform's kernel (the block named winograd_output_<m>, with the epilogue
    fusion put after it): output rows and columns split by m and the m x m positions
    unrolled, so that each unrolled copy's Select chain folds to one sparse sum; the tile's
    rows (winograd_rows) computed per channel vector under the tile, their positions unrolled
    too; channels vectorized, tiles parallel."""
    from tvm import s_tir

    from .elementwise_loops import _parallel_vectorize
    from .lanes import dividing_lanes, vector_lanes

    sch = s_tir.Schedule(func)
    try:
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
    except Exception:  # noqa: BLE001 - no root block (an opaque kernel): not ours
        return None
    names = [sch.get(b).name_hint for b in blocks]
    kind = next((n for n in names if n.startswith("winograd_output_")), None)
    if kind is None:
        return None
    at = names.index(kind)
    main = blocks[at]
    # what precedes the transform and the epilogue's inner blocks are inlined; the epilogue's
    # last block reads the transform's values from its buffer, computed right after them
    # per tile and channel vector (inlining the transform's expression into an epilogue that
    # reads it three times, as the NaN-keeping relu does, tripled its compile time)
    rows = [b for b, n in zip(blocks, names) if n.startswith("winograd_rows")]
    for block in blocks[:at] + blocks[at + 1:-1]:
        if not any(block.same_as(r) for r in rows):
            sch.compute_inline(block)
    m = int(kind.split("_")[2])
    b, y, x, o = sch.get_loops(main)
    # the channels, innermost, enter no index arithmetic: any dividing width is safe
    lanes = dividing_lanes(int(sch.get(o).extent), vector_lanes(target))
    y_out, y_in = sch.split(y, [None, m])
    x_out, x_in = sch.split(x, [None, m])
    o_out, o_in = sch.split(o, [None, lanes])
    sch.reorder(b, y_out, x_out, o_out, y_in, x_in, o_in)
    outer = sch.fuse(b, y_out, x_out)
    if parallel:
        sch.parallel(outer)
    sch.unroll(y_in)
    sch.unroll(x_in)
    sch.vectorize(o_in)
    for block in rows:   # the tile's rows, computed per channel vector right before use
        try:
            sch.compute_at(block, o_out)
        except Exception:  # noqa: BLE001 - ScheduleError: another transform fused into the
            sch.compute_inline(block)   # epilogue (Inception's joins) reads them inlined
            continue
        xi, vx, channel = sch.get_loops(block)[-3:]
        sch.unroll(xi)
        sch.unroll(vx)
        sch.vectorize(channel)
    if at != len(blocks) - 1:
        epilogue = blocks[-1]
        try:
            # only an elementwise or permuting epilogue: one writing more (a concatenation,
            # a pad) has outputs no tile of the transform covers, which compute_at skips
            if _written_elements(sch, epilogue) != _written_elements(sch, main):
                raise ValueError("not one output per transform output")
            sch.reverse_compute_at(epilogue, o_out)
        except Exception:  # noqa: BLE001 - TVM's ScheduleError: a loop nest of its own
            _parallel_vectorize(sch, epilogue, target, parallel)
        else:
            inner = sch.get_loops(epilogue)[-1]
            if int(sch.get(inner).extent) == lanes:   # NHWC: the channel vector
                sch.vectorize(inner)
    return sch


def _written_elements(sch, block) -> int:
    """Elements of the buffer `block` writes."""
    (region,) = sch.get(block).writes
    return math.prod(int(d) for d in region.buffer.shape)

