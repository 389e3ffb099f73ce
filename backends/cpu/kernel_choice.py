"""Which kernels a cpu compile runs: the kernel library (oneDNN/MKL through torch) with TVM's
own kernels on one thread beside it, or TVM's kernels alone on every core.

The two do not mix: TVM's thread pool and the library's OpenMP workers each want every core,
and on 2 cores a graph with both ran up to 4x slower than either alone (zoo:mobilenet_v3,
docs/performance.md). So the choice is per graph. A library call costs ~40 us before any
arithmetic (torch's dispatch and oneDNN's per-call setup), then runs near the cores' peak;
TVM's register-tiled convolution and GEMM kernels (backends/host/gemm.py,
backends/host/depthwise.py) cost nothing to enter and run a little below it. A graph of many
small convolutions (mobile networks, Inception, DenseNet) is faster in TVM alone, a graph of
few large ones (ResNet, VGG) on the library; the estimate below decides, from each
convolution's and matmul's FLOPs. TVM alone is only chosen when every one of them has a TVM
schedule: static shapes, constant convolution weights, NHWC. Transformers qualify since the
GEMM schedule tiles attention's products per head (backends/host/gemm.py) and GELU, softmax
and SiLU became polynomials (backends/host/fast_math.py): TVM's GEMMs reach 200-220 GFLOP/s
on BERT's shapes where torch's oneDNN/MKL calls reach 150. Depthwise channels that TVM's
vectors do not divide count at the narrower vectors' speed; a GEMM's (per group) are tiled
in rows of whole registers and a short tail (backends/host/gemm.py: ShuffleNet's 34 and 68)
at near full speed.
"""

from __future__ import annotations

import math

from anychip.backends.host import winograd as _winograd
from anychip.backends.host.gemm import ragged_rows
from anychip.backends.host.lanes import dividing_lanes
from anychip.backends.host.relax_passes import _const_value as _constant
from anychip.backends.host.widen import widened_width

# what a library call costs beyond its arithmetic, and both sides' arithmetic rate per core,
# as effective figures fitted to whole networks run both ways in one process (2 Zen 4
# cores; docs/performance.md). The call's cost is more than torch's dispatch alone (~40 us):
# the output's allocation, oneDNN's reorders, and the TVM kernels around it that run on one
# thread instead of all. TVM's rate was 75 until weights were packed in panels
# (backends/host/packed_weights.py): since, TVM alone ran ResNet-50 in 41.6 ms against the
# library's 47.6 (98 GFLOP/s a core), ResNet-18 17.2 against 18.7, VGG-19 188.3 against
# 197.5 (104 GFLOP/s a core; the library's 105 and 150 us a call fit all three)
LIBRARY_CALL_US = 150.0
LIBRARY_GFLOPS_PER_CORE = 105.0
TVM_GFLOPS_PER_CORE = 104.0
# depthwise channels that this many float32 lanes do not divide make TVM's vectors
# proportionally slower
FULL_LANES = 8


def _lanes(width: int) -> int:
    return dividing_lanes(width, FULL_LANES)


def _conv(call, winograd: bool = True) -> tuple[float, float] | str:
    """(FLOPs, TVM's speed relative to full vectors) of a conv2d, or why TVM alone should
    not take it; a 3x3 one that backends/host/winograd.py takes counts at its estimate."""
    from anychip.compiler.relax_info import static_shape

    a = call.attrs
    out, weight = static_shape(call), _constant(call.args[1])
    if out is None or weight is None or weight.ndim != 4:
        return "a convolution with a symbolic shape or a weight that is not a constant"
    if a.data_layout != "NHWC" or a.kernel_layout != "OIHW":
        return "a convolution not in NHWC"
    if str(weight.dtype) != "float32" or str(getattr(call.ty, "dtype", "")) != "float32":
        return "a convolution not in float32 (the GEMM schedule's)"
    groups, channels = int(a.groups), weight.shape[0]
    flops = 2.0 * math.prod(out) * math.prod(weight.shape[1:])
    if weight.shape[1] == 1 and groups > 1 and groups != channels:
        return "a depthwise convolution with a channel multiplier"
    if weight.shape[1] == 1 and groups > 1:   # depthwise: vectors along the image's channels
        return flops, _lanes(channels) / FULL_LANES
    width = channels // groups
    if winograd and _winograd.eligible(a, weight.shape, "float32"):
        m, cost = _winograd.estimate(out[0], out[1], out[2], weight.shape[1], channels)
        if m is not None:
            return cost, 1.0
    if groups == 1:   # an odd width is computed at widen.py's width: its speed, less the pad
        wide = widened_width(width, FULL_LANES)
        if wide != width:
            return flops, width / wide * (1.0 if ragged_rows(wide, FULL_LANES)
                                          else _lanes(wide) / FULL_LANES)
    return flops, 1.0 if ragged_rows(width, FULL_LANES) else _lanes(width) / FULL_LANES


def _matmul(call) -> tuple[float, float] | str:
    """(FLOPs, relative speed) of a matmul: by a constant weight, or of two activations
    (attention's Q K^T and P V per head: the GEMM schedule tiles each head, 183-202 GFLOP/s
    on 2 cores for BERT's); symbolic shapes keep the library."""
    from anychip.compiler.relax_info import dtype_of, static_shape

    out, data = static_shape(call), static_shape(call.args[0])
    if out is None or data is None or static_shape(call.args[1]) is None:
        return "a matmul with a symbolic shape"
    if dtype_of(call) != "float32" or dtype_of(call.args[1]) != "float32":
        return "a matmul not in float32 (the GEMM schedule's)"
    return 2.0 * math.prod(out) * data[-1], 1.0


def choose_kernels(mod, cores: int, winograd: bool = True) -> dict:
    """{"kernels": "tvm" | "library", "why": ..., estimates in ms} for `mod` (NHWC, before
    library dispatch) on `cores` cores; `winograd`: the cpu family's option of that name."""
    import tvm
    from tvm import relax

    measure = {tvm.ir.Op.get("relax.nn.conv2d"): lambda call: _conv(call, winograd),
               tvm.ir.Op.get("relax.matmul"): _matmul}
    found: list = []

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            rule = measure.get(expr.op)
            if rule is not None:
                found.append(rule(expr))

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    refusals = [f for f in found if isinstance(f, str)]
    work = [f for f in found if not isinstance(f, str)]
    library_ms = sum(LIBRARY_CALL_US * 1e-3 + flops / (LIBRARY_GFLOPS_PER_CORE * cores * 1e6)
                     for flops, _ in work)
    tvm_ms = sum(flops / (TVM_GFLOPS_PER_CORE * speed * cores * 1e6) for flops, speed in work)
    estimate = {"library_ms": round(library_ms, 3), "tvm_ms": round(tvm_ms, 3),
                "ops": len(found)}
    if not found:
        return {"kernels": "library", "why": "no convolution or matmul", **estimate}
    if refusals:
        return {"kernels": "library", "why": f"{refusals[0]} ({len(refusals)} of {len(found)})",
                **estimate}
    if tvm_ms < library_ms:
        return {"kernels": "tvm", "why": "TVM's kernels alone are estimated faster", **estimate}
    return {"kernels": "library", "why": "the library is estimated faster", **estimate}
