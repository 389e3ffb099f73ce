"""The loop nest of an elementwise block: fused, vectorized by the widest lanes that are safe
for its indices, its outer part parallel when large. Used by the injective rule
(schedule.py) and for the broadcast pass after a tile's epilogue (reduction_kernel.py)."""

from __future__ import annotations

import math

from .lanes import vector_lanes as _vector_lanes
from .tir_walk import children as _children, static_int, uses as _uses

MIN_PARALLEL_ELEMENTS = 16384


def _extent(sch, loop) -> int | None:
    return static_int(sch.get(loop).extent)


def safe_lanes(sch, block, lanes: int, loop=None) -> int:
    """The most lanes, at most `lanes`, that a vectorized split of `loop` (the block's fused
    innermost loop) can take without a vector of indices crossing a floordiv/floormod
    boundary: the gcd of `lanes` and every constant divisor in the block's body and in the
    index bindings that depend on `loop` (1 when such a binding divides by a symbol). A
    16-lane ramp over `v % 8` (the rotary embedding's backward on AVX-512, where a float32
    vector holds 16 lanes) was compiled by TVM 0.27 as if the index never wrapped, reading the
    next head's values: the tiny Llama's train step diverged from torch at the sixth step on
    znver4 and matched it on znver3 (8 lanes). Lanes that divide every divisor make each
    floordiv a broadcast and each floormod a ramp: nothing left to get wrong."""
    loops = sch.get_loops(block)
    var = sch.get(loop).loop_var if loop is not None else None
    bindings = list(getattr(sch.get(loops[-1]).body, "iter_values", [])) if loops else []
    for root, from_binding in [(sch.get(block).body, False)] + [(b, True) for b in bindings]:
        stack = [root]
        while stack and lanes > 1:
            node = stack.pop()
            if type(node).__name__ in ("FloorDiv", "FloorMod", "Div", "Mod"):
                if type(node.b).__name__ == "IntImm":
                    if not from_binding or var is None or _uses(node.a, var):
                        lanes = math.gcd(lanes, int(node.b.value))
                elif from_binding and (var is None or _uses(node.a, var)):
                    return 1
            stack.extend(_children(node))
    return lanes


def _touches_bool(sch, block) -> bool:
    """Whether `block` reads or writes a bool buffer: TVM 0.27 miscompiles vectors of bool in
    memory (a vectorized store of a compare to a bool buffer and its reload gave zeros for
    ONNX's float -> int4 Cast; a vectorized `not` of one fails a type check), so such a block
    stays scalar. Before isnan was vectorizable (ieee.vectorizable_isnan) every such block
    also held an isnan and was scalarized anyway."""
    stmt = sch.get(block)
    return any(str(r.source.dtype) == "bool" for r in [*stmt.reads, *stmt.writes])


def _parallel_vectorize(sch, block, target, parallel: bool) -> None:
    """Fuse the loops of `block`, vectorize the inner lanes, parallelize the outer part."""
    loops = sch.get_loops(block)
    if not loops or any(_extent(sch, loop) == 0 for loop in loops):
        return      # a zero-size result (ONNX allows them): nothing to run; fuse divides by 0
    if any(_extent(sch, loop) is None for loop in loops):
        _symbolic_parallel_vectorize(sch, block, loops, target, parallel)
        return
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    total = _extent(sch, fused)
    lanes = 1 if _touches_bool(sch, block) else safe_lanes(sch, block, _vector_lanes(target),
                                                             fused)
    if lanes > 1 and total >= lanes and total % lanes == 0:
        outer, inner = sch.split(fused, factors=[None, lanes])
        sch.vectorize(inner)
    else:
        outer = fused
    if parallel and total >= MIN_PARALLEL_ELEMENTS:
        sch.parallel(outer)


def _symbolic_parallel_vectorize(sch, block, loops, target, parallel: bool) -> None:
    """A loop nest with symbolic extents (a dynamic batch or sequence): fusing it all would
    put a division by a run-time extent into every element's index and leave a loop that
    cannot be split into vector lanes without a predicate (the dynamic DistilBERT's kernels
    ran 20x slower than their static twins). Instead the trailing loops whose extents are
    known (the hidden size, the head size) are fused and vectorized, and the leading loops
    that hold the symbols are fused into one parallel loop: one division per row."""
    static = 0
    while static < len(loops) and _extent(sch, loops[len(loops) - 1 - static]) is not None:
        static += 1
    head, tail = loops[:len(loops) - static], loops[len(loops) - static:]
    if tail:
        inner = sch.fuse(*tail) if len(tail) > 1 else tail[0]
        size = _extent(sch, inner)
        lanes = 1 if _touches_bool(sch, block) else safe_lanes(sch, block,
                                                                 _vector_lanes(target), inner)
        if lanes > 1 and size >= lanes and size % lanes == 0:
            sch.vectorize(sch.split(inner, factors=[None, lanes])[1])
    if parallel and head:
        sch.parallel(sch.fuse(*head) if len(head) > 1 else head[0])
