"""Dims an op requires equal between its operands, checked where one side is symbolic.

A Conv over an input `[1, c, H, W]` with a weight of 4 input channels is only defined at
c = 4 (ONNX Runtime refuses anything else); TVM's kernels loop over the data's channels and
index the weight with them, so a compiled program called with c = 33 read past the weight's
buffer and returned numbers (found by the fuzzer: a Conv input channel renamed to a symbol).
The same holds for a MatMul's or Gemm's contraction over a symbolic width against a constant
weight (also written as an Einsum), for the per-channel parameters of the normalizations, for
a Reshape of an input with one symbolic dim to a constant shape (the element counts must
agree), and for a Split by constant sizes (the axis is their sum). Before conversion, each
operand whose dim is symbolic where the other side's is a size is `match_cast` to that size:
a check the VM runs at every call, so an input of another size fails in one line
(InputsRejected) instead of computing from memory it does not own.

Only symbolic-against-static pairs are cast: two symbolic sides are either the same symbol
or were merged at load (compiler/equal_dims.py)."""

from __future__ import annotations


def _shape(value):
    from tvm import relax

    ty = getattr(value, "ty", None)
    if isinstance(ty, relax.TensorType) and isinstance(ty.shape, relax.ShapeExpr):
        return list(ty.shape)
    return None


def _size(dim) -> int | None:
    from tvm import tirx

    if isinstance(dim, int):
        return dim
    return int(dim) if isinstance(dim, tirx.IntImm) else None


def required_pairs(op_name: str, shapes: list, attrs: dict) -> list[tuple[int, int, int, int]]:
    """(operand, axis, other operand, other axis) pairs of dims `op_name` requires equal;
    a missing shape or operand gives no pair. A Conv's weight axis 1 counts per group, so
    its pair is stated on the data's side by `_grouped`."""
    def has(*indices):
        return all(i < len(shapes) and shapes[i] is not None for i in indices)

    pairs = []
    if op_name in ("MatMul", "MatMulInteger") and has(0, 1) and shapes[0] and shapes[1]:
        b_axis = len(shapes[1]) - 2 if len(shapes[1]) >= 2 else 0
        pairs.append((0, len(shapes[0]) - 1, 1, b_axis))
    elif op_name == "Gemm" and has(0, 1) and len(shapes[0]) == 2 == len(shapes[1]):
        pairs.append((0, 0 if attrs.get("transA", 0) else 1, 1, 1 if attrs.get("transB", 0) else 0))
    elif op_name == "ConvTranspose" and has(0, 1) and len(shapes[0]) >= 3:
        pairs.append((0, 1, 1, 0))
    elif op_name in ("BatchNormalization", "InstanceNormalization") and has(0):
        pairs += [(0, 1, i, 0) for i in range(1, len(shapes))
                  if has(i) and len(shapes[i]) == 1 and len(shapes[0]) >= 2]
    elif op_name == "Einsum":
        pairs += _einsum_pairs(attrs.get("equation", ""), shapes)
    elif op_name == "LayerNormalization" and has(0, 1):
        x, scale = shapes[0], shapes[1]
        axis = int(attrs.get("axis", -1)) % max(len(x), 1)
        if len(scale) == len(x) - axis:
            pairs += [(0, axis + k, 1, k) for k in range(len(scale))]
    return pairs


def pin_operand_dims(bb, op_name: str, inputs, attrs):
    """`inputs`, with each operand's symbolic dim that the op requires equal to a size on
    another operand cast to that size (module docstring)."""
    from tvm import relax, tirx

    if op_name not in _OPS:
        return inputs
    shapes = [_shape(v) for v in inputs]
    wanted: dict[int, dict[int, int]] = {}
    for i, axis, j, other in required_pairs(op_name, shapes, attrs):
        mine, theirs = _size(shapes[i][axis]), _size(shapes[j][other])
        if mine is None and theirs is not None:
            wanted.setdefault(i, {})[axis] = theirs
        elif theirs is None and mine is not None:
            wanted.setdefault(j, {})[other] = mine
    if op_name == "Conv":
        _grouped(shapes, attrs, wanted)
    if op_name == "Reshape":
        _reshaped(inputs, shapes, wanted)
    if op_name == "Split":
        _split(inputs, shapes, attrs, wanted)
    if not wanted:
        return inputs
    out = list(inputs)
    for i, axes in wanted.items():
        value = inputs[i]
        new = [tirx.IntImm("int64", axes[a]) if a in axes else d
               for a, d in enumerate(shapes[i])]
        bound = value if isinstance(value, relax.Var) else bb.emit(value)
        out[i] = bb.match_cast(bound, relax.TensorType(new, value.ty.dtype))
    return type(inputs)(out) if isinstance(inputs, list) else out


def _grouped(shapes: list, attrs: dict, wanted: dict) -> None:
    """Conv: the data's channels are the weight's input channels times `group`."""
    if len(shapes) < 2 or shapes[0] is None or shapes[1] is None or len(shapes[0]) < 3 \
            or len(shapes[1]) < 2:
        return
    channels, per_group = _size(shapes[0][1]), _size(shapes[1][1])
    if channels is None and per_group is not None:
        wanted.setdefault(0, {})[1] = per_group * int(attrs.get("group", 1))


def _reshaped(inputs, shapes: list, wanted: dict) -> None:
    """Reshape to a constant shape of sizes: an input with one symbolic dim has one size
    that gives that many elements (x [n, 4] to [2, 8]: n = 4). Otherwise the VM's view check
    refuses a short input and a long one would be cut silently."""
    import tvm

    if len(inputs) < 2 or shapes[0] is None or not isinstance(inputs[1], tvm.ir.GenericConst):
        return
    target = [int(v) for v in inputs[1].value.numpy().reshape(-1)]
    symbolic = [a for a, d in enumerate(shapes[0]) if _size(d) is None]
    if len(symbolic) != 1 or not target or min(target) <= 0:
        return
    rest = 1
    for a, d in enumerate(shapes[0]):
        if a != symbolic[0]:
            rest *= _size(d)
    total = 1
    for t in target:
        total *= t
    if rest and total % rest == 0:
        wanted.setdefault(0, {})[symbolic[0]] = total // rest


def _einsum_pairs(equation, shapes: list) -> list[tuple[int, int, int, int]]:
    """Einsum: every pair of operand axes with the same label (operands written out in full,
    without '...'), each paired with the label's first occurrence."""
    if isinstance(equation, bytes):
        equation = equation.decode()
    terms = str(equation).replace(" ", "").split("->")[0].split(",")
    if len(terms) != len(shapes):
        return []
    first: dict[str, tuple[int, int]] = {}
    pairs = []
    for i, (term, shape) in enumerate(zip(terms, shapes)):
        if "." in term or shape is None or len(term) != len(shape):
            continue
        for axis, label in enumerate(term):
            if label in first:
                pairs.append((i, axis, *first[label]))
            else:
                first[label] = (i, axis)
    return pairs


def _split(inputs, shapes: list, attrs: dict, wanted: dict) -> None:
    """Split by constant sizes: a symbolic axis is their sum."""
    import tvm

    if len(inputs) < 2 or shapes[0] is None or not isinstance(inputs[1], tvm.ir.GenericConst):
        return
    sizes = [int(v) for v in inputs[1].value.numpy().reshape(-1)]
    axis = int(attrs.get("axis", 0)) % max(len(shapes[0]), 1)
    if sizes and min(sizes) >= 0 and _size(shapes[0][axis]) is None:
        wanted.setdefault(0, {})[axis] = sum(sizes)


_OPS = frozenset({"Reshape", "Split", "Einsum", "MatMul", "MatMulInteger", "Gemm", "Conv", "ConvTranspose",
                  "BatchNormalization", "InstanceNormalization", "LayerNormalization"})
