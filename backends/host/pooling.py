"""A schedule for NHWC max and average pooling (and global pooling) kept in TVM: the
channels in vector chunks, the window accumulated per chunk in registers, the epilogue
(average's divide, a bias, an activation) applied per chunk, the pad one vectorized pass.

TVM's loop nest for TOPI's pool_max / pool_sum puts the channel outside the window: a scalar
loop, and OuterParallel alone left SqueezeNet's 3x3 max pool over [1, 111, 111, 64] at 0.72
ms (2.7 GFLOP/s, 6.5 GB/s) and its global average pool over [13, 13, 1000] at 0.72 ms. The
structure is the depthwise convolution's without a weight (backends/host/depthwise.py).

It takes a PrimFunc of one float32 reduction block named pool_* (TOPI's) whose output's last
axis is the channel and whose window reads have that channel as their last index.
"""

from __future__ import annotations

from .lanes import vector_lanes
from .tir_walk import static_int as _static


def _lanes(channels: int, vector: int) -> int:
    lanes = vector
    while lanes > 1 and channels % lanes:
        lanes //= 2
    return lanes


def schedule_pool(func, target, parallel: bool):
    """The schedule described in the module docstring, or None when `func` is not an NHWC
    pooling (with its pad and elementwise epilogue)."""
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    sch = s_tir.Schedule(func)
    try:
        infos = normalize_prim_func(sch)
    except Exception:  # noqa: BLE001 - TVM raises several types for foreign PrimFuncs
        return None
    reductions = [i for i, info in enumerate(infos or []) if not info.is_injective()]
    if len(reductions) != 1:
        return None
    red = reductions[0]
    block = infos[red].block_rv
    try:
        if not _is_pool(sch, block):
            return None
        return _apply(sch, block, infos[:red], infos[red + 1:], target, parallel)
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
    spatial = sum(1 for iv in stmt.iter_vars if iv.iter_type == 0)
    *pixels, c = loops[:spatial]
    window = loops[spatial:]
    pad = None
    for info in producers:
        if sch.get(info.block_rv).name_hint.startswith("pad") and pad is None:
            pad = info.block_rv
        else:
            sch.compute_inline(info.block_rv)
    for info in consumers[:-1]:
        sch.compute_inline(info.block_rv)
    epilogue = consumers[-1].block_rv if consumers else None

    channels = _static(sch.get(c).extent)
    lanes = _lanes(channels, vector_lanes(target))
    c_outer, c_inner = sch.split(c, factors=[None, lanes])
    sch.reorder(*pixels, c_outer, *window, c_inner)
    sch.unroll(c_inner)
    if pixels:
        rows = sch.fuse(*pixels) if len(pixels) > 1 else pixels[0]
        if parallel:
            sch.parallel(rows)
    if epilogue is not None:   # the intermediate shrinks to one chunk: the accumulator
        sch.reverse_compute_at(epilogue, c_outer)
        out_block = epilogue
    else:
        out_block = sch.cache_write(block, 0, "global")
        sch.reverse_compute_at(out_block, c_outer)
    if window:
        init = sch.decompose_reduction(block, window[0])
        sch.vectorize(sch.get_loops(init)[-1])
    sch.vectorize(sch.get_loops(out_block)[-1])
    if pad is not None:   # one vectorized pass over the padded input
        flat = sch.fuse(*sch.get_loops(pad))
        pad_lanes = _lanes(_static(sch.get(flat).extent), vector_lanes(target))
        pad_outer, pad_inner = sch.split(flat, factors=[None, pad_lanes])
        sch.vectorize(pad_inner)
        if parallel:
            sch.parallel(pad_outer)
    return sch
