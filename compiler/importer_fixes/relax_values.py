"""Small readers of Relax values shared by the extra converters (converters.py, spectral.py)."""

from __future__ import annotations

import numpy as np

from .refusal import NotSupported


def const_int(expr, what: str) -> int:
    import tvm

    if not isinstance(expr, tvm.ir.GenericConst):
        raise NotSupported(f"{what} must be a constant; a run-time tensor is not supported by "
                           f"anychip")
    return int(np.asarray(expr.value.numpy()).reshape(-1)[0])


def static_shape(expr) -> list[int]:
    return [int(d) for d in expr.ty.shape]


def known_shape(expr) -> list[int | None]:
    """The shape with each symbolic dim (a tir.Var or expression of one) as None."""
    out: list[int | None] = []
    for d in expr.ty.shape:
        try:
            out.append(int(d))
        except TypeError:
            out.append(None)
    return out
