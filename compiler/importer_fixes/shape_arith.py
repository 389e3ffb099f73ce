"""Integer arithmetic on shape values, read back as symbolic expressions, for Range.

The TorchScript exporter (torch.onnx.export(dynamo=False)) and hand-written graphs compute
sizes with tensor ops on Shape values: Hugging Face's attention mask builds
`Range(0, max(-((0 - batch) // 1), 0), 1)` from `Shape(input_ids)[0]`. TVM's Range converter
turns any limit that is not a constant into a fresh variable (`range_len_0`) read from the
tensor at run time, unrelated to `batch`: every tensor built from it has dims Relax cannot
match to the model's (the mask broadcast to [batch, 1, seq, seq]), and the build failed
("PrimExpr ... has not been computed"). `prim_value` follows such a scalar back through the
block's bindings (shape_to_tensor, reshape, astype, take of a shape, +, -, *, //, neg, max,
min) to an expression of the input symbols; `Range` then emits `arange` over that expression,
so its length is `batch` again. Anything else is left to TVM's converter."""

from __future__ import annotations

# bindings followed back from one value before giving up (a chain of scalar ops is short)
MAX_DEPTH = 32

# relax op -> its integer arithmetic on PrimExprs (tirx.floordiv/max/min as TIR spells them)
_BINARY = {
    "relax.add": lambda tirx, a, b: a + b,
    "relax.subtract": lambda tirx, a, b: a - b,
    "relax.multiply": lambda tirx, a, b: a * b,
    "relax.floor_divide": lambda tirx, a, b: tirx.floordiv(a, b),
    "relax.maximum": lambda tirx, a, b: tirx.max(a, b),
    "relax.minimum": lambda tirx, a, b: tirx.min(a, b),
}
_COMPARE = {
    "relax.less": lambda a, b: a < b,
    "relax.less_equal": lambda a, b: a <= b,
    "relax.greater": lambda a, b: a > b,
    "relax.greater_equal": lambda a, b: a >= b,
    "relax.equal": lambda a, b: a == b,
}


def prim_value(bb, expr, depth: int = 0):
    """The int64 PrimExpr `expr` (a one-element integer tensor, a PrimExpr or a constant)
    holds, in terms of the function's symbols; None when it cannot be read back."""
    import tvm
    from tvm import relax, tirx

    if depth > MAX_DEPTH or expr is None:
        return None
    if isinstance(expr, tvm.ir.GenericConst):
        value = expr.value.numpy()
        if value.size != 1 or value.dtype.kind not in "iub":
            return None
        if value.dtype.kind == "b":
            return tirx.IntImm("bool", int(bool(value.reshape(-1)[0])))
        return tirx.IntImm("int64", int(value.reshape(-1)[0]))
    # one Var class for Relax values and TIR symbols (TVM 0.27): a Relax value by its type
    if isinstance(expr, relax.Var) and isinstance(expr.ty, (relax.TensorType, relax.ShapeType)):
        bound = bb.lookup_binding(expr)
        return prim_value(bb, bound, depth + 1) if bound is not None else None
    if tvm.ir.is_prim_expr(expr):   # (the converter may pass a symbol itself: `batch`)
        return _int64(expr) if _dtype(expr).startswith(("int", "uint")) else None
    if not isinstance(expr, relax.Call) or not isinstance(expr.op, tvm.ir.Op):
        return None
    name, args = expr.op.name, list(expr.args)
    if name in ("relax.reshape", "relax.astype", "relax.squeeze", "relax.expand_dims"):
        if name == "relax.astype" and not str(expr.ty.dtype).startswith(("int", "uint")):
            return None
        return prim_value(bb, args[0], depth + 1)
    if name == "relax.shape_to_tensor":
        values = _shape_values(bb, args[0])
        return values[0] if values is not None and len(values) == 1 else None
    if name == "relax.take":
        values = _shape_values_of_tensor(bb, args[0], depth + 1)
        index = prim_value(bb, args[1], depth + 1)
        index = None if index is None else _simplified(index)
        if values is None or not isinstance(index, tirx.IntImm):
            return None
        i = int(index)
        return values[i] if -len(values) <= i < len(values) else None
    if name == "relax.negative":
        inner = prim_value(bb, args[0], depth + 1)
        return None if inner is None else -inner
    if name in _COMPARE:   # (the importer's own negative-index fix-up of a Gather)
        a, b = (prim_value(bb, arg, depth + 1) for arg in args[:2])
        return None if a is None or b is None else _COMPARE[name](a, b)
    if name == "relax.where":
        c, a, b = (prim_value(bb, arg, depth + 1) for arg in args[:3])
        return None if c is None or a is None or b is None else tirx.Select(c, a, b)
    if name in _BINARY:
        a, b = (prim_value(bb, arg, depth + 1) for arg in args[:2])
        return None if a is None or b is None else _BINARY[name](tirx, a, b)
    return None


def _dtype(value) -> str:
    """A PrimExpr's dtype (a tirx.Var holds it in its type, TVM 0.27)."""
    try:
        return str(value.dtype)
    except Exception:  # noqa: BLE001 - "dtype is only available on a Var with BufferType"
        return str(value.ty)


def _int64(value):
    from tvm import tirx

    return value if _dtype(value) == "int64" else tirx.Cast("int64", value)


def _shape_values(bb, shape):
    """The PrimExprs of a ShapeExpr (or of a var bound to one, or of shape_of(x))."""
    from tvm import relax

    for _ in range(MAX_DEPTH):
        if isinstance(shape, relax.Var):
            bound = bb.lookup_binding(shape)
            if bound is None:
                ty = shape.ty
                return list(ty.values) if isinstance(ty, relax.ShapeType) and \
                    ty.values is not None else None
            shape = bound
            continue
        if isinstance(shape, relax.ShapeExpr):
            return [_int64(v) for v in shape.values]
        if isinstance(shape, relax.Call) and getattr(shape.op, "name", "") == "relax.shape_of":
            ty = shape.args[0].ty
            if isinstance(ty, relax.TensorType) and isinstance(ty.shape, relax.ShapeExpr):
                return [_int64(v) for v in ty.shape.values]
        return None
    return None


def _shape_values_of_tensor(bb, tensor, depth: int):
    """The PrimExprs a 1-D int tensor made from a shape holds (shape_to_tensor of a shape,
    through casts)."""
    from tvm import relax

    for _ in range(MAX_DEPTH - depth):
        if isinstance(tensor, relax.Var):
            tensor = bb.lookup_binding(tensor)
            continue
        if isinstance(tensor, relax.Call):
            name = getattr(tensor.op, "name", "")
            if name == "relax.astype":
                tensor = tensor.args[0]
                continue
            if name == "relax.shape_to_tensor":
                return _shape_values(bb, tensor.args[0])
        return None
    return None


def shape_tensor_values(bb, value, depth: int = 0):
    """The PrimExprs of a 1-D integer shape value (a ShapeExpr, a var bound to one,
    shape_to_tensor of one, a constant, a concat of such parts, casts of them), in the
    function's symbols; None when one cannot be read back."""
    import tvm
    from tvm import relax

    if depth > MAX_DEPTH or value is None:
        return None
    if isinstance(value, tvm.ir.GenericConst):
        array = value.value.numpy()
        if array.ndim != 1 or array.dtype.kind not in "iu":
            return None
        return [tvm.tirx.IntImm("int64", int(v)) for v in array]
    if isinstance(value, relax.ShapeExpr) or isinstance(getattr(value, "ty", None),
                                                         relax.ShapeType):
        return _shape_values(bb, value)
    if isinstance(value, relax.Var):
        bound = bb.lookup_binding(value)
        return shape_tensor_values(bb, bound, depth + 1) if bound is not None else None
    if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):
        return None
    name = value.op.name
    if name == "relax.shape_to_tensor":
        return _shape_values(bb, value.args[0])
    if name == "relax.astype":
        return shape_tensor_values(bb, value.args[0], depth + 1)
    if name == "relax.concat":
        parts = value.args[0]
        if isinstance(parts, relax.Var):
            parts = bb.lookup_binding(parts)
        if not isinstance(parts, relax.Tuple):
            return None
        out = []
        for part in parts.fields:
            got = shape_tensor_values(bb, part, depth + 1)
            if got is None:
                return None
            out += got
        return out
    single = prim_value(bb, value, depth + 1)
    return [single] if single is not None else None


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
                    count = _simplified(count)
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
                        relax.ShapeExpr([_int64(value)])))
                    inputs = [tensor, *list(inputs)[1:]]
            target = _target_shape(bb, inputs, attr, params)
            if target is not None:
                return relax.op.reshape(inputs[0], relax.ShapeExpr(target))
            return tvm_reshape.get_converter(13)(bb, inputs, attr, params)

    def _target_shape(bb, inputs, attr, params):
        """A target shape computed from shapes (a Concat of a scaled batch and constants),
        read back in the symbols, with ONNX's -1 (the rest) and 0 (copy) resolved; None for
        a constant target (TVM's converter) or one that cannot be read."""
        data, shape = inputs[0], inputs[1]
        if isinstance(fe.get_constant(shape, params), tvm.ir.GenericConst):
            return None
        dims = getattr(getattr(data, "ty", None), "shape", None)
        values = shape_tensor_values(bb, shape)
        if values is None or dims is None or not isinstance(dims, relax.ShapeExpr):
            return None
        values = [_simplified(v) for v in values]
        known = [int(v) if isinstance(v, tvm.tirx.IntImm) else None for v in values]
        if int(attr.get("allowzero", 0)) and 0 in known:
            return None
        out = [dims.values[i] if k == 0 and i < len(dims.values) else v
               for i, (v, k) in enumerate(zip(values, known))]
        if known.count(-1) > 1:
            return None
        if -1 in known:
            total = 1
            for d in dims.values:
                total = total * d
            rest = 1
            for v, k in zip(out, known):
                if k != -1:
                    rest = rest * v
            out[known.index(-1)] = _simplified(tvm.tirx.floordiv(total, rest))
        return [_int64(v) for v in out]

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
            data, shape = inputs[0], inputs[1]
            dims = getattr(getattr(data, "ty", None), "shape", None)
            if not isinstance(fe.get_constant(shape, params), tvm.ir.GenericConst) and \
                    isinstance(dims, relax.ShapeExpr):
                values = shape_tensor_values(bb, shape)
                out = None if values is None else _broadcast(list(dims.values),
                                                            [_simplified(v) for v in values])
                if out is not None:
                    return relax.op.broadcast_to(data, relax.ShapeExpr(out))
            return tvm_expand.get_converter(13)(bb, inputs, attr, params)

    def _broadcast(have, want):
        rank = max(len(have), len(want))
        have = [None] * (rank - len(have)) + [_int64(d) for d in have]
        want = [None] * (rank - len(want)) + list(want)
        out = []
        for a, b in zip(have, want):
            if b is None or is_one(b):
                out.append(a if a is not None else b)
            elif a is None or is_one(a) or _same(a, b):
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
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as fe

    class Tile(fe.OnnxOpConverter):
        @classmethod
        def _impl_v13(cls, bb, inputs, attr, params):
            data, repeats = inputs[0], inputs[1]
            dims = getattr(getattr(data, "ty", None), "shape", None)
            if not isinstance(fe.get_constant(repeats, params), tvm.ir.GenericConst) and \
                    isinstance(dims, relax.ShapeExpr):
                values = shape_tensor_values(bb, repeats)
                if values is not None and len(values) == len(dims.values) and values:
                    values = [_simplified(v) for v in values]
                    dims = [_int64(d) for d in dims.values]
                    axes = [2 * i for i in range(len(dims))]
                    spread = relax.op.expand_dims(data, axes)
                    wide = [d for pair in zip(values, dims) for d in pair]
                    grown = relax.op.broadcast_to(spread, relax.ShapeExpr(wide))
                    return relax.op.reshape(grown, relax.ShapeExpr(
                        [_simplified(r * d) for r, d in zip(values, dims)]))
            return tvm_tile.get_converter(13)(bb, inputs, attr, params)

    return Tile


def _same(a, b) -> bool:
    import tvm

    diff = _simplified(a - b)
    return isinstance(diff, tvm.tirx.IntImm) and int(diff) == 0


def _floor_divisions(expr):
    """`expr` with truncating divisions written as floor divisions: the same value on sizes
    (>= 0), and the form Relax writes shapes in (TVM's Div converter emits `T.Div(samples, 20)`
    for shape arithmetic, which the analyzer does not equate with `samples // 20`)."""
    from tvm import tirx

    binary = {tirx.Add: lambda a, b: a + b, tirx.Sub: lambda a, b: a - b,
              tirx.Mul: lambda a, b: a * b, tirx.Div: tirx.floordiv,
              tirx.FloorDiv: tirx.floordiv, tirx.Mod: tirx.floormod,
              tirx.FloorMod: tirx.floormod, tirx.Max: tirx.max, tirx.Min: tirx.min}
    rebuild = binary.get(type(expr))
    if rebuild is not None:
        return rebuild(_floor_divisions(expr.a), _floor_divisions(expr.b))
    return expr


def _simplified(expr):
    """`expr` simplified, with its symbols known to be sizes (>= 0): max(batch, 0) -> batch."""
    import tvm

    expr = _floor_divisions(expr)
    analyzer = tvm.sym.Analyzer()
    for var in tvm.tirx.analysis.undefined_vars(expr, []):
        analyzer.update(var, tvm.sym.ConstIntBound(0, 1 << 62), override=True)
    return analyzer.simplify(expr)
