"""IEEE special values propagate as ONNX Runtime propagates them.

TVM lowers `max`/`min` to a compare-and-select (`a > b ? a : b`), and a compare with NaN is
false, so `relu(NaN)`, `Max(NaN, w)`, `Clip(NaN)`, `ReduceMax([.., NaN, ..])` and
`Sign(NaN)` came out as a number where ONNX Runtime, numpy and torch give NaN: a model whose
input holds a NaN looked healthy. This pass wraps those operators so that a NaN operand gives
NaN (ORT's result on its cpu provider), at the cost of one fused compare per element; the
kernel libraries' own epilogues (oneDNN's relu) and torch's max pooling already propagate NaN.
Max pooling keeps a NaN wherever it is in the window, as torch, numpy and ORT's ReduceMax do
(ORT's MaxPool kernel, MLAS, keeps it only when it is the window's last element). A 2-D
NHWC one with static shapes (what the cpu backend's TVM kernels get) becomes one kernel whose
max keeps a NaN (`nan_max_pool2d`); others add the average-pooled NaN mask, three more
kernels (SqueezeNet: 0.19 ms of a 4.2 ms run).

It runs at the end of a host backend's `lower` (after the library partition, so no library
pattern is hidden from it); infinities and signed zeros already follow IEEE in TVM's code.
"""

from __future__ import annotations

import re

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .relax_passes import is_library_function

# ops that select with a compare and drop NaN (unary forms: x is args[0])
_UNARY = ("relax.nn.relu", "relax.clip", "relax.sign")
_BINARY = ("relax.maximum", "relax.minimum")
_REDUCE = ("relax.max", "relax.min")
# max pools (MaxPool, GlobalMaxPool): the NaN mask is average-pooled over the same windows
_POOL = {"relax.nn.max_pool1d": "avg_pool1d", "relax.nn.max_pool2d": "avg_pool2d",
         "relax.nn.max_pool3d": "avg_pool3d"}
# kernels the ONNX importer emits through topi (named after the topi function)
_TIR_BINARY = {"maximum", "minimum"}
_TIR_UNARY = {"relu", "clip"}
_TRAILING_DIGITS = re.compile(r"_?\d+$")


def _dtype(expr) -> str:
    return str(getattr(getattr(expr, "ty", None), "dtype", "") or "")


def _skipped(func) -> bool:
    return is_library_function(func)


def _isnan(x):
    """isnan for any float type: TVM 0.27 legalizes isnan for float16/32/64 only (bfloat16:
    "Data type T.bfloat16 not supported for isnan op"), so narrower types are widened first."""
    dtype = _dtype(x) or "float32"
    if dtype in ("float16", "float32", "float64"):
        return relax.op.isnan(x)
    return relax.op.isnan(relax.op.astype(x, "float32"))


@mutator
class _PropagateNaN(PyExprMutator):
    def __init__(self, mod, fused_pools: bool = False):
        super().__init__(mod)
        self.fused_pools = fused_pools
        self.unary = {tvm.ir.Op.get(n) for n in _UNARY}
        self.binary = {tvm.ir.Op.get(n) for n in _BINARY}
        self.reduce = {tvm.ir.Op.get(n) for n in _REDUCE}
        self.pool = {tvm.ir.Op.get(n): getattr(relax.op.nn, avg) for n, avg in _POOL.items()}
        self.call_tir = tvm.ir.Op.get("relax.call_tir")
        self.changed = 0

    def visit_function_(self, func):  # noqa: N802 - TVM's visitor naming
        if _skipped(func):
            return func   # a library pattern's body is the library's business
        return super().visit_function_(func)

    def _kind(self, call) -> tuple[str, list] | None:
        """('unary'|'binary'|'reduce', operands) for a NaN-dropping call, else None. A call_tir
        to a kernel the ONNX importer emitted from topi's maximum/minimum (Clip, Max, Min)
        counts as the Relax op it stands for."""
        op = call.op
        if op in self.unary:
            return "unary", list(call.args[:1])
        if op in self.binary:
            return "binary", list(call.args[:2])
        if op in self.reduce:
            return "reduce", list(call.args[:1])
        if op in self.pool:
            return "pool", list(call.args[:1])
        if op == self.call_tir and isinstance(call.args[0], relax.GlobalVar):
            base = _TRAILING_DIGITS.sub("", call.args[0].name_hint)
            operands = list(getattr(call.args[1], "fields", []))
            if base in _TIR_BINARY and len(operands) == 2:
                return "binary", operands
            if base in _TIR_UNARY and len(operands) == 1:
                return "unary", operands
        return None

    def visit_call_(self, call):  # noqa: N802
        call = self.visit_expr_post_order(call)
        kind = self._kind(call)
        if kind is None or not _dtype(call).startswith(("float", "bfloat")):
            return call
        kind, operands = kind
        self.changed += 1
        if kind == "pool" and self.fused_pools and _fused_max_pool(call):
            return self.builder_.call_te(nan_max_pool2d, operands[0], call.attrs,
                                         primfunc_name_hint="max_pool2d_keep_nan")
        result = self.builder_.normalize(call)
        x = operands[0]
        if kind == "unary":
            return relax.op.where(_isnan(x), x, result)
        if kind == "binary":
            y = operands[1]
            inner = relax.op.where(_isnan(y), relax.op.add(y, result), result)
            return relax.op.where(_isnan(x), relax.op.add(x, inner), inner)
        zeros = relax.op.zeros_like(x)
        if kind == "pool":
            # a window holding a NaN averages the NaN mask to NaN, any other window to 0
            # (max pooling pads with -inf, the average of the padded mask stays 0)
            a = call.attrs
            avg = self.pool[call.op](relax.op.where(_isnan(x), x, zeros), a.pool_size, a.strides,
                                     a.padding, a.dilation, a.ceil_mode, False, a.layout,
                                     a.out_layout)
            return relax.op.add(result, avg)
        # a reduction: add the sum of the NaNs along the same axes (0 when there are none)
        nans = relax.op.sum(relax.op.where(_isnan(x), x, zeros), call.attrs.axis,
                            call.attrs.keepdims)
        return relax.op.add(result, nans)


def vectorizable_isnan() -> None:
    """Let TIR's VectorizeLoop vectorize `isnan` (LLVM lowers it to one unordered compare, a
    vector of them as well). TVM 0.27 registers no TVectorizable attribute for tirx.isnan, so
    a vectorized loop that calls it is scalarized whole: every kernel with a NaN-propagating
    relu or clip from this pass ran element by element (mobilenet_v3's depthwise convolution
    with its hardswish: 61.7 us, 18.2 us once vectorized, NaN and infinities bit-identical).
    Process-wide and idempotent; called by propagate_nan, i.e. before any kernel that calls
    isnan through it is built."""
    op = tvm.ir.Op.get("tirx.isnan")
    if not op.get_attr("TVectorizable"):
        tvm.ir.register_op_attr("tirx.isnan", "TVectorizable", True)


def nan_max_pool2d(data, attrs):
    """TE: max pooling of NHWC `data` as relax.nn.max_pool2d with `attrs` (no ceil mode),
    whose max keeps a NaN: acc = isnan(acc) or acc > x ? acc : x (the identity and the pad
    are -inf). Named as TOPI names its pools (pad_temp, pool_max) for backends/host/pooling.py
    to schedule."""
    from tvm import te, tirx, topi

    n, height, width, channels = (int(d) for d in data.shape)
    (kh, kw), (sh, sw), (dh, dw) = ([int(v) for v in getattr(attrs, k)]
                                    for k in ("pool_size", "strides", "dilation"))
    top, left, bottom, right = (int(p) for p in attrs.padding)
    out_h = (height + top + bottom - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + left + right - dw * (kw - 1) - 1) // sw + 1
    lowest = tirx.const(float("-inf"), data.dtype)
    padded = topi.nn.pad(data, [0, top, left, 0], [0, bottom, right, 0], pad_value=lowest,
                         name="pad_temp") if top or left or bottom or right else data
    keep_nan_max = te.comm_reducer(
        lambda acc, x: tirx.Select(tirx.Or(tirx.isnan(acc), acc > x), acc, x),
        lambda dtype: tirx.const(float("-inf"), dtype), name="nan_max")
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    return te.compute((n, out_h, out_w, channels), lambda b, y, x, c: keep_nan_max(
        padded[b, y * sh + ry * dh, x * sw + rx * dw, c], axis=[ry, rx]), name="pool_max")


def _fused_max_pool(call) -> bool:
    """Whether `call` (a max pool) is one `nan_max_pool2d` computes: 2-D, NHWC in and out,
    float32, static shape, no ceil mode."""
    a = call.attrs
    shape = getattr(getattr(call.args[0], "ty", None), "shape", None)
    return (call.op.same_as(tvm.ir.Op.get("relax.nn.max_pool2d")) and a.layout == "NHWC"
            and (a.out_layout or "NHWC") == "NHWC" and not a.ceil_mode
            and _dtype(call.args[0]) == "float32" and shape is not None
            and all(isinstance(d, tvm.tirx.IntImm) for d in shape))


def propagate_nan(mod, fused_pools: bool = False):
    """`mod` with NaN-dropping operators wrapped in every Relax function; with
    `fused_pools`, the max pools `nan_max_pool2d` computes become that kernel (the cpu
    backend, whose pooling schedule takes it; the npu's cost model knows TOPI's pools)."""
    vectorizable_isnan()
    out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    changed = 0
    for gvar, func in list(out.functions.items()):
        if isinstance(func, relax.Function) and not _skipped(func):
            rewriter = _PropagateNaN(out, fused_pools)
            new = rewriter.visit_expr(func)
            for kernel_var, kernel in rewriter.builder_.get().functions.items():
                if isinstance(kernel, tvm.tirx.PrimFunc):   # call_te's pooling kernels
                    out[kernel_var] = kernel
            out[gvar] = new
            changed += rewriter.changed
    return out if changed else mod
