"""How many elements of a dtype one vector register of the target holds: the lane count the
host schedules (schedule.py, depthwise.py) vectorize with."""

from __future__ import annotations


def vector_lanes(target, bits: int = 32) -> int:
    """Lanes of `bits`-wide elements in the target's vector width (AVX-512: 16 float32),
    4 when LLVM reports no width."""
    from tvm.target.codegen import llvm_get_vector_width

    width = llvm_get_vector_width(target)
    return max((width if width > 0 else 128) // bits, 1)


def dividing_lanes(width: int, lanes: int) -> int:
    """The widest vector, at most `lanes` (a power of two), that divides `width`: a tail
    would need a predicate that TIR cannot vectorize."""
    while lanes > 1 and width % lanes:
        lanes //= 2
    return lanes
