"""Reading TIR without TVM's visitor classes (TVM 0.27's Python API exposes none for tirx):
the children of a node by its fields, and constants as ints, for the host schedules'
analyses."""

from __future__ import annotations

_CHILD_FIELDS = ("a", "b", "condition", "true_value", "false_value", "value", "args", "base",
                 "stride", "vectors", "body", "indices")
_fields_by_type: dict[type, tuple[str, ...]] = {}


def children(expr) -> list:
    """The sub-expressions (and statements) of a TIR node."""
    kind = type(expr)
    fields = _fields_by_type.get(kind)
    if fields is None:
        fields = tuple(f for f in _CHILD_FIELDS if hasattr(expr, f))
        _fields_by_type[kind] = fields
    out = []
    for field in fields:
        value = getattr(expr, field)
        if isinstance(value, (list, tuple)) or type(value).__name__ == "Array":
            out.extend(value)
        elif value is not None and not isinstance(value, (str, int, float)):
            out.append(value)
    return out


def static_int(value) -> int | None:
    """A TIR extent or constant as an int; None when it is symbolic."""
    try:
        return int(value)
    except TypeError:
        return None


def uses(expr, var) -> bool:
    """Whether the TIR expression `expr` refers to `var`."""
    stack = [expr]
    while stack:
        node = stack.pop()
        if node.same_as(var):
            return True
        stack.extend(children(node))
    return False
