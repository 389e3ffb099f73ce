"""Symbolic dimensions through TVM's ONNX importer.

Why: an ONNX `dim_param` (or a torch.export dynamic dim) must become ONE `tir.Var` per name,
shared by every input that names it, so a single compiled program serves every size (Relax
VM shapes are checked and bound at the call). TVM's importer does create such variables, but
it loses them inside the graph: a Reshape whose target comes from a Shape/Slice/Concat chain,
a Range with a computed end, an Expand to a computed shape give results whose shape is
unknown, and the next Reshape with a -1 then fails ("Reshape expects the input tensor to have
known shape"). ONNX shape inference (with data propagation) knows those shapes in terms of the
input symbols ('seq', '2*seq'), so `recover_shapes` re-states them: after each node is
converted, a result whose shape Relax lost gets a `match_cast` to the shape ONNX inferred,
written with the same variables. The cast is checked at run time, so a wrong inference would
be an error, never a wrong answer.

The default range of an unbounded symbol (DEFAULT_RANGE) is documented in
docs/dynamic-shapes.md; `--dim NAME=LO..HI` / `dims={...}` overrides it.
"""

from __future__ import annotations

import contextlib
import re

import onnx

from .operand_dims import pin_operand_dims

# Bounds given to a symbol the user did not bound: sequence-like names get a longer range.
DEFAULT_RANGE = (1, 64)
DEFAULT_SEQUENCE_RANGE = (1, 2048)
_SEQUENCE_WORDS = ("seq", "len", "token", "past", "time", "pos", "step", "ctx", "context")

_TOKEN = re.compile(r"\s*(?:(?P<num>\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_.]*)|(?P<op>//|[-+*/()]))")


def default_range(name: str) -> tuple[int, int]:
    lowered = name.lower()
    if any(w in lowered for w in _SEQUENCE_WORDS):
        return DEFAULT_SEQUENCE_RANGE
    return DEFAULT_RANGE


def dim_names(dim) -> list[str]:
    """The symbol names in one dimension ('past+1' -> ['past']); [] for an int."""
    if isinstance(dim, int):
        return []
    return [m["name"] for m in _TOKEN.finditer(str(dim)) if m["name"]]


def input_symbols(specs) -> list[str]:
    """Symbol names of the inputs' dims, in first-use order."""
    seen: list[str] = []
    for spec in specs:
        for dim in spec.shape:
            for name in dim_names(dim):
                if name not in seen:
                    seen.append(name)
    return seen


def evaluate(dim, sizes: dict[str, int]) -> int | None:
    """The value of a dimension ('2*seq', 'past+1', 7) at `sizes`; None if a name is unbound."""
    if isinstance(dim, int):
        return dim
    expr = parse(str(dim), {k: int(v) for k, v in sizes.items()})
    return None if expr is None else int(expr)


def parse(text: str, names: dict):
    """Parse +, -, *, /, // and parentheses over integers and `names` (ints or tir.Vars);
    None when the text uses a name not in `names` (an 'unk__3' from shape inference)."""
    tokens = [m for m in _TOKEN.finditer(text)]
    if "".join(m.group(0) for m in tokens).replace(" ", "") != text.replace(" ", ""):
        return None
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def atom():
        nonlocal pos
        tok = peek()
        if tok is None:
            raise ValueError(text)
        pos += 1
        if tok["num"]:
            return int(tok["num"])
        if tok["name"]:
            if tok["name"] not in names:
                raise KeyError(tok["name"])
            return names[tok["name"]]
        if tok["op"] == "(":
            value = expr()
            pos += 1
            return value
        if tok["op"] == "-":
            return -atom()
        raise ValueError(text)

    def term():
        nonlocal pos
        value = atom()
        while peek() is not None and peek()["op"] in ("*", "/", "//"):
            op = peek()["op"]
            pos += 1
            rhs = atom()
            value = value * rhs if op == "*" else value // rhs
        return value

    def expr():
        nonlocal pos
        value = term()
        while peek() is not None and peek()["op"] in ("+", "-"):
            op = peek()["op"]
            pos += 1
            rhs = term()
            value = value + rhs if op == "+" else value - rhs
        return value

    try:
        result = expr()
    except (KeyError, ValueError, IndexError, ZeroDivisionError):
        return None
    return result if pos == len(tokens) else None


def make_vars(names) -> dict:
    from tvm import tirx

    return {name: tirx.Var(name, "int64") for name in names}


def relax_shape(dims, variables: dict):
    """Input dims (ints, symbol names, expressions) -> PrimExprs over `variables`."""
    out = []
    for dim in dims:
        if isinstance(dim, int):
            out.append(dim)
            continue
        value = parse(str(dim), variables)
        if value is None:
            raise KeyError(str(dim))
        out.append(value)
    return out


def _inferred_shapes(proto: onnx.ModelProto) -> dict[str, list]:
    infos = list(proto.graph.value_info) + list(proto.graph.output)
    shapes = {}
    for vi in infos:
        t = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if t is None or not t.HasField("shape"):
            continue
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                           for d in t.shape.dim]
    return shapes


def name_nodes_uniquely(proto: onnx.ModelProto) -> None:
    """TVM's importer tells a converter only the node's name: make names unique (in place)."""
    seen: set[str] = set()
    for k, node in enumerate(proto.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.name or node.op_type}__{k}"
        seen.add(node.name)


@contextlib.contextmanager
def recover_shapes(proto: onnx.ModelProto, variables: dict, lost: list):
    """While TVM imports `proto`, re-state the ONNX-inferred shape of every single-output node
    whose Relax result lost its shape (module docstring). Nodes whose shape could not be
    re-stated are appended to `lost` as (node name, op type, output name)."""
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend

    inferred = _inferred_shapes(proto)
    by_name = {node.name: node for node in proto.graph.node}
    importer = onnx_frontend.ONNXGraphImporter
    original = importer._convert_operator

    def convert(self, op_name, inputs, attrs, opset):
        node = by_name.get((attrs.get("tvm_custom") or {}).get("name"))
        out_dims = inferred.get(node.output[0]) if node is not None and node.output else None
        out_shape = None if out_dims is None or None in out_dims else \
            [d if isinstance(d, int) else parse(d, variables) for d in out_dims]
        if out_shape is not None and any(d is None for d in out_shape):
            out_shape = None
        try:
            inputs = reconcile_dims(self.bb, op_name, inputs, attrs)
            inputs = pin_operand_dims(self.bb, op_name, inputs, attrs)
            fixed = SYMBOLIC_CONVERTERS.get(op_name, _no_fix)(self.bb, inputs, out_shape)
            result = original(self, op_name, inputs, attrs, opset) if fixed is None \
                else self.bb.normalize(fixed)
        except Exception:
            if node is not None:
                lost.append((node.name, node.op_type, node.output[0] if node.output else ""))
            raise
        if node is None or len(node.output) != 1 or not isinstance(result, relax.Expr):
            return result
        ty = result.ty
        if not isinstance(ty, relax.TensorType):
            return result
        dims = inferred.get(node.output[0])
        shape = None if dims is None or None in dims else \
            [d if isinstance(d, int) else parse(d, variables) for d in dims]
        if shape is None or any(d is None for d in shape) or \
                (ty.ndim >= 0 and ty.ndim != len(shape)):
            if ty.shape is None:
                lost.append((node.name, node.op_type, node.output[0]))
            return result
        if ty.shape is not None:
            shape = cast_target(list(ty.shape), shape)
            if _same_shape(ty.shape, shape):
                return result
        # no shape, or one in fresh variables TVM made up (Range's 'range_len_0'), which
        # nothing downstream can relate to the inputs' symbols
        if not isinstance(result, relax.Var):   # match_cast a bound value, not a nested call
            result = self.bb.emit(result)
        return self.bb.match_cast(result, relax.TensorType(shape, ty.dtype))

    importer._convert_operator = convert
    try:
        yield
    finally:
        importer._convert_operator = original


def _same_shape(have, want) -> bool:
    import tvm
    from tvm.sym import Analyzer

    if len(have) != len(want):
        return False
    analyzer = Analyzer()
    for a, b in zip(have, want):
        diff = analyzer.simplify(a - b)
        if not (isinstance(diff, tvm.tirx.IntImm) and int(diff) == 0):
            return False
    return True


# Elementwise ONNX ops whose inputs broadcast against each other (multidirectional).
BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum",
                          "Mean", "And", "Or", "Xor", "Equal", "Greater", "GreaterOrEqual",
                          "Less", "LessOrEqual", "Where", "PRelu", "BitShift",
                          "BitwiseAnd", "BitwiseOr", "BitwiseXor"})


def reconcile_dims(bb, op_name, inputs, attrs):
    """Two symbolic dims that must be equal but are written differently: a skip connection adds
    (or concatenates) a map of height `h` and one brought back up from `(h - 1) // 2 + 1`
    (stride 2, then x2 upsampling or a ConvTranspose). Relax cannot prove them equal and gives
    the result an unknown shape, which no kernel can be built for ('emit_te now only supports
    Tensor that has ShapeExpr shape'). The model is only valid where they are equal (ONNX
    Runtime and torch fail otherwise), so the other operands are cast to the longest
    expression: `match_cast`, checked by the VM at every call, so an input for which they
    differ fails with a shape error instead of computing garbage. Towards the longest: a
    match_cast to a bare variable that is already defined ('h') reads, to Relax's
    CanonicalizeBindings, as a new definition of it, which it substitutes into itself (a
    segfault, or the cast dropped and the shape lost again); a compound target is only a
    check. A symbolic dim against a static size other than 1 (an input [2, n] times a [2, 2]
    one) is cast to that size: the size-1 broadcast ONNX would also allow is then refused at
    the call, in one line, where before nothing compiled. Broadcasting ops align dims from
    the right and leave a constant 1 alone; Concat aligns every axis but its own."""
    from tvm import relax, tirx

    if op_name not in BROADCASTING and op_name != "Concat":
        return inputs
    shapes = []
    for value in inputs:
        ty = getattr(value, "ty", None)
        shapes.append(list(ty.shape) if isinstance(ty, relax.TensorType) and
                      isinstance(ty.shape, relax.ShapeExpr) else None)
    known = [s for s in shapes if s is not None]
    if len(known) < 2:
        return inputs
    rank = max(len(s) for s in known)
    if op_name == "Concat" and any(len(s) != rank for s in known):
        return inputs
    skip = None
    if op_name == "Concat":
        skip = int(attrs.get("axis", 0)) % rank if rank else None
    chosen = {}
    for axis in range(rank):
        if axis == skip:
            continue
        dims = [s[axis - rank + len(s)] for s in known if axis - rank + len(s) >= 0]
        symbolic = [d for d in dims if not _is_int(d)]
        sizes = {int(d) for d in dims if _is_int(d) and int(d) != 1}
        if not symbolic or len(sizes) > 1:
            continue
        if sizes:   # [2, n] * [2, 2]: n must be 2 here (1 would broadcast, and is refused)
            chosen[axis] = tirx.IntImm("int64", sizes.pop())
            continue
        if len(symbolic) < 2:
            continue
        widest = max(symbolic, key=lambda d: len(str(d)))
        if any(not _equal(d, widest) for d in symbolic):
            # two inputs' own symbols the frontend did not merge (compiler/equal_dims.py): a
            # cast of y [b, 4] to [a, 4] reads to CanonicalizeBindings as a definition of b,
            # and it drops the cast (the shape lost again); `a * 1`, unsimplified, is a check
            chosen[axis] = (tirx.Mul(widest, tirx.IntImm("int64", 1))
                            if isinstance(widest, tirx.Var) else widest)
    if not chosen:
        return inputs
    out = type(inputs)(inputs) if isinstance(inputs, list) else list(inputs)
    for i, (value, shape) in enumerate(zip(inputs, shapes)):
        if shape is None:
            continue
        offset = rank - len(shape)
        new = [chosen.get(axis + offset, d) if not _is_int(d) else d
               for axis, d in enumerate(shape)]
        if all(_equal(a, b) for a, b in zip(new, shape)):
            continue
        bound = value if isinstance(value, relax.Var) else bb.emit(value)
        out[i] = bb.match_cast(bound, relax.TensorType(new, value.ty.dtype))
    return out


def cast_target(have: list, want: list) -> list:
    """The shape to match_cast a value of shape `have` to, given the wanted `want`: where
    `want` is a bare variable and `have` an expression ('h' against '(h - 1) // 2 * 2 + 2'),
    the expression stays. Relax's CanonicalizeBindings reads a match_cast to a bare variable
    as a new definition of it and substitutes the expression into itself (a segfault, or the
    cast dropped and the shape lost); the VM checks an expression dim just the same."""
    from tvm import tirx

    def keep(h, w) -> bool:
        symbolic = not isinstance(h, (tirx.IntImm, int))
        # ONNX's Attention inference states qk_matmul_output's kv dim as 0 when it is symbolic
        return (isinstance(w, tirx.Var) and symbolic and not isinstance(h, tirx.Var)) or \
            (symbolic and isinstance(w, (tirx.IntImm, int)) and int(w) == 0)

    return [h if keep(h, w) else w for h, w in zip(have, want)]


def _is_int(dim) -> bool:
    from tvm import tirx

    return isinstance(dim, (int, tirx.IntImm))


def _equal(a, b) -> bool:
    import tvm

    diff = tvm.sym.Analyzer().simplify(a - b)
    return isinstance(diff, tvm.tirx.IntImm) and int(diff) == 0


def _no_fix(bb, inputs, out_shape):
    return None


def _constant_ints(expr) -> list[int] | None:
    import tvm

    if isinstance(expr, tvm.ir.GenericConst):
        return [int(v) for v in expr.value.numpy().reshape(-1)]
    return None


def _symbolic_shape(expr):
    from tvm import relax, tirx

    ty = getattr(expr, "ty", None)
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    dims = list(ty.shape)
    return dims if any(not isinstance(d, tirx.IntImm) for d in dims) else None


def expand_symbolic(bb, inputs, out_shape):
    """ONNX Expand of a tensor with a symbolic dim to a constant shape: TVM's converter reads
    every dim of the input as an integer ('Var' object has no attribute 'value'). ONNX Expand
    is bidirectional broadcasting, where a 1 in the target keeps the input's dim: the result
    shape is built from both, with the symbols kept."""
    from tvm import relax

    data_dims = _symbolic_shape(inputs[0])
    target = _constant_ints(inputs[1]) if len(inputs) > 1 else None
    if data_dims is None or target is None:
        return None
    rank = max(len(data_dims), len(target))
    data_dims = [1] * (rank - len(data_dims)) + data_dims
    target = [1] * (rank - len(target)) + target
    shape = [d if t in (1, -1) else t for d, t in zip(data_dims, target)]
    return relax.op.broadcast_to(inputs[0], shape)


def range_symbolic(bb, inputs, out_shape):
    """ONNX Range(start, limit, delta) with a limit computed from a shape (positions
    0..seq-1): TVM's converter turns the limit into a fresh variable ('range_len_0') that
    nothing relates to 'seq', so every later broadcast with the inputs loses its shape (and
    Relax's binding canonicalisation drops a match_cast that would re-state it). With constant
    start and delta and the length L that ONNX inferred, the result is arange(start,
    start + L*delta, delta) in the inputs' symbols."""
    from tvm import relax, tirx

    if out_shape is None or len(out_shape) != 1 or isinstance(out_shape[0], int):
        return None
    start, delta = _constant_scalar(inputs[0]), _constant_scalar(inputs[2])
    if start is None or delta is None or delta == 0:
        return None
    dtype = str(inputs[0].ty.dtype)
    length = out_shape[0]
    if "float" in dtype:
        return None
    end = tirx.const(start, "int64") + length * tirx.const(delta, "int64")
    return relax.op.arange(start, end, delta, dtype=dtype)


def _constant_scalar(expr):
    values = _constant_ints(expr) if expr is not None else None
    return values[0] if values is not None and len(values) == 1 else None


def reshape_symbolic(bb, inputs, out_shape):
    """ONNX Reshape to a shape computed from Shape/Gather/Concat: TVM's converter wants that
    shape as a Relax shape and fails on the tensor a Gather of a shape gives ("Reshape requires
    the input new shape to be Shape"). ONNX shape inference (data propagation) has the target
    in the inputs' symbols: reshape to it."""
    from tvm import relax

    if out_shape is None or _constant_ints(inputs[1]) is not None:
        return None
    return relax.op.reshape(inputs[0], out_shape)


# ONNX op -> a converter used instead of TVM's when it returns an expression (None: TVM's)
SYMBOLIC_CONVERTERS = {"Expand": expand_symbolic, "Range": range_symbolic,
                       "Reshape": reshape_symbolic}


def outputs_as_tensors(mod):
    """ONNX outputs are tensors, but TVM's importer returns a graph output computed by Shape
    (or Concat/Slice of shapes) with a symbolic dim as a Relax shape value, which the VM hands
    back as a ShapeTuple of Python ints (static dims fold it to a constant tensor). Each such
    output of `main` becomes an int64 tensor (shape_to_tensor)."""
    from tvm import relax

    func = mod["main"]
    ret = func.body.body
    is_tuple = isinstance(ret.ty, relax.TupleType)
    fields = list(ret.ty.fields) if is_tuple else [ret.ty]
    if not any(isinstance(f, relax.ShapeType) for f in fields):
        return mod
    bb = relax.BlockBuilder()
    bindings, outs = [], []
    for i, field in enumerate(fields):
        item = ret
        if is_tuple:
            item = relax.Var(f"field{i}", field)
            bindings.append(relax.VarBinding(item, relax.TupleGetItem(ret, i)))
        if not isinstance(field, relax.ShapeType):
            outs.append(item)
            continue
        value = bb.normalize(relax.op.shape_to_tensor(item))
        var = relax.Var(f"output{i}", value.ty)
        bindings.append(relax.VarBinding(var, value))
        outs.append(var)
    body = relax.SeqExpr(list(func.body.blocks) + [relax.BindingBlock(bindings)],
                         relax.Tuple(outs) if is_tuple else outs[0])
    ret_ty = relax.TupleType([o.ty for o in outs]) if is_tuple else outs[0].ty
    mod["main"] = relax.Function(func.params, body, ret_ty, func.is_pure, func.attrs)
    return relax.transform.Normalize()(mod)


# What TVM's from_onnx lets take a Relax shape value as an input (any other op raises "Node X
# cannot handle ShapeExpr inputs"), and the ops whose result is still a shape value when one
# of their inputs is.
_SHAPE_CONSUMERS = frozenset({"Reshape", "Resize", "ConstantOfShape", "Gather", "Slice", "Shape",
                              "Expand", "Concat", "Equal", "Where", "Cast", "CastLike",
                              "Squeeze"})
# op -> the inputs through which a shape value passes to the result (Gather's indices or a
# Slice's bounds computed from a shape do not make the result a shape: an embedding lookup at
# positions 0..seq-1 is a float tensor)
_SHAPE_CARRIERS = {"Gather": (0,), "Slice": (0,), "Squeeze": (0,), "Identity": (0,),
                   "Where": (1, 2), "Concat": None}


def shape_values_as_tensors(proto: onnx.ModelProto) -> int:
    """With symbolic dims, TVM's importer keeps Shape's result (and Gather/Slice/Concat of
    it) as a Relax shape value, and refuses it as the input of any op outside a short list:
    arithmetic on sizes ('heads = Div(Shape(q)[1], Shape(k)[1])' in ONNX Attention's function
    body, a group norm's element count, a centre crop's offsets) failed to import. A
    Cast(to=INT64) is put in front of each such input: TVM's Cast turns a shape value into
    an int64 tensor, and is a no-op on a tensor. Main graph only; returns how many."""
    from onnx import TensorProto, helper

    shaped: set[str] = set()
    constant = {init.name for init in proto.graph.initializer} | {
        o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    added = 0
    nodes = []
    for node in proto.graph.node:
        # Concat/Where of a shape value and a computed tensor: TVM's converters take either
        # all shape values (and constants) or all tensors
        mixed = node.op_type in ("Concat", "Where") and any(i in shaped for i in node.input) \
            and any(i and i not in shaped and i not in constant for i in node.input)
        if node.op_type not in _SHAPE_CONSUMERS or mixed:
            for k, name in enumerate(node.input):
                if name in shaped:
                    cast = f"{name}__as_tensor_{added}"
                    nodes.append(helper.make_node("Cast", [name], [cast], to=TensorProto.INT64,
                                                  name=f"{cast}__cast"))
                    node.input[k] = cast
                    added += 1
        nodes.append(node)
        through = _SHAPE_CARRIERS.get(node.op_type, ())
        carried = [i for k, i in enumerate(node.input) if through is None or k in through]
        if node.op_type == "Shape" or (node.op_type in _SHAPE_CARRIERS and not mixed and
                                       any(i in shaped for i in carried)):
            shaped.update(o for o in node.output if o)
    if added:
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
    return added
