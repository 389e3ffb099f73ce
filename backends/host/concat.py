"""Concatenations along the innermost axis, scheduled one input at a time.

A concatenation of k inputs along the channels of NHWC data (DenseNet's dense blocks join up
to 32 feature maps, Inception's branches 4) is one TIR block whose value is a chain of
`if_then_else(K <= c, next, input)` on the channel index. Fused into one vectorized loop with
the pixels, each vector of channels evaluates the whole chain: 51 GB/s for 2 inputs, 13 GB/s
for 6 and 4.5 GB/s for 12 (serial, Zen 4). Here the channel loop is partitioned at the
boundaries K instead: each part reads one input, its conditions fold away, and it is a
contiguous vectorized copy (with the fused elementwise epilogue: DenseNet's batch norm and
relu) whatever the number of inputs. The pixels stay one outer loop (parallel when asked).
"""

from __future__ import annotations

import math

from .lanes import vector_lanes
from .tir_walk import children, static_int as _static

# Fewer parts than this keep the fused loop (2 inputs: already 51 GB/s that way).
MIN_PARTS = 3
# More parts than this keep the fused loop: each part is a block of its own, and a join of
# hundreds of inputs would make a kernel TVM and LLVM take minutes over.
MAX_PARTS = 64
# A part longer than this many vectors stays a loop (LLVM's own vectorizer takes it).
MAX_PART_VECTORS = 8


def _boundaries(body, var, extent: int) -> list[int]:
    """Where the chain of selects switches input: the first index c that each condition
    comparing `var` with a constant (K <= c, c < K, their mirrors) holds or fails from,
    strictly inside (0, extent)."""
    found: set[int] = set()
    stack = [body]
    while stack:
        node = stack.pop()
        kind = type(node).__name__
        if kind in ("LE", "LT", "GE", "GT"):
            for var_left, const in ((True, node.b), (False, node.a)):
                side = node.a if var_left else node.b
                k = _static(const)
                if side.same_as(var) and k is not None:
                    # c <= K, K < c, K >= c, c > K switch at K + 1; the others at K
                    plus = (kind in ("LE", "GT")) == var_left
                    if 0 < k + plus < extent:
                        found.add(k + plus)
        stack.extend(children(node))
    return sorted(found)


def partition_concat(sch, block, target, parallel: bool, min_parallel: int) -> bool:
    """Schedule `block` as above when it selects among at least MIN_PARTS inputs along its
    innermost axis (static extents); False (nothing changed) otherwise. TVM's ScheduleError
    may leave `sch` half done: the caller works on a copy."""
    loops = sch.get_loops(block)
    stmt = sch.get(block)
    if len(loops) < 2 or len(stmt.iter_vars) != len(loops):
        return False
    extents = [_static(sch.get(loop).extent) for loop in loops]
    if None in extents or 0 in extents:
        return False
    channel = stmt.iter_vars[-1]
    if _static(channel.dom.extent) != extents[-1]:
        return False
    bounds = _boundaries(stmt.body, channel.var, extents[-1])
    if not MIN_PARTS <= len(bounds) + 1 <= MAX_PARTS:
        return False
    sizes = [b - a for a, b in zip([0, *bounds], [*bounds, extents[-1]])]
    parts = sch.loop_partition(loops[-1], [*sizes[:-1], None])
    outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
    lanes = vector_lanes(target)
    for part, size in zip(parts, sizes):
        # a part loop starts at its boundary, which `split` refuses: it is vectorized whole
        # (LLVM splits a 32- or 64-lane vector into registers) when it is a few vectors long
        if size % lanes == 0 and size <= MAX_PART_VECTORS * lanes:
            sch.vectorize(part)
    if parallel and math.prod(extents) >= min_parallel and extents[0] > 1:
        sch.parallel(outer)
    return True
