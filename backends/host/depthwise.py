"""A schedule for depthwise convolutions of NHWC data: the kernels the cpu backend keeps in TVM
instead of calling the library (backends/cpu/torch_library.py, `TVM_DEPTHWISE_MAX_FLOPS`).

A depthwise convolution does 9-25 multiply-adds per output: for the small feature maps of
mobile networks the library call's fixed cost (oneDNN through torch: 45-60 us before any
arithmetic, docs/performance.md) is most of its time, while a compiled loop nest costs
nothing to enter. TVM's default loop nest for it is scalar with the channel innermost in
the reduction, so the rule below reorders it: for each output pixel, the channels in vector
chunks, the window taps accumulated per chunk in registers, the bias and activation applied
to the chunk before it is stored, a few pixels of a row at a time so that each tap's weight
vector is loaded once for them. The zero padding is made per block of output rows
(reduction_kernel.PAD_ROWS) into a small buffer the taps then read without conditions. A
chunk's taps must be contiguous vectors: the cpu backend lays constant weights out
[kh, kw, 1, C] at compile time (backends/host/hwio.py); an OIHW weight [C, 1, kh, kw]
(training's, not a constant) is copied so once per call. Serial: 45-70
GFLOP/s on one Zen 4 core for 3x3 windows, 9-17 us for mobile networks' 14x14 maps where
oneDNN's call takes 45-60.

It takes a PrimFunc of one reduction block with four spatial axes (n, h, w, c) and the
window's reduction axes, writing a 4-D buffer, whose weight read is [c, 0, kh, kw]: TOPI's
group_conv2d_nhwc with one channel per group, after FuseOps put its pad before it and the
elementwise epilogue after it. Anything else is left to the other rules.
"""

from __future__ import annotations

from .lanes import dividing_lanes, vector_lanes
from .reduction_kernel import (EVEN, balance, epilogue_per_tile, inline_producers,
                               one_reduction, pad_block_rows, pad_per_block, threads,
                               vectorized_pass, worth_parallel)
from .tir_walk import static_int as _static

# output pixels of one row computed together (register blocking)
MAX_PIXELS = 8


def _extent(sch, loop) -> int | None:
    return _static(sch.get(loop).extent)


def _is_depthwise(sch, block) -> tuple | None:
    """(weight buffer, output shape, whether the weight is OIHW) when `block` is a depthwise
    NHWC convolution: a 4-D float32 output [N, H, W, C], a weight read of shape
    [C, 1, kh, kw] or [kh, kw, 1, C] and reduction axes spanning kh * kw
    (normalize_prim_func has dropped the unit axes)."""
    stmt = sch.get(block)
    if len(stmt.writes) != 1 or "conv2d_nhwc" not in stmt.name_hint:
        return None
    out = stmt.writes[0].source
    shape = [_static(d) for d in out.shape]
    if len(shape) != 4 or None in shape or str(out.dtype) != "float32":
        return None
    window = 1
    for iv in stmt.iter_vars:
        if iv.iter_type != 0:
            window *= _static(iv.dom.extent) or 0
    for read in stmt.reads:
        w = [_static(d) for d in read.source.shape]
        if len(w) != 4 or None in w:
            continue
        if w[:2] == [shape[3], 1] and w[2] * w[3] == window:
            return read.source, shape, True
        if w[2:] == [1, shape[3]] and w[0] * w[1] == window:
            return read.source, shape, False
    return None


def schedule_depthwise(func, target, parallel: bool):
    """The schedule described in the module docstring, or None when `func` is not a depthwise
    NHWC convolution (with its pad and elementwise epilogue)."""
    kernel = one_reduction(func)
    if kernel is None:
        return None
    sch, conv, producers, consumers = kernel
    found = _is_depthwise(sch, conv)
    if found is None:
        return None
    try:
        return _apply(sch, conv, *found, producers, consumers, target, parallel)
    except Exception:  # noqa: BLE001 - a ScheduleError: a nest this rule does not know
        return None


def _apply(sch, conv, weight, shape, oihw, producers, consumers, target, parallel: bool):
    batch, height, width, channels = shape
    loops = sch.get_loops(conv)
    kinds = "".join("S" if iv.iter_type == 0 else "R" for iv in sch.get(conv).iter_vars)
    spatial = len(kinds) - len(kinds.lstrip("S"))
    # the spatial loops are [n, h, w, c] less the unit ones normalize_prim_func dropped
    expected = [e for e in (batch, height, width) if e != 1] + [channels]
    if kinds[spatial:] != "R" * (len(kinds) - spatial) or len(loops) != len(kinds) or \
            [_extent(sch, lp) for lp in loops[:spatial]] != expected or height == 1:
        return None
    may_parallel, parallel = parallel, parallel and worth_parallel(sch, conv)
    *pixels, c = loops[:spatial]
    window = loops[spatial:]
    # the pad (the only producer TOPI emits) stays its own pass, scheduled last; any other
    # producer would be an elementwise op FuseOps put before the convolution: inlined
    pad = inline_producers(sch, producers)
    lanes = dividing_lanes(channels, vector_lanes(target))
    c_outer, c_inner = sch.split(c, factors=[None, lanes])
    # a few neighbouring pixels per chunk: each tap's weight vector is loaded once for them
    block_w = max(d for d in range(1, MAX_PIXELS + 1) if width % d == 0)
    w_outer, w_inner = sch.split(pixels[-1], factors=[None, block_w])
    pixels = [*pixels[:-1], w_outer]
    row_block = None
    images = batch if len(pixels) > 2 else 1
    workers = threads(target) if parallel else 1
    rb = (pad_block_rows(height, images, workers=workers)
          if pad is not None and len(pixels) >= 2 else None)
    # rows (or blocks of rows) too few to share the threads evenly (a 7x7 map: one block of
    # 7 rows ran on one of 2 threads): the chunks of channels are the parallel loop instead,
    # each padding its own slice of the map, when they share the threads better
    rows_even = balance(images * (height // rb if rb else height), workers)
    chunks = _extent(sch, c_outer)
    by_channels = (parallel and len(pixels) >= 2 and rows_even < EVEN
                   and balance(chunks, workers) >= EVEN)
    if by_channels:
        sch.reorder(c_outer, *pixels, *window, w_inner, c_inner)
        tile = pixels[-1]
    else:
        if rb is not None:   # the pad per block of output rows (PAD_ROWS)
            h_outer, row_block = sch.split(pixels[-2], factors=[None, rb])
            pixels = [*pixels[:-2], h_outer, w_outer]
        sch.reorder(*pixels[:-1], *([row_block] if row_block else []), pixels[-1], c_outer,
                    *window, w_inner, c_inner)
        tile = c_outer
    sch.unroll(w_inner)
    sch.unroll(c_inner)
    if len(pixels) > 2:   # [n, h, w_outer]: one loop over the output rows of every image
        pixels = [sch.fuse(*pixels[:-1]), pixels[-1]]
    # before the reduction is split (TIR requires it)
    if by_channels:
        sch.parallel(c_outer)
    elif parallel and len(pixels) == 2:
        sch.parallel(pixels[0])
    if oihw:   # taps read as [1, kh, kw, C]: each chunk's weights one contiguous vector
        packed = sch.cache_read(conv, _read_index(sch, conv, weight), "global")
        sch.transform_layout(packed, ("write", 0), lambda o, i, y, x: (i, y, x, o))
    # accumulate a chunk in registers, write it out through the epilogue per chunk
    out_block = epilogue_per_tile(sch, conv, consumers, tile, target, may_parallel)
    init = sch.decompose_reduction(conv, window[0])
    sch.vectorize(sch.get_loops(init)[-1])
    # the update's lane loop is left to LLVM (16 constant iterations over contiguous
    # vectors: unrolled and vectorized); TIR's vectorize refuses a loop under a reduction
    out_loops = sch.get_loops(out_block)[len(pixels) + 1 + (row_block is not None):]
    sch.vectorize(out_loops[-1])
    if by_channels and pad is not None:   # each chunk's slice padded in its loop
        pad_per_block(sch, pad, c_outer, target)
    elif row_block is not None and len(pixels) == 2:   # the block's rows padded in its loop
        pad_per_block(sch, pad, pixels[0], target)
    elif pad is not None:   # one vectorized pass over the whole input
        vectorized_pass(sch, pad, target, parallel)
    return sch


def _read_index(sch, block, buffer) -> int:
    for i, read in enumerate(sch.get(block).reads):
        if read.source.same_as(buffer):
            return i
    raise ValueError("weight read not found")
