"""Low-bit element types (float8 e4m3fn/e4m3fnuz/e5m2/e5m2fnuz/e8m0, float4e2m1, int4/uint4,
int2/uint2) emulated at the ONNX level, so no target needs TVM's own low-bit dtypes.

Why: TVM 0.27's float8 casts on LLVM are wrong in edge cases (fnuz -0.0, overflow, NaN) and
its 4-bit types do not compile, so these models were refused (cases test_cast_*FLOAT8*,
test_castlike_*, test_cast_*INT4*, test_quantizelinear_e4m3fn, test_dequantizelinear_int4...).

How: inside the compiled model a low-bit tensor is a uint8 tensor holding one element per
byte: the bit pattern, the same byte ml_dtypes stores (so a numpy array is converted at the
boundary by a view: `to_storage` / `from_storage`, used by Artifact.run; the artifact's specs
keep the ONNX element type). On that storage:
- decoding (Cast from a low-bit type, DequantizeLinear) is a Gather from a 256-entry table
  built with ONNX's own reference cast (onnx.reference.ops.op_cast.cast_to), so it is exact;
- encoding a float (Cast/CastLike to a float low-bit type, QuantizeLinear) finds the
  interval of |x| among breakpoints taken from that same reference cast (binary search with
  Gather + LessOrEqual), then picks the code of that interval for positive and negative
  inputs: round-to-nearest-even, saturate, overflow to Inf/NaN, -0.0 and NaN all follow the
  reference exactly (NaN is written as the reference writes a positive NaN);
- float -> int4/uint4/int2/uint2 truncates toward zero and wraps, NaN/Inf give 0, as the
  reference (ml_dtypes' cast) does; QuantizeLinear rounds half to even and clips;
- data-movement operators (Reshape, Transpose, Concat, Slice, Gather...) run on the storage.
Anything else on a low-bit tensor is refused (NotSupported) with the reason.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PREFIX = "anychip_lowbit"


def _types() -> dict[int, tuple[str, int]]:
    """ONNX element type -> (ml_dtypes name, bit mask of the stored byte)."""
    table = {TensorProto.FLOAT8E4M3FN: ("float8_e4m3fn", 0xFF),
             TensorProto.FLOAT8E4M3FNUZ: ("float8_e4m3fnuz", 0xFF),
             TensorProto.FLOAT8E5M2: ("float8_e5m2", 0xFF),
             TensorProto.FLOAT8E5M2FNUZ: ("float8_e5m2fnuz", 0xFF),
             TensorProto.INT4: ("int4", 0x0F), TensorProto.UINT4: ("uint4", 0x0F)}
    for name, np_name, mask in (("FLOAT8E8M0", "float8_e8m0fnu", 0xFF),
                                ("FLOAT4E2M1", "float4_e2m1fn", 0x0F),
                                ("INT2", "int2", 0x03), ("UINT2", "uint2", 0x03)):
        if hasattr(TensorProto, name):
            table[getattr(TensorProto, name)] = (np_name, mask)
    return table


LOWBIT = _types()
NP_NAMES = {name for name, _ in LOWBIT.values()}
_INTEGER = {t for t, (n, _) in LOWBIT.items() if "int" in n}
_FP8_SATURATING = {TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ,
                   TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E5M2FNUZ}
# operators that only move elements: on the storage bytes they mean what they mean on values
_DATA_MOVEMENT = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose",
                  "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND", "Expand",
                  "Tile", "DepthToSpace", "SpaceToDepth", "Shape", "Size"}
# source element types whose values a float32 (or float64) holds exactly
_EXACT_F32 = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT8,
              TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16, TensorProto.BOOL}


def _np_dtype(elem: int):
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem))


def _name(elem: int) -> str:
    return helper.tensor_dtype_to_string(elem).replace("TensorProto.", "").lower()


# -- the boundary: numpy arrays <-> storage -------------------------------------------------
_NATIVE = frozenset(np.dtype(t) for t in ("bool", "float16", "float32", "float64", "int8", "int16",
                                          "int32", "int64", "uint8", "uint16", "uint32",
                                          "uint64"))


def to_storage(array):
    """A low-bit numpy array (ml_dtypes) as the uint8 storage the compiled model takes."""
    arr = np.asarray(array)
    if arr.dtype in _NATIVE:   # the common case, without dtype.name's cost per call
        return array
    if arr.dtype.name in NP_NAMES:
        return np.ascontiguousarray(arr).view(np.uint8)
    return array


def from_storage(array, dtype: str):
    """The compiled model's uint8 storage as the low-bit numpy array the model promises."""
    if dtype in NP_NAMES and np.asarray(array).dtype == np.uint8:
        import ml_dtypes  # noqa: F401 - registers the dtype names with numpy

        return np.ascontiguousarray(array).view(np.dtype(dtype))
    return array


def storage_specs(specs):
    """TensorSpecs of the compiled model: low-bit tensors as uint8 (the importer's view)."""
    import dataclasses

    return [dataclasses.replace(s, dtype="uint8") if s.dtype in NP_NAMES else s for s in specs]


# -- reference semantics ---------------------------------------------------------------------
def _reference_cast(values: np.ndarray, to: int, saturate: bool, round_mode: str) -> np.ndarray:
    from onnx.reference.ops.op_cast import cast_to

    with np.errstate(all="ignore"):
        return np.asarray(cast_to(values, to, saturate, round_mode))


def _codes(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values).view(np.uint8) & LOWBIT[_elem_of(values.dtype)][1]


def _elem_of(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _decoded(elem: int) -> np.ndarray:
    """The 256 byte values as `elem` values (upper bits of narrow types ignored)."""
    import ml_dtypes  # noqa: F401

    name, mask = LOWBIT[elem]
    return (np.arange(256, dtype=np.uint8) & mask).view(np.dtype(name))


def _staircase(oracle, compute) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Breakpoints B (ascending) and codes for |x| >= 0 of a monotone rounding `oracle`
    (array of `compute` -> uint8 codes): code(x) = C[#{B <= |x|}], with C_pos for x >= +0 and
    C_neg for x <= -0 (sign taken from x). Found by bisection on the bit patterns."""
    uint = np.uint32 if compute == np.float32 else np.uint64
    inf_bits = int(np.array(np.inf, compute).view(uint))

    def f(bits: int) -> int:
        return int(oracle(np.array([bits], uint).view(compute))[0])

    def fneg(bits: int) -> int:
        return int(oracle(-np.array([bits], uint).view(compute))[0])

    breaks, pos, neg = [], [f(0)], [fneg(0)]
    lo = 0
    while f(lo) != f(inf_bits):
        code, a, b = f(lo), lo, inf_bits       # f(a) == code, f(b) != code
        while b - a > 1:
            mid = (a + b) // 2
            a, b = (mid, b) if f(mid) == code else (a, mid)
        if fneg(b - 1) != neg[-1]:
            raise AssertionError("low-bit cast is not symmetric in sign")
        breaks.append(np.array([b], uint).view(compute)[0])
        pos.append(f(b))
        neg.append(fneg(b))
        lo = b
    return np.array(breaks, compute), np.array(pos, np.uint8), np.array(neg, np.uint8)


# -- the graph builder -----------------------------------------------------------------------
class _Builder:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"{PREFIX}_{hint}_{self.count}"

    def const(self, value, hint: str = "c") -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or self.fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def cast(self, x: str, to: int, out: str | None = None) -> str:
        return self.op("Cast", [x], out, to=to)

    # decode: storage -> any type, through a table
    def table(self, x: str, table: np.ndarray, out: str | None = None) -> str:
        target = _elem_of(table.dtype) if table.dtype.name not in NP_NAMES else None
        if table.dtype.name in NP_NAMES:
            table = _codes(table)
        wide = table.dtype.name == "bfloat16"
        data = self.const(table.astype(np.float32) if wide else table, "table")
        idx = self.cast(x, TensorProto.INT32)
        if wide:
            return self.cast(self.op("Gather", [data, idx]), target, out)
        return self.op("Gather", [data, idx], out)

    # encode: float (exact in `compute`) -> float low-bit storage
    def encode_float(self, x: str, compute, oracle, out: str | None = None) -> str:
        breaks, pos, neg = _staircase(oracle, compute)
        steps = 1
        while steps - 1 < len(breaks):
            steps *= 2
        padded = np.concatenate([breaks, np.repeat(breaks[-1:], steps - 1 - len(breaks))]) \
            if len(breaks) else np.zeros(0, compute)
        last = len(breaks)
        pos = np.concatenate([pos, np.repeat(pos[last:], steps - len(pos))])
        neg = np.concatenate([neg, np.repeat(neg[last:], steps - len(neg))])
        a = self.op("Abs", [x])
        lo = self.const(np.zeros((), np.int64), "zero")
        if len(breaks):
            table = self.const(padded, "breaks")
            step = steps // 2
            while step >= 1:
                probe = self.op("Add", [lo, self.const(np.array(step - 1, np.int64))])
                ok = self.op("LessOrEqual", [self.op("Gather", [table, probe]), a])
                lo = self.op("Where", [ok, self.op("Add", [lo, self.const(np.array(step, np.int64))]),
                                       lo])
                step //= 2
        else:                               # a constant code, in x's shape
            lo = self.op("Where", [self.op("IsNaN", [a]), lo, lo])
        code = self.op("Gather", [self.const(pos, "pos"), lo])
        if not np.array_equal(pos, neg):
            one = self.const(np.array(1, compute))
            zero = self.const(np.array(0, compute))
            negative = self.op("Or", [self.op("Less", [x, zero]),            # -0.0 too
                                      self.op("Less", [self.op("Div", [one, x]), zero])])
            code = self.op("Where", [negative, self.op("Gather", [self.const(neg, "neg"), lo]),
                                     code])
        nan = int(oracle(np.array([np.nan], compute))[0])
        return self.op("Where", [self.op("IsNaN", [x]), self.const(np.array(nan, np.uint8)),
                                 code], out)

    # encode: integral float in range -> int low-bit storage (two's complement bits)
    def bits_of_integer(self, v: str, bits: int, compute, out: str | None = None) -> str:
        wrap = self.op("Where", [self.op("Less", [v, self.const(np.array(0, compute))]),
                                 self.op("Add", [v, self.const(np.array(2 ** bits, compute))]), v])
        return self.cast(wrap, TensorProto.UINT8, out)


def _float_oracle(to: int, saturate: bool, round_mode: str, compute):
    return lambda v: _codes(_reference_cast(v.astype(compute), to, saturate, round_mode))


def _compute_type(elem: int):
    if elem == TensorProto.DOUBLE:
        return np.float64, TensorProto.DOUBLE
    if elem in _EXACT_F32:
        return np.float32, TensorProto.FLOAT
    return None, None


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


class _Refuse(Exception):
    pass


def _cast(b: _Builder, x: str, src: int, to: int, saturate: bool, round_mode: str, out: str):
    if src in LOWBIT:                       # decode (to anything) through a table
        if to == TensorProto.STRING:
            raise _Refuse(f"Cast from {_name(src)} to string is not emulated")
        b.table(x, _reference_cast(_decoded(src), to, saturate, round_mode), out)
        return
    compute, compute_elem = _compute_type(src)
    if compute is None:
        raise _Refuse(f"Cast from {_name(src)} to {_name(to)} is not emulated (only from "
                      f"float, float16, bfloat16, double and 8/16-bit integers)")
    xc = x if src == compute_elem else b.cast(x, compute_elem)
    name, _ = LOWBIT[to]
    if to in _INTEGER:                      # truncate toward zero, wrap; NaN/Inf -> 0
        bits = {"int4": 4, "uint4": 4, "int2": 2, "uint2": 2}[name]
        mod = b.const(np.array(2 ** bits, compute))
        t = b.op("Mul", [b.op("Sign", [xc]), b.op("Floor", [b.op("Abs", [xc])])])
        m = b.op("Sub", [t, b.op("Mul", [mod, b.op("Floor", [b.op("Div", [t, mod])])])])
        finite = b.op("Less", [b.op("Abs", [xc]), b.const(np.array(np.inf, compute))])
        m = b.op("Where", [finite, m, b.const(np.array(0, compute))])
        b.cast(m, TensorProto.UINT8, out)
        return
    b.encode_float(xc, compute, _float_oracle(to, saturate, round_mode, compute), out)


def _axis_shape(rank_x: int, axis: int, rank_s: int) -> list[int] | None:
    if rank_s == 0:
        return None
    dims = [1] * rank_x
    dims[axis % rank_x] = -1
    return dims


def _quant_param(b: _Builder, name: str, rank_x: int, axis: int, rank: int, elem: int,
                 to_elem: int) -> str:
    value = name if elem == to_elem else b.cast(name, to_elem)
    dims = _axis_shape(rank_x, axis, rank)
    return b.op("Reshape", [value, b.const(np.array(dims, np.int64), "shape")]) if dims else value


def _dequantize(b: _Builder, node, types, ranks, out: str):
    x, scale = node.input[0], node.input[1]
    zp = node.input[2] if len(node.input) > 2 and node.input[2] else ""
    if _attr(node, "block_size", 0):
        raise _Refuse("blocked DequantizeLinear on low-bit types is not emulated")
    src = types[x]
    axis, rx = _attr(node, "axis", 1), ranks.get(x)
    if rx is None:
        raise _Refuse(f"DequantizeLinear input '{x}' has no known rank")
    scale_elem = types[scale]
    wide = scale_elem == TensorProto.DOUBLE
    calc = TensorProto.DOUBLE if wide else TensorProto.FLOAT
    dx = b.table(x, _decoded(src).astype(np.float64 if wide else np.float32))
    if zp and src in _INTEGER:              # the reference ignores float zero points
        zpv = b.table(zp, _decoded(src).astype(np.float64 if wide else np.float32))
        dims = _axis_shape(rx, axis, ranks.get(zp, 0))
        if dims:
            zpv = b.op("Reshape", [zpv, b.const(np.array(dims, np.int64), "shape")])
        dx = b.op("Sub", [dx, zpv])
    y = b.op("Mul", [dx, _quant_param(b, scale, rx, axis, ranks.get(scale, 0), scale_elem, calc)])
    out_elem = _attr(node, "output_dtype", 0) or scale_elem
    b.cast(y, out_elem, out)


def _quantize(b: _Builder, node, types, ranks, to: int, out: str):
    x, scale = node.input[0], node.input[1]
    zp = node.input[2] if len(node.input) > 2 and node.input[2] else ""
    if _attr(node, "block_size", 0):
        raise _Refuse("blocked QuantizeLinear to low-bit types is not emulated")
    axis, rx = _attr(node, "axis", 1), ranks.get(x)
    if rx is None:
        raise _Refuse(f"QuantizeLinear input '{x}' has no known rank")
    precision = _attr(node, "precision", 0)
    calc = precision or helper.np_dtype_to_tensor_dtype(
        np.result_type(_np_dtype(types[x]), _np_dtype(types[scale])))
    if calc not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE):
        raise _Refuse(f"QuantizeLinear in {_name(calc)} is not emulated")
    xs = b.op("Div", [x if types[x] == calc else b.cast(x, calc),
                      _quant_param(b, scale, rx, axis, ranks.get(scale, 0), types[scale], calc)])
    compute, compute_elem = _compute_type(calc)
    xs = xs if calc == compute_elem else b.cast(xs, compute_elem)
    name, _ = LOWBIT[to]
    if to in _INTEGER:
        bits = {"int4": 4, "uint4": 4, "int2": 2, "uint2": 2}[name]
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if name.startswith("int") \
            else (0, 2 ** bits - 1)
        v = b.op("Round", [xs])
        if zp:
            zpv = b.table(zp, _decoded(to).astype(compute))
            dims = _axis_shape(rx, axis, ranks.get(zp, 0))
            if dims:
                zpv = b.op("Reshape", [zpv, b.const(np.array(dims, np.int64), "shape")])
            v = b.op("Add", [v, zpv])
        lo_c, hi_c = b.const(np.array(lo, compute)), b.const(np.array(hi, compute))
        v = b.op("Where", [b.op("IsNaN", [v]), lo_c, b.op("Clip", [v, lo_c, hi_c])])
        b.bits_of_integer(v, bits, compute, out)
        return
    if to in _FP8_SATURATING:               # the reference ignores float8 zero points
        saturate = bool(_attr(node, "saturate", 1))
        b.encode_float(xs, compute, _float_oracle(to, saturate, "up", compute), out)
        return
    if zp:                                  # float4: x / scale + zero point, then the cast
        zpv = b.table(zp, _decoded(to).astype(compute))
        dims = _axis_shape(rx, axis, ranks.get(zp, 0))
        if dims:
            zpv = b.op("Reshape", [zpv, b.const(np.array(dims, np.int64), "shape")])
        xs = b.op("Add", [xs, zpv])
    b.encode_float(xs, compute, _float_oracle(to, True, "up", compute), out)


def _shape_info(model: onnx.ModelProto) -> tuple[dict[str, int], dict[str, int]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - use what the model says
        inferred = model
    graph = inferred.graph
    types, ranks = {}, {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        tt = vi.type.tensor_type
        if vi.type.WhichOneof("value") == "tensor_type":
            types[vi.name] = tt.elem_type
            if tt.HasField("shape"):
                ranks[vi.name] = len(tt.shape.dim)
    for init in graph.initializer:
        types[init.name], ranks[init.name] = init.data_type, len(init.dims)
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]], ranks[node.output[0]] = a.t.data_type, len(a.t.dims)
    return types, ranks


def _storage_tensor(tensor: onnx.TensorProto) -> onnx.TensorProto:
    array = numpy_helper.to_array(tensor)
    codes = np.ascontiguousarray(array).view(np.uint8) & LOWBIT[tensor.data_type][1]
    return numpy_helper.from_array(codes.reshape(tuple(tensor.dims)), tensor.name)


def uses_lowbit(model: onnx.ModelProto) -> bool:
    graph = model.graph
    if any(vi.type.tensor_type.elem_type in LOWBIT
           for vi in list(graph.input) + list(graph.output) + list(graph.value_info)):
        return True
    if any(t.data_type in LOWBIT for t in graph.initializer):
        return True
    return any((a.name == "to" and a.i in LOWBIT) or (a.HasField("t") and a.t.data_type in LOWBIT)
               for n in graph.node for a in n.attribute)


def emulate_lowbit(model: onnx.ModelProto) -> list[str]:
    """Rewrite `model` in place (see the module docstring); returns the op types rewritten.
    Raises NotSupported (from importer_fixes) with the reason when it cannot."""
    from .refusal import NotSupported

    try:
        return _emulate(model)
    except _Refuse as exc:
        raise NotSupported(f"{exc}; this element type is not supported by anychip here") from exc


def _emulate(model: onnx.ModelProto) -> list[str]:
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for n in graph.node for a in n.attribute) or model.functions:
        raise _Refuse("low-bit tensors in models with subgraphs or local functions are not "
                      "emulated")
    types, ranks = _shape_info(model)
    low = {n for n, t in types.items() if t in LOWBIT}
    b = _Builder(model)
    done: list[str] = []
    for node in graph.node:
        ins = [i for i in node.input if i in low]
        outs = [o for o in node.output if o in low]
        to = _attr(node, "to")
        if node.op_type == "CastLike" and (ins or outs):
            to = types.get(node.input[1])
        if node.op_type in ("Cast", "CastLike") and (ins or outs or to in LOWBIT):
            src = types.get(node.input[0])
            if src is None or to is None:
                raise _Refuse(f"Cast '{node.name}': element types unknown")
            saturate = bool(_attr(node, "saturate", 1))
            round_mode = _attr(node, "round_mode", "up")
            if src == to:
                b.op("Identity", [node.input[0]], node.output[0])
            else:
                _cast(b, node.input[0], src, to, saturate, round_mode, node.output[0])
            done.append(node.op_type)
        elif node.op_type == "DequantizeLinear" and node.input[0] in low:
            _dequantize(b, node, types, ranks, node.output[0])
            done.append(node.op_type)
        elif node.op_type == "QuantizeLinear" and outs:
            _quantize(b, node, types, ranks, types[node.output[0]], node.output[0])
            done.append(node.op_type)
        elif node.op_type == "Constant" and outs:
            new = onnx.NodeProto()
            new.CopyFrom(node)
            for a in new.attribute:
                if a.name == "value":
                    a.t.CopyFrom(_storage_tensor(a.t))
            b.nodes.append(new)
        elif ins or outs:
            kinds = sorted({_name(types[t]) for t in ins + outs})
            if node.op_type not in _DATA_MOVEMENT:
                raise _Refuse(f"{node.op_type} on {', '.join(kinds)} tensors is not emulated")
            b.nodes.append(node)
        else:
            b.nodes.append(node)
    for i, init in enumerate(graph.initializer):
        if init.data_type in LOWBIT:
            graph.initializer[i].CopyFrom(_storage_tensor(init))
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.type.tensor_type.elem_type in LOWBIT:
            vi.type.tensor_type.elem_type = TensorProto.UINT8
    del graph.node[:]
    graph.node.extend(b.nodes)
    graph.initializer.extend(b.inits)
    return done
