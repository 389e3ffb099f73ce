"""Elements of a conformance case's expected output that the ONNX specification leaves undefined.

Why: ONNX's node cases compute their expected outputs when they are collected, with the
installed onnx reference implementation, which delegates some casts to the installed
ml_dtypes. The Cast specification says a float cast to a fixed-point type is *undefined*
when the value is out of the type's range (NaN and +/-Inf included). ml_dtypes 0.7.0 changed
its choice for 4-bit and 2-bit integers (9.0 -> int4 wrapped to -7 before, 0 since), and the
suite's expected outputs changed with it: 24 Cast/CastLike cases flipped from pass to fail on
a fresh install without anychip changing. A conformance check must not depend on which choice
the installed library made where the spec makes none, so those elements are not compared
(engines.check_outputs); every element the spec defines still is.

anychip's own choice for those elements is documented with the lowering
(importer_fixes/lowbit.py: truncate toward zero, wrap modulo 2**bits, NaN/Inf give 0).
"""

from __future__ import annotations

import numpy as np

_CASTS = {"Cast", "CastLike"}


def _fixed_point_range(elem: int) -> tuple[int, int] | None:
    """(min, max) of an ONNX integer element type, None for any other type."""
    from onnx import TensorProto

    bits = {TensorProto.INT8: (8, True), TensorProto.UINT8: (8, False),
            TensorProto.INT16: (16, True), TensorProto.UINT16: (16, False),
            TensorProto.INT32: (32, True), TensorProto.UINT32: (32, False),
            TensorProto.INT64: (64, True), TensorProto.UINT64: (64, False),
            TensorProto.INT4: (4, True), TensorProto.UINT4: (4, False)}
    for name, signed in (("INT2", True), ("UINT2", False)):
        if hasattr(TensorProto, name):
            bits[getattr(TensorProto, name)] = (2, signed)
    if elem not in bits:
        return None
    n, signed = bits[elem]
    return (-(2 ** (n - 1)), 2 ** (n - 1) - 1) if signed else (0, 2 ** n - 1)


def out_of_range(values: np.ndarray, elem: int) -> np.ndarray | None:
    """Where a float -> `elem` cast is undefined by the spec (NaN, +/-Inf, or the value
    truncated toward zero outside the type's range); None when `elem` is not fixed point."""
    bounds = _fixed_point_range(elem)
    x = np.asarray(values)
    if bounds is None or x.dtype.kind != "f" and x.dtype.name not in ("bfloat16",):
        return None
    with np.errstate(all="ignore"):
        v = np.asarray(x, np.float64)
        t = np.trunc(v)
        return ~np.isfinite(v) | (t < bounds[0]) | (t > bounds[1])


def undefined_masks(model, inputs: list, n_outputs: int) -> list | None:
    """Per graph output, a boolean mask of the elements the spec leaves undefined (or None).

    Recognised: a graph output produced by Cast/CastLike from a float graph input to a
    fixed-point type (the plain case and its `_expanded` function body alike)."""
    from onnx import TensorProto

    graph = model.graph
    given = {vi.name: i for i, vi in enumerate(graph.input)}
    producers = {out: node for node in graph.node for out in node.output}
    masks: list = []
    for vi in list(graph.output)[:n_outputs]:
        node = producers.get(vi.name)
        mask = None
        if node is not None and node.op_type in _CASTS and node.input[0] in given:
            to = vi.type.tensor_type.elem_type
            src = graph.input[given[node.input[0]]].type.tensor_type.elem_type
            if src in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE,
                       TensorProto.BFLOAT16):
                value = inputs[given[node.input[0]]]
                if isinstance(value, np.ndarray):
                    mask = out_of_range(value, to)
                    if mask is not None and not mask.any():
                        mask = None
        masks.append(mask)
    return masks if any(m is not None for m in masks) else None
