"""Integer arithmetic on shape values, read back as symbolic expressions.

The exporters (TorchScript and dynamo alike) and hand-written graphs compute sizes with tensor
ops on Shape values: Hugging Face's attention mask builds `Range(0, max(-((0 - batch) // 1),
0), 1)` from `Shape(input_ids)[0]`, wav2vec 2.0 its frame count as `Shape(x)[1] / 20 - 1`, a
Concat of such pieces is the target of a Reshape, Expand, Tile or Resize. TVM's converters
turn any size that is not a constant into fresh variables read from the tensor at run time
(`range_len_0`, `x_0`, `tile_dim_0`), unrelated to the inputs' symbols: every tensor built from
them has dims Relax cannot match to the model's, and the build fails ("PrimExpr ... has not
been computed", "emit_te now only supports Tensor that has ShapeExpr shape"). `prim_value`
follows such a scalar back through the block's bindings (shape_to_tensor, reshape, astype,
take of a shape, +, -, *, //, neg, max, min, comparisons, where) to an expression of the input
symbols, `shape_tensor_values` a 1-D shape (ShapeExprs, constants, concats of such parts);
importer_fixes/shape_converters.py builds the ops from them. Anything else is left to TVM."""

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
        return to_int64(expr) if _dtype(expr).startswith(("int", "uint")) else None
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
        index = None if index is None else simplified(index)
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


def to_int64(value):
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
            return [to_int64(v) for v in shape.values]
        if isinstance(shape, relax.Call) and getattr(shape.op, "name", "") == "relax.shape_of":
            ty = shape.args[0].ty
            if isinstance(ty, relax.TensorType) and isinstance(ty.shape, relax.ShapeExpr):
                return [to_int64(v) for v in ty.shape.values]
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


def provably_equal(a, b) -> bool:
    import tvm

    diff = simplified(a - b)
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


def simplified(expr):
    """`expr` simplified, with its symbols known to be sizes (>= 0): max(batch, 0) -> batch."""
    import tvm

    expr = _floor_divisions(expr)
    analyzer = tvm.sym.Analyzer()
    for var in tvm.tirx.analysis.undefined_vars(expr, []):
        analyzer.update(var, tvm.sym.ConstIntBound(0, 1 << 62), override=True)
    return analyzer.simplify(expr)
