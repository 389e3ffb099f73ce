"""A schedule for NHWC max and average pooling (and global pooling) kept in TVM: the
channels in vector chunks, the window accumulated per chunk in registers, the epilogue
(average's divide, a bias, an activation) applied per chunk, the padded input made per block
of output rows inside the parallel loop (reduction_kernel.PAD_ROWS).

TVM's loop nest for TOPI's pool_max / pool_sum puts the channel outside the window: a scalar
loop, and OuterParallel alone left SqueezeNet's 3x3 max pool over [1, 111, 111, 64] at 0.72
ms (2.7 GFLOP/s, 6.5 GB/s) and its global average pool over [13, 13, 1000] at 0.72 ms. The
structure is the depthwise convolution's without a weight (backends/host/depthwise.py).

It takes a PrimFunc of one float32 reduction block named pool_* (TOPI's) whose output's last
axis is the channel and whose window reads have that channel as their last index.
"""

from __future__ import annotations

from .lanes import dividing_lanes, vector_lanes
from .reduction_kernel import (epilogue_per_tile, inline_producers, one_reduction,
                               pad_block_rows, pad_per_block, threads, vectorized_pass,
                               worth_parallel)
from .tir_walk import static_int as _static



def schedule_pool(func, target, parallel: bool):
    """The schedule described in the module docstring, or None when `func` is not an NHWC
    pooling (with its pad and elementwise epilogue)."""
    kernel = one_reduction(func)
    if kernel is None:
        return None
    sch, block, producers, consumers = kernel
    try:
        if not _is_pool(sch, block):
            return None
        return _apply(sch, block, producers, consumers, target, parallel)
    except Exception:  # noqa: BLE001 - a ScheduleError, a nest this rule does not know
        return None


def _is_pool(sch, block) -> bool:
    stmt = sch.get(block)
    if not stmt.name_hint.startswith("pool_") or len(stmt.writes) != 1:
        return False
    out = stmt.writes[0]
    if str(out.source.dtype) != "float32" or len(out.source.shape) != 4:
        return False
    kinds = "".join("S" if iv.iter_type == 0 else "R" for iv in stmt.iter_vars)
    spatial = len(kinds) - len(kinds.lstrip("S"))
    if not spatial or kinds[spatial:] != "R" * (len(kinds) - spatial):
        return False
    if any(_static(iv.dom.extent) is None for iv in stmt.iter_vars):
        return False
    channel = stmt.iter_vars[spatial - 1].var
    reads = [r for r in stmt.reads if not r.source.same_as(out.source)]
    return (out.region[-1].min.same_as(channel) and len(reads) == 1
            and reads[0].region[-1].min.same_as(channel))


def _apply(sch, block, producers, consumers, target, parallel: bool):
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    if len(loops) != len(stmt.iter_vars):
        return None
    may_parallel, parallel = parallel, parallel and worth_parallel(sch, block)
    spatial = sum(1 for iv in stmt.iter_vars if iv.iter_type == 0)
    *pixels, c = loops[:spatial]
    window = loops[spatial:]
    pad = inline_producers(sch, producers)
    channels = _static(sch.get(c).extent)
    lanes = dividing_lanes(channels, vector_lanes(target))
    c_outer, c_inner = sch.split(c, factors=[None, lanes])
    row_block = None
    images = 1
    for loop in pixels[:-2]:
        images *= _static(sch.get(loop).extent) or 1
    rb = (pad_block_rows(_static(sch.get(pixels[-2]).extent), images,
                         workers=threads(target) if parallel else 1)
          if pad is not None and len(pixels) >= 2 and window else None)
    if rb is not None:
        # the padded input of a block of output rows made inside the parallel loop
        # (reduction_kernel.PAD_ROWS): [n, h_outer] outside, [h_inner, w] inside
        h_outer, h_inner = sch.split(pixels[-2], factors=[None, rb])
        outer = [*pixels[:-2], h_outer]
        inner = sch.fuse(h_inner, pixels[-1])
        sch.reorder(*outer, inner, c_outer, *window, c_inner)
        row_block = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        pixels = [row_block, inner]
    else:
        sch.reorder(*pixels, c_outer, *window, c_inner)
    sch.unroll(c_inner)
    if row_block is not None:
        if parallel:
            sch.parallel(row_block)
    elif pixels:
        rows = sch.fuse(*pixels) if len(pixels) > 1 else pixels[0]
        if parallel:
            sch.parallel(rows)
    out_block = epilogue_per_tile(sch, block, consumers, c_outer, target,
                                  may_parallel)
    if window:
        init = sch.decompose_reduction(block, window[0])
        sch.vectorize(sch.get_loops(init)[-1])
    sch.vectorize(sch.get_loops(out_block)[-1])
    if row_block is not None:
        pad_per_block(sch, pad, row_block, target)
    elif pad is not None:   # one vectorized pass over the padded input
        vectorized_pass(sch, pad, target, parallel)
    return sch
