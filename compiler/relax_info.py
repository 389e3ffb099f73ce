"""What a Relax expression's type says: its static shape and dtype (one copy for the passes,
the dispatch patterns and the backends, which each had their own)."""

from __future__ import annotations


def static_shape(expr) -> tuple[int, ...] | None:
    """The expression's shape as ints; None when unknown or symbolic."""
    return static_shape_of_type(getattr(expr, "ty", None))


def static_shape_of_type(ty) -> tuple[int, ...] | None:
    """A Relax tensor type's shape as ints; None when unknown or symbolic."""
    shape = getattr(ty, "shape", None)
    if shape is None:
        return None
    try:
        return tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        return None


def known_shape(expr) -> tuple | None:
    """The expression's shape with static dims as ints and symbolic ones as their text
    ('seq', 'seq * 2': equal text, equal dim); None when the shape is unknown. For checks
    that hold for every value of a symbol (library dispatch of a symbolic model)."""
    shape = getattr(getattr(expr, "ty", None), "shape", None)
    if shape is None:
        return None
    try:
        dims = list(shape)
    except TypeError:   # a shape variable, not a list of dims
        return None
    out = []
    for d in dims:
        try:
            out.append(int(d))
        except (TypeError, ValueError):
            out.append(str(d))
    return tuple(out)


def dtype_of(expr) -> str:
    """The expression's dtype ('float32'...), '' when it has none (a tuple, an unknown type)."""
    return str(getattr(getattr(expr, "ty", None), "dtype", ""))
