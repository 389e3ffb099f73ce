"""What a Relax expression's type says: its static shape and dtype (one copy for the passes,
the dispatch patterns and the backends, which each had their own)."""

from __future__ import annotations


def static_shape(expr) -> tuple[int, ...] | None:
    """The expression's shape as ints; None when unknown or symbolic."""
    shape = getattr(getattr(expr, "ty", None), "shape", None)
    if shape is None:
        return None
    try:
        return tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        return None


def dtype_of(expr) -> str:
    """The expression's dtype ('float32'...), '' when it has none (a tuple, an unknown type)."""
    return str(getattr(getattr(expr, "ty", None), "dtype", ""))
