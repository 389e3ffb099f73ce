"""Relax converters for ONNX operators TVM's importer lacks, registered into its table.

TVM 0.27's ONNX importer looks converters up through the module function
`_get_convert_map()` on every use (both its own unsupported-op check and anychip's pre-check
in importer.py do); `register()` wraps that function once so the table it returns also holds
the converters below. Each converter is one class, `_impl_vN(bb, inputs, attr, params)`, as
TVM's own are; each docstring names the ONNX behaviour and the cases that prove it.
"""

from __future__ import annotations

import functools

import numpy as np

_MARK = "_anychip_extra_converters"


def _const_int(expr, what: str) -> int:
    import tvm

    from . import NotSupported

    if not isinstance(expr, tvm.ir.GenericConst):
        raise NotSupported(f"{what} must be a constant; a run-time tensor is not supported by "
                           f"anychip")
    return int(np.asarray(expr.value.numpy()).reshape(-1)[0])


def _static_shape(expr) -> list[int]:
    return [int(d) for d in expr.ty.shape]


@functools.lru_cache(maxsize=1)
def extra_converters() -> dict:
    """op_type -> converter class, built on first use (imports TVM)."""
    from tvm import relax
    from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

    from .specialise import GUARD_OP, guard_converter

    class CumProd(OnnxOpConverter):
        """ONNX CumProd (opset 26): running product along a constant axis, with `exclusive`
        (shift in a 1) and `reverse` (flip, scan, flip back). Cases: test_cumprod_*."""

        @classmethod
        def _impl_v26(cls, bb, inputs, attr, params):
            data = inputs[0]
            rank = len(data.ty.shape)
            axis = _const_int(inputs[1], "CumProd's axis")
            axis = axis + rank if axis < 0 else axis
            if attr.get("reverse", 0):
                data = bb.emit(relax.op.flip(data, axis))
            out = bb.emit(relax.op.cumprod(data, axis=axis,
                                           exclusive=bool(attr.get("exclusive", 0))))
            if attr.get("reverse", 0):
                out = bb.emit(relax.op.flip(out, axis))
            return out

    class LpNormalization(OnnxOpConverter):
        """ONNX LpNormalization: x / ||x||_p along `axis` (p 1 or 2), and 0 where the norm
        is 0 (ONNX's reference gives 0/0 -> 0 for the all-zero rows). Cases:
        test_l1normalization_*, test_l2normalization_*, test_lpnormalization_default."""

        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            x = inputs[0]
            axis = int(attr.get("axis", -1))
            p = int(attr.get("p", 2))
            if p == 1:
                norm = relax.op.sum(relax.op.abs(x), axis=[axis], keepdims=True)
            else:
                norm = relax.op.sqrt(relax.op.sum(relax.op.multiply(x, x), axis=[axis],
                                                  keepdims=True))
            norm = bb.emit(norm)
            zero = relax.const(0, x.ty.dtype)
            safe = bb.emit(relax.op.where(relax.op.equal(norm, zero),
                                          relax.const(1, x.ty.dtype), norm))
            return bb.emit(relax.op.where(relax.op.equal(norm, zero), zero,
                                          relax.op.divide(x, safe)))

    class If(OnnxOpConverter):
        """ONNX If is converted by TVM's importer itself, outside its converter table (its
        own unsupported-op check lists it apart); this entry only tells anychip's pre-check
        in importer.py so. Cases: test_if, test_affine_grid_*_expanded."""

        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            raise NotImplementedError("If is converted by TVM's importer directly")

    return {"CumProd": CumProd, "LpNormalization": LpNormalization, "If": If,
            GUARD_OP: guard_converter()}


def register() -> None:
    """Make TVM's importer see `extra_converters()` (idempotent)."""
    from tvm.relax.frontend.onnx import onnx_frontend

    current = onnx_frontend._get_convert_map
    if getattr(current, _MARK, False):
        return

    def convert_map_with_extras():
        table = current()
        for name, converter in extra_converters().items():
            table.setdefault(name, converter)
        return table

    setattr(convert_map_with_extras, _MARK, True)
    onnx_frontend._get_convert_map = convert_map_with_extras


def tvm_supports(op_type: str) -> bool:
    """Whether TVM's importer (with the extras) has a converter for `op_type`."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    register()
    return op_type in _get_convert_map()
