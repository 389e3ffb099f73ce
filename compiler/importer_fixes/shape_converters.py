"""ONNX converters whose sizes are shape arithmetic: Range, Reshape, Expand and Tile built in
the inputs' symbols from values shape_arith.py reads back (see its docstring for why TVM's own
converters lose the symbols). Each falls back to TVM's converter when a value cannot be read."""

from __future__ import annotations

from .shape_arith import prim_value, provably_equal, shape_tensor_values, simplified, to_int64


def _computed_shape(bb, data, shape, params):
    """(data's dims, the values of `shape` in the inputs' symbols, simplified) when `shape` is
    not a constant but can be read back (shape_tensor_values) and data's shape is known; None
    otherwise (TVM's converter then runs). Shared by Reshape, Expand and Tile."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as fe

    dims = getattr(getattr(data, "ty", None), "shape", None)
    if isinstance(fe.get_constant(shape, params), tvm.ir.GenericConst) or \
            not isinstance(dims, relax.ShapeExpr):
        return None
    values = shape_tensor_values(bb, shape)
    if values is None:
        return None
    return list(dims.values), [simplified(v) for v in values]


def _negative(values) -> bool:
    import tvm

    return any(isinstance(v, tvm.tirx.IntImm) and int(v) < 0 for v in values)


def range_converter(tvm_range):
    """ONNX Range whose limit is shape arithmetic (start and delta integer constants, delta
    not 0): `arange` over the limit read back as an expression (see the module docstring);
    TVM's converter otherwise."""
    import tvm
    from tvm import relax, tirx
    from tvm.relax.frontend.onnx import onnx_frontend as fe

    class Range(fe.OnnxOpConverter):
        @classmethod
        def _impl_v11(cls, bb, inputs, attr, params):
            start, limit, delta = (fe.get_constant(x, params) for x in inputs)
            dtype = str(start.ty.dtype) if hasattr(start, "ty") and \
                hasattr(start.ty, "dtype") else ""
            if dtype.startswith(("int", "uint")) and isinstance(start, tvm.ir.GenericConst) \
                    and isinstance(delta, tvm.ir.GenericConst) \
                    and not isinstance(limit, tvm.ir.GenericConst):
                first, step = prim_value(bb, start), prim_value(bb, delta)
                end = prim_value(bb, limit)
                if end is not None and first is not None and step is not None \
                        and int(step) != 0:
                    s = int(step)
                    count = tirx.max(tirx.floordiv(end - first + (s - 1 if s > 0 else s + 1),
                                                   s), 0)
                    count = simplified(count)
                    positions = relax.op.arange(0, count, 1, "int64")
                    if int(first) == 0 and s == 1:
                        return bb.normalize(relax.op.astype(positions, dtype)) \
                            if dtype != "int64" else positions
                    values = relax.op.add(relax.op.multiply(positions, relax.const(s, "int64")),
                                          relax.const(int(first), "int64"))
                    return relax.op.astype(values, dtype) if dtype != "int64" else values
            return tvm_range.get_converter(12)(bb, inputs, attr, params)

    return Range


def reshape_converter(tvm_reshape):
    """ONNX Reshape of a scalar TVM's importer keeps as a PrimValue (shape arithmetic:
    `Reshape(Mul(16, Squeeze(Shape(x)[0:1])), [-1])`, the size of an Expand or Reshape built
    by a Concat: Swin-v2, DeBERTa-v2, wav2vec 2.0 and HuBERT exports): TVM's converter needs a
    tensor ("Reshape expects the input data to be a Tensor"). The value becomes a one-element
    int64 tensor (shape_to_tensor, which `prim_value` reads back) and is reshaped as before."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as fe

    class Reshape(fe.OnnxOpConverter):
        @classmethod
        def _impl_v13(cls, bb, inputs, attr, params):
            data = inputs[0]
            if isinstance(getattr(data, "ty", None), tvm.ir.PrimType):
                value = data.value if hasattr(data, "value") else None
                if value is None or not tvm.ir.is_prim_expr(value):
                    value = prim_value(bb, data)
                if value is not None:
                    tensor = bb.normalize(relax.op.shape_to_tensor(
                        relax.ShapeExpr([to_int64(value)])))
                    inputs = [tensor, *list(inputs)[1:]]
            target = _target_shape(bb, inputs, attr, params)
            if target is not None:
                return relax.op.reshape(inputs[0], relax.ShapeExpr(target))
            return tvm_reshape.get_converter(13)(bb, inputs, attr, params)

    def _target_shape(bb, inputs, attr, params):
        """A target shape computed from shapes (a Concat of a scaled batch and constants),
        read back in the symbols, with ONNX's -1 (the rest) and 0 (copy) resolved; None for
        a constant target (TVM's converter) or one that cannot be read."""
        found = _computed_shape(bb, inputs[0], inputs[1], params)
        if found is None:
            return None
        dims, values = found
        known = [int(v) if isinstance(v, tvm.tirx.IntImm) else None for v in values]
        if (int(attr.get("allowzero", 0)) and 0 in known) or known.count(-1) > 1 or \
                any(k is not None and k < -1 for k in known):
            return None
        out = [dims[i] if k == 0 and i < len(dims) else v
               for i, (v, k) in enumerate(zip(values, known))]
        if -1 in known:
            total = 1
            for d in dims:
                total = total * d
            rest = 1
            for v, k in zip(out, known):
                if k != -1:
                    rest = rest * v
            out[known.index(-1)] = simplified(tvm.tirx.floordiv(total, rest))
        return [to_int64(v) for v in out]

    return Reshape


def expand_converter(tvm_expand):
    """ONNX Expand to a shape computed from shapes (an attention mask broadcast to [batch,
    1, seq, seq] built by Concat(Shape(x)[0:1], [1], ...): wav2vec 2.0, HuBERT): TVM's
    converter reads the shape at run time into fresh variables (x_0..x_3), unrelated to the
    inputs' symbols, and the mask could not meet the scores again. The shape is read back
    (shape_tensor_values) and the result's dims follow ONNX's bidirectional broadcast: a 1 on
    either side takes the other's dim; where neither is 1 the model is only valid where they
    are equal, and the input's dim is kept."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as fe

    def is_one(d):
        return isinstance(d, tvm.tirx.IntImm) and int(d) == 1

    class Expand(fe.OnnxOpConverter):
        @classmethod
        def _impl_v13(cls, bb, inputs, attr, params):
            found = _computed_shape(bb, inputs[0], inputs[1], params)
            if found is not None and not _negative(found[1]):   # (-1: not a size; TVM's)
                out = _broadcast(found[0], found[1])
                if out is not None:
                    return relax.op.broadcast_to(inputs[0], relax.ShapeExpr(out))
            return tvm_expand.get_converter(13)(bb, inputs, attr, params)

    def _broadcast(have, want):
        rank = max(len(have), len(want))
        have = [None] * (rank - len(have)) + [to_int64(d) for d in have]
        want = [None] * (rank - len(want)) + list(want)
        out = []
        for a, b in zip(have, want):
            if b is None or is_one(b):
                out.append(a if a is not None else b)
            elif a is None or is_one(a) or provably_equal(a, b):
                out.append(b)
            elif isinstance(a, tvm.tirx.IntImm) and isinstance(b, tvm.tirx.IntImm):
                return None   # (ONNX Runtime refuses it too)
            else:   # equal wherever the model is valid ('max(k, 0)' against 'k'): the
                out.append(a)   # input's dim, so the broadcast never reads past the input
        return out

    return Expand


def tile_converter(tvm_tile):
    """ONNX Tile whose repeats come from a shape (DeBERTa-v2 repeats its relative-position
    keys `batch` times): TVM's converter makes the result's dims fresh run-time variables
    (tile_dim_0, ...). With the repeats read back (shape_tensor_values), the tile is an
    expand_dims / broadcast_to / reshape in the inputs' symbols: x [a, b] by [r, s] is
    [1, a, 1, b] broadcast to [r, a, s, b], reshaped to [r * a, s * b]."""
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as fe

    class Tile(fe.OnnxOpConverter):
        @classmethod
        def _impl_v13(cls, bb, inputs, attr, params):
            found = _computed_shape(bb, inputs[0], inputs[1], params)
            if found is not None and found[1] and len(found[1]) == len(found[0]) and \
                    not _negative(found[1]):
                dims, values = [to_int64(d) for d in found[0]], found[1]
                spread = relax.op.expand_dims(inputs[0], [2 * i for i in range(len(dims))])
                wide = [d for pair in zip(values, dims) for d in pair]
                grown = relax.op.broadcast_to(spread, relax.ShapeExpr(wide))
                return relax.op.reshape(grown, relax.ShapeExpr(
                    [simplified(r * d) for r, d in zip(values, dims)]))
            return tvm_tile.get_converter(13)(bb, inputs, attr, params)

    return Tile
