"""The cpu backend's kernel library: torch's oneDNN and MKL kernels.

The TVM wheel has no CPU BYOC library, so compiled code reaches these through packed
functions registered from Python (docs/tvm-notes.md). Tensors cross as DLPack views, no copies:
- `anychip.torch.conv2d` (returns a new tensor): oneDNN convolution on channels-last data
  with bias, residual add and relu fused as post-ops. Constant weights are reordered into
  oneDNN's blocked layout once per process, keyed by the weight's content digest that the
  compiler baked into the call, so a reused address can never serve a stale weight. A
  stride-1, unpadded 1x1 convolution is a GEMM and runs as one (`_gemm_kind`): of a 1x1
  image through torch.addmm, of NHWC data with a constant weight through oneDNN's linear.
- `anychip.torch.matmul` (destination-passing): a dense layer with a constant weight runs
  oneDNN's linear on the weight packed once per process (digest-keyed, like convolutions),
  bias and activation fused; other matmuls torch.mm/addmm/matmul (MKL) writing straight into
  the buffer TVM planned; residual and activation applied in place.
- `anychip.torch.softmax` (destination-passing), `anychip.torch.layer_norm`,
  `anychip.torch.max_pool2d` and `anychip.torch.avg_pool2d` (new tensors): torch's vectorized
  kernels, which beat TVM's untuned loops and run on the same threads as the rest.

Every call carries a spec string ("v1;key=value;...") with what the kernel needs, so lib.so
stays self-contained: loading it needs only `register()`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import math
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from anychip.compiler.dispatch import Match, Pattern
from anychip.compiler.dispatch.partition import bias_axis
from anychip.compiler.dispatch.torch_device import apply_epilogue, gemm_into
from anychip.compiler.relax_info import (dtype_of, known_shape, static_shape,
                                         static_shape_of_type)

NAME = "torch-cpu"
PREFIX = "anychip.torch."
SPEC_VERSION = "v1"
# a matmul with transposed operands (t=...) says v2, so an anychip that predates `t` refuses
# the call (recompile) instead of computing the untransposed product
TRANSPOSED_SPEC_VERSION = "v2"
# v3 (which also reads t=): a gelu_tanh epilogue, or a pooling with four pads (q=bottom,right);
# an anychip that predates them refuses the call instead of skipping an activation or a pad
V3_SPEC_VERSION = "v3"
ACTIVATIONS = ("relu", "gelu", "gelu_tanh")
# convolutions also take these as oneDNN post-ops (torch's names: silu is "swish", a clip to
# [lo, hi] "hardtanh"); checked against torch eager: max abs diff <= 2e-6
CONV_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu", "sigmoid": "sigmoid",
                    "silu": "swish",
                    "hardswish": "hardswish", "clip": "hardtanh"}
LAYOUTS = (("NHWC", "NHWC"), ("NCHW", "NCHW"))
_PACKED_CACHE_ENTRIES = 4096
# Below this many FLOPs a call's fixed cost decides: oneDNN's pointwise convolution and linear
# on a packed weight cost 13-20 us a call before any arithmetic (a [1, 8, 4, 4] 3x3
# convolution: 28 us, through torch's aten convolution 7-9 us; a [4, 64] x [64, 128] linear:
# 18.5 us, torch.addmm 5.7 us), and overtake only at 5-10 MFLOP (a [169, 512] x [512, 64]
# linear: 69 vs 71-73 us). Measured on 2 Zen 4 cores, 1 and 2 threads, torch 2.13
# (docs/performance.md). Depthwise and grouped convolutions stay on oneDNN at any size (aten's
# took 48-58 us where oneDNN took 37-47).
SMALL_FLOPS = 4e6
# Depthwise convolutions up to this many FLOPs stay in TVM (`_depthwise_for_tvm`): its serial
# kernel at ~45-70 GFLOP/s against oneDNN's call, ~45 us fixed plus two threads' arithmetic,
# breaks even near 3.7 MFLOP (2 Zen 4 cores, docs/performance.md)
TVM_DEPTHWISE_MAX_FLOPS = 3e6
# GEMM-shaped work TVM computes itself (`_gemm_for_tvm`, backends/host/gemm.py): its
# register-tiled kernel runs 1x1 convolutions at 97-117 GFLOP/s on one Zen 4 core with no
# call cost, where oneDNN's call costs ~40 us plus two threads' arithmetic (and its grouped
# convolutions ran at 50-60 GFLOP/s); matmuls with a small constant weight (an MLP's layers,
# whose library calls cost 20-25 us for 1 us of arithmetic)
TVM_GEMM_MAX_FLOPS = 12e6
TVM_GROUPED_MAX_FLOPS = 30e6
TVM_MATMUL_MAX_WEIGHT = 65536   # elements: 256 KB, the weight stays in L2 across the rows
TVM_MATMUL_MAX_FLOPS = 2e6
# activations a TVM kernel computes with a scalar libm call per element unless fast_math
# (backends/host/fast_math.py) makes them polynomials; gelu_tanh's tanh always is libm
LIBM_ACTIVATIONS = ("sigmoid", "silu", "gelu", "gelu_tanh")
# whether the compile in progress has fast_math on (set by the cpu backend around partition)
_VECTOR_MATH: contextvars.ContextVar[bool] = contextvars.ContextVar("vector_math",
                                                                    default=False)


@contextlib.contextmanager
def vector_math(on: bool):
    """While partitioning: TVM's kernels will compute exp, erf and sigmoid as vectorizable
    polynomials (fast_math), so a depthwise convolution with a sigmoid or SiLU epilogue may
    stay in TVM (`_depthwise_for_tvm`)."""
    token = _VECTOR_MATH.set(on)
    try:
        yield
    finally:
        _VECTOR_MATH.reset(token)


def spec_text(**fields) -> str:
    """'v1;k=v;...' with lists joined by commas; the inverse of parse_spec."""
    def text(value) -> str:
        if isinstance(value, (list, tuple)):
            return ",".join(text(v) for v in value)
        return value.hex() if isinstance(value, float) else str(value)

    return ";".join([SPEC_VERSION] + [f"{k}={text(v)}" for k, v in fields.items()])


@functools.lru_cache(maxsize=4096)
def parse_spec(text: str) -> dict[str, str]:
    parts = text.split(";")
    if parts[0] not in (SPEC_VERSION, TRANSPOSED_SPEC_VERSION, V3_SPEC_VERSION):
        raise ValueError(f"kernel call spec {parts[0]!r}, this anychip reads {SPEC_VERSION} "
                         f"to {V3_SPEC_VERSION}: recompile the model")
    return dict(p.split("=", 1) for p in parts[1:])


def _gelu_algorithm(activation: str | None) -> str:
    """oneDNN's GELU post-op takes its algorithm: "none" (erf, relax.nn.gelu) or "tanh"
    (relax.nn.gelu_tanh); any other string (even "") is refused at the first run, and the
    other activations take ""."""
    return {"gelu": "none", "gelu_tanh": "tanh"}.get(activation or "", "")


def _ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v]


def _steps(value: str) -> tuple[str, ...]:
    return tuple(v for v in value.split(",") if v)


@functools.lru_cache(maxsize=1)
def _importer():
    """torch's C-level DLPack import of a host tensor: 0.6 us where torch.from_dlpack's
    Python wrapper (device and stream negotiation, meaningless for host memory) took 1.45,
    and a library call imports 3-5 tensors. Falls back to torch.from_dlpack on a torch
    without it."""
    import torch

    direct = getattr(torch._C, "_from_dlpack", None)
    if direct is None:
        return torch.from_dlpack
    return lambda t: direct(t.__dlpack__())


def _view(tensor):
    """A torch view (no copy) of a TVM host tensor a library call received."""
    return _importer()(tensor)


def _constant(expr) -> np.ndarray | None:
    import tvm

    if isinstance(expr, tvm.ir.expr.GenericConst):
        return expr.value.numpy()
    return None


def _symmetric(padding) -> bool:
    pad = [int(p) for p in padding]
    return len(pad) == 4 and pad[0] == pad[2] and pad[1] == pad[3]


class TorchCpuLibrary:
    """conv2d and matmul with bias / residual / relu / gelu epilogues, softmax, layer norm and
    max pooling, through torch."""

    name = NAME
    codegen = None
    transposed_operands = True   # matmul operands arrive untransposed, read as views (.mT)

    def __init__(self) -> None:
        self._packed_cache: OrderedDict = OrderedDict()
        self._registered = False

    # -- compile time -------------------------------------------------------------------
    def implements(self, pattern: Pattern) -> bool:
        if pattern.root == "attention":   # not offered on cpu (yet)
            return False
        if pattern.root == "conv2d":
            return pattern.activation is None or pattern.activation in CONV_ACTIVATIONS
        return pattern.activation is None or pattern.activation in ACTIVATIONS

    def accepts(self, pattern: Pattern, annotated: dict) -> bool:
        root = annotated["root"]
        if any(dtype_of(annotated[k]) != "float32" for k in (*pattern.operands, "root")):
            return False
        a, rank = root.attrs, len(known_shape(root))   # symbolic dims are fine
        if "bias" in annotated:   # the library's bias runs along the channel / last axis
            channel = rank - 1 if pattern.root == "matmul" else a.out_layout.index("C")
            if bias_axis(annotated["bias"], known_shape(root)) != channel:
                return False
        if pattern.root == "conv2d":
            return ((a.data_layout, a.out_layout) in LAYOUTS and a.kernel_layout == "OIHW"
                    and _symmetric(a.padding) and not _depthwise_for_tvm(pattern, annotated)
                    and not _gemm_for_tvm(pattern, annotated))
        if pattern.root == "matmul":
            return (len(known_shape(annotated["data"])) >= 2
                    and len(known_shape(annotated["weight"])) >= 2
                    and not _gemm_for_tvm(pattern, annotated))
        if pattern.root == "softmax":
            return int(a.axis) in (-1, rank - 1)
        if pattern.root == "layer_norm":
            return ([int(x) % rank for x in a.axes] == [rank - 1] and bool(a.center)
                    and bool(a.scale))
        if pattern.root == "max_pool2d":   # any pads: uneven ones are -inf padding first
            return ((a.layout, a.out_layout) in LAYOUTS and not a.ceil_mode
                    and all(int(p) < (int(k) - 1) * int(d) + 1 for p, k, d in
                            zip(a.padding, [*a.pool_size] * 2, [*a.dilation] * 2)))
        if pattern.root == "avg_pool2d":
            return ((a.layout, a.out_layout) in LAYOUTS and _symmetric(a.padding)
                    and not a.ceil_mode and [int(d) for d in a.dilation] == [1, 1]
                    and all(2 * int(p) <= int(k) for p, k in zip(a.padding, a.pool_size)))
        return False

    def emit(self, match: Match):
        import tvm
        from tvm import relax

        root, a = match.pattern.root, match.attrs
        if root in ("conv2d", "matmul"):
            tensors = [match.data, match.weight]
            tensors += [self._flat_bias(match.bias)] if match.bias is not None else []
            tensors += [match.residual] if match.residual is not None else []
        else:
            tensors = list(match.operands.values())
        if root == "conv2d":
            weight = _constant(match.weight)
            digest = "" if weight is None else hashlib.sha256(
                np.ascontiguousarray(weight).tobytes() + str(weight.shape).encode()).hexdigest()
            spec = spec_text(layout=a.data_layout, s=list(a.strides), p=list(a.padding)[:2],
                             d=list(a.dilation), g=int(a.groups), e=match.pattern.epilogue,
                             w=digest, **({"clip": list(match.bounds)} if match.bounds else {}),
                             **({"gemm": gemm} if (gemm := _gemm_kind(match, digest)) else {}),
                             **({"impl": "aten"} if not gemm and _small_conv(match) else {}))
        elif root == "matmul":   # a constant 2-D weight is packed for oneDNN once (digest)
            weight = _constant(match.weight)
            digest = "" if weight is None or weight.ndim != 2 or _small_matmul(match) else \
                hashlib.sha256(np.ascontiguousarray(weight).tobytes()
                               + str(weight.shape).encode()).hexdigest()
            spec = spec_text(e=match.pattern.epilogue, w=digest)
            if match.transposed:   # t=data,weight: read those operands as transposed views
                spec = TRANSPOSED_SPEC_VERSION + spec[len(SPEC_VERSION):] + ";t=" + ",".join(
                    match.transposed)
        elif root == "layer_norm":
            spec = spec_text(eps=float(a.epsilon))
        elif root in ("max_pool2d", "avg_pool2d"):
            pads = [int(p) for p in a.padding]
            # max pooling with uneven pads, or pads over half the window (which torch's
            # pooling refuses), pads with -inf itself first (q=bottom,right)
            explicit = root == "max_pool2d" and (pads[2:] != pads[:2] or any(
                2 * p > int(k) for p, k in zip(pads, [*a.pool_size] * 2)))
            spec = spec_text(layout=a.layout, k=list(a.pool_size), s=list(a.strides),
                             p=pads[:2], d=list(a.dilation),
                             **({"q": pads[2:]} if explicit else {}),
                             **({"c": int(a.count_include_pad)} if root == "avg_pool2d"
                                else {}))
            if "q" in spec:
                spec = V3_SPEC_VERSION + spec[spec.index(";"):]
        else:
            spec = spec_text()
        if "gelu_tanh" in match.pattern.epilogue:
            spec = V3_SPEC_VERSION + spec[spec.index(";"):]
        call = [*tensors, tvm.ir.StringImm(spec)]
        if root in ("matmul", "softmax"):   # torch has out= variants: write TVM's buffer
            return relax.call_dps_packed(PREFIX + root, call, match.out_ty)
        return relax.op.call_pure_packed(PREFIX + root, *call, ty_args=match.out_ty)

    @staticmethod
    def _flat_bias(bias):
        from tvm import relax

        value = _constant(bias)
        if value is not None:
            return relax.const(np.ascontiguousarray(value.reshape(-1)))
        return bias

    def digest(self) -> str:
        import torch

        return f"{NAME}:{SPEC_VERSION}:torch{torch.__version__}"

    # -- run time -------------------------------------------------------------------------
    def register(self, threads: int) -> None:
        """Install the packed functions in this process (idempotent); torch's intra-op
        threads are set to `threads` (the cores the artifact was compiled for)."""
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        if self._registered:
            return
        import tvm_ffi

        kernels = {"conv2d": self._conv2d, "matmul": self._matmul, "softmax": _softmax,
                   "layer_norm": _layer_norm, "max_pool2d": _max_pool2d,
                   "avg_pool2d": _avg_pool2d}
        for name, func in kernels.items():
            tvm_ffi.register_global_func(PREFIX + name, func, override=True)
        self._registered = True

    def _packed(self, key, make):
        """A weight in oneDNN's blocked layout, made once per process and kept in an LRU keyed
        by the weight's content digest (a reused address can never serve a stale weight)."""
        packed = self._packed_cache.get(key)
        if packed is None:
            packed = self._packed_cache[key] = make()
            if len(self._packed_cache) > _PACKED_CACHE_ENTRIES:
                self._packed_cache.popitem(last=False)
        else:
            self._packed_cache.move_to_end(key)
        return packed

    def _packed_weight(self, plan: "_ConvPlan", weight, input_shape):
        import torch

        return self._packed(
            (plan.weight_digest, plan.args, tuple(input_shape)),
            lambda: torch.ops.mkldnn._reorder_convolution_weight(
                weight.contiguous(), *plan.args, list(input_shape)))

    def _packed_linear_weight(self, digest: str, weight, rows: int):
        """A constant [K, N] weight for oneDNN's linear with `rows` input rows."""
        import torch

        return self._packed(("linear", digest, rows),
                            lambda: torch.ops.mkldnn._reorder_linear_weight(
                                weight.t().contiguous(), rows))

    def _matmul(self, *args):
        """Dense layers with a constant weight: oneDNN's linear on the packed weight, bias and
        relu/gelu fused (measured on 2 Zen 4 cores: ~170 GFLOP/s where torch.addmm's MKL path
        gave ~100-125 for BERT's shapes); everything else: torch.mm/addmm/matmul."""
        import torch

        plan = _matmul_plan(str(args[-2]))
        if not plan.weight_digest or not _onednn_linear():   # digest: a constant 2-D weight
            return _matmul(*args)
        a, b = _operands(torch, plan, args)
        rest = iter(_view(t) for t in args[2:-2])
        bias = next(rest) if plan.has_bias else None
        residual = next(rest) if plan.has_residual else None
        out = _view(args[-1])
        a2, o2 = a.reshape(-1, a.shape[-1]), out.view(-1, out.shape[-1])
        weight = self._packed_linear_weight(plan.weight_digest, b, a2.shape[0])
        fused = plan.activation if residual is None else None
        y = torch.ops.mkldnn._linear_pointwise(a2, weight, bias,
                                               CONV_ACTIVATIONS.get(fused or "", "none"), [],
                                               _gelu_algorithm(fused))
        o2.copy_(y)
        if residual is not None:   # the activation was not fused: it follows the add
            apply_epilogue(torch, out, residual, plan.activation, out)

    def _conv_as_linear(self, torch, plan: "_ConvPlan", x, weight, bias, residual):
        """A stride-1, unpadded 1x1 convolution of NHWC data (any N, H, W) with a constant
        weight: oneDNN's linear on the [N*H*W, C] matrix the activations already are, the
        weight [O, C] packed once per process (digest-keyed), bias and activation fused, a
        residual added as a binary post-op (`_gemm_kind` keeps a residual followed by an
        activation on the convolution, which fuses both)."""
        rows = x.numel() // x.shape[-1]
        x2 = x.reshape(rows, x.shape[-1])
        packed = self._packed_linear_weight(
            plan.weight_digest, weight.reshape(weight.shape[0], -1).t(), rows)
        if residual is not None:
            y = torch.ops.mkldnn._linear_pointwise.binary(
                x2, residual.reshape(rows, -1), packed, bias, "add")
            if plan.activation is not None:   # not emitted by _gemm_kind; kept correct
                _activate_(torch, y, plan.activation, plan.bounds)
        else:
            y = torch.ops.mkldnn._linear_pointwise(
                x2, packed, bias, CONV_ACTIVATIONS.get(plan.activation, "none"),
                list(plan.bounds), _gelu_algorithm(plan.activation))
        return y.reshape(*x.shape[:-1], y.shape[-1])

    def _conv2d(self, *args):
        """Runs once per convolution per inference: everything derivable from the spec is
        parsed once (`_conv_plan`), so the per-call Python work is a few DLPack views."""
        import torch

        plan = _conv_plan(str(args[-1]))
        x, weight, *rest = (_view(t) for t in args[:-1])
        bias = rest[0] if plan.has_bias else None
        residual = rest[-1] if plan.has_residual else None
        if plan.gemm in ("1", "mm"):
            return _conv_as_gemm(torch, plan, x, weight, bias, residual)
        if plan.gemm == "linear" and _onednn_linear():
            return self._conv_as_linear(torch, plan, x, weight, bias, residual)
        if plan.nhwc:  # NCHW-shaped views with channels-last strides: oneDNN's native format
            x = x.permute(0, 3, 1, 2)
            residual = residual.permute(0, 3, 1, 2) if residual is not None else None
        if plan.impl == "aten":
            if plan.weight_digest:   # kept channels-last once per process, like a packed one
                weight = self._packed(("channels_last", plan.weight_digest), lambda: weight.
                                      contiguous(memory_format=torch.channels_last))
            y = _conv_aten(torch, plan, x, weight, bias, residual)
            return _compact(y.permute(0, 2, 3, 1) if plan.nhwc else y)
        if plan.weight_digest:
            weight = self._packed_weight(plan, weight, x.shape)
        # after a binary post-op torch fuses relu only ("Unary Fusion behavior undefined"):
        # the others run after, in place
        algorithm = _gelu_algorithm(plan.activation)
        if residual is not None:
            fused = plan.activation if plan.activation == "relu" else None
            y = torch.ops.mkldnn._convolution_pointwise.binary(
                x, residual, weight, bias, *plan.args, "add", None, fused, [], "")
            if plan.activation not in (None, "relu"):
                _activate_(torch, y, plan.activation, plan.bounds)
        else:
            y = torch.ops.mkldnn._convolution_pointwise(
                x, weight, bias, *plan.args, CONV_ACTIVATIONS.get(plan.activation, "none"),
                list(plan.bounds), algorithm)
        return _compact(y.permute(0, 2, 3, 1) if plan.nhwc else y)


class _ConvPlan(NamedTuple):
    nhwc: bool
    args: tuple          # (padding, stride, dilation, groups) as oneDNN takes them
    activation: str | None
    has_bias: bool
    has_residual: bool
    weight_digest: str   # "" when the weight is not a compile-time constant
    bounds: tuple[float, ...] = ()   # a clip activation's (lo, hi)
    # "1": a 1x1 convolution of a 1x1 image (squeeze-excite), torch.addmm; "mm": a small
    # stride-1 unpadded 1x1 convolution of NHWC data, torch.addmm; "linear": a larger one with
    # a constant weight, oneDNN's linear; "": a convolution
    gemm: str = ""
    # "aten": a small dense convolution through torch's aten convolution (SMALL_FLOPS); an
    # anychip that predates it runs the same convolution on oneDNN
    impl: str = ""


@functools.lru_cache(maxsize=4096)
def _conv_plan(text: str) -> _ConvPlan:
    spec = parse_spec(text)
    epilogue = _steps(spec["e"])
    act = epilogue[-1] if epilogue and epilogue[-1] in CONV_ACTIVATIONS else None
    bounds = tuple(float.fromhex(v) for v in _steps(spec.get("clip", "")))
    return _ConvPlan(nhwc=spec["layout"] == "NHWC",
                     args=(tuple(_ints(spec["p"])), tuple(_ints(spec["s"])),
                           tuple(_ints(spec["d"])), int(spec["g"])),
                     activation=act, has_bias="bias" in epilogue,
                     has_residual="residual" in epilogue, weight_digest=spec["w"],
                     bounds=bounds, gemm=spec.get("gemm", ""), impl=spec.get("impl", ""))


def _gemm_kind(match: Match, digest: str) -> str:
    """How a convolution runs as a GEMM (the spec's `gemm` field), "" when it does not.

    A 1x1 convolution with stride 1, no padding and one group is a GEMM of the activations
    [N*H*W, C] by the weight [O, C]^T:
    - of a 1x1 image, as squeeze-excite blocks run on the pooled vector, "1": torch.addmm
      (oneDNN's convolution took 130-170 us a call for these shapes where torch.addmm took
      15-45, 2 Zen cores, load 5, SE shapes of efficientnet-b0 and mobilenet-v3);
    - of a larger NHWC image under SMALL_FLOPS, "mm": torch.addmm on the [N*H*W, C] matrix,
      epilogue in place (shufflenet's and mobilenet's small 1x1 convolutions: [196, 240] x
      [240, 40] 30 us through addmm, 95 us as an aten convolution, 38 us in ONNX Runtime);
    - of a larger NHWC image with a constant weight, "linear": oneDNN's linear on the packed
      weight with the activation fused, 10-30% faster than oneDNN's 1x1 convolution on the
      expand/project shapes of efficientnet, mobilenet_v3 and resnet50 (docs/performance.md).
      A residual followed by an activation stays on the convolution, which fuses both (the
      linear fuses the add only; resnet's shapes were 0-8% slower that way).
    An anychip that predates "linear" or "mm" reads them as a plain convolution (same result);
    NCHW data of a larger image is not the GEMM's matrix without a copy and stays a
    convolution."""
    a = match.attrs
    data, weight = known_shape(match.data), known_shape(match.weight)
    nhwc = a.data_layout == "NHWC"
    spatial = data[1:3] if nhwc else data[2:4]
    if not (tuple(weight[2:]) == (1, 1) and int(a.groups) == 1
            and [int(v) for v in a.strides] == [1, 1] and not any(int(v) for v in a.padding)):
        return ""
    if tuple(spatial) == (1, 1):
        return "1"
    if nhwc and _small_conv(match):
        return "mm"
    fused_after_add = match.residual is not None and match.pattern.activation is not None
    return "linear" if nhwc and digest and not fused_after_add else ""


def _static_flops(match: Match) -> float | None:
    """Multiply-adds x 2 of a conv2d or matmul match whose shapes are static, else None."""
    out = static_shape_of_type(match.out_ty)
    data, weight = static_shape(match.data), static_shape(match.weight)
    if out is None or data is None or weight is None:
        return None
    if match.pattern.root == "conv2d":   # per output: Cin/groups * kh * kw
        return 2.0 * math.prod(out) * math.prod(weight[1:])
    inner = data[-2] if "data" in match.transposed else data[-1]
    return 2.0 * math.prod(out) * inner


def _depthwise_for_tvm(pattern: Pattern, annotated: dict) -> bool:
    """A small depthwise convolution of NHWC data that TVM computes itself
    (backends/host/depthwise.py): its serial kernel takes 9-17 us on mobile networks' 14x14
    maps where the library call costs 45-60 us before any arithmetic. Kept on the library:
    above TVM_DEPTHWISE_MAX_FLOPS (oneDNN's two threads win), channels not a multiple of 8
    (TVM's vectors would be too narrow), symbolic shapes, and activations that TVM would
    compute with scalar libm calls but oneDNN fuses (GELU's tanh form; sigmoid, SiLU and
    erf GELU too when fast_math is off, see `vector_math`)."""
    root = annotated["root"]
    a = root.attrs
    data, weight, out = (static_shape(annotated["data"]), static_shape(annotated["weight"]),
                         static_shape(root))
    if a.data_layout != "NHWC" or data is None or weight is None or out is None:
        return False
    channels, groups = data[3], int(a.groups)
    if groups == 1 or groups != channels or weight[:2] != (channels, 1) or channels % 8:
        return False
    libm = ("gelu_tanh",) if _VECTOR_MATH.get() else LIBM_ACTIVATIONS
    if pattern.activation in libm:
        return False
    return 2.0 * math.prod(out) * weight[2] * weight[3] <= TVM_DEPTHWISE_MAX_FLOPS


def _gemm_for_tvm(pattern: Pattern, annotated: dict) -> bool:
    """GEMM-shaped work that TVM computes itself with its register-tiled kernel
    (backends/host/gemm.py): static shapes, a constant weight, output channels (per group) a
    multiple of 8 (the kernel's vectors), an epilogue TVM vectorizes (as `_depthwise_for_tvm`)
    and
    - a 1x1 unpadded convolution of NHWC data whose output channels (per group) are a
      multiple of 8, the kernel's vectors (the cpu backend lays its weight out HWIO), up
      to TVM_GEMM_MAX_FLOPS, grouped ones (not depthwise) up to TVM_GROUPED_MAX_FLOPS;
    - a matmul by a constant [K, N] weight of at most TVM_MATMUL_MAX_WEIGHT elements, up to
      TVM_MATMUL_MAX_FLOPS (larger weights stream from memory: two threads read faster), any
      N (narrow vectors on a few microseconds of work still beat a 20 us call)."""
    root = annotated["root"]
    data, out = static_shape(annotated["data"]), static_shape(root)
    weight = _constant(annotated["weight"])
    if data is None or out is None or weight is None or not out:
        return False
    libm = ("gelu_tanh",) if _VECTOR_MATH.get() else LIBM_ACTIVATIONS
    if pattern.activation in libm:
        return False
    flops = 2.0 * math.prod(out) * math.prod(weight.shape[:-1] if pattern.root == "matmul"
                                             else weight.shape[1:])
    if pattern.root == "matmul":
        return (weight.ndim == 2 and weight.shape[0] == data[-1] and weight.shape[1] == out[-1]
                and weight.size <= TVM_MATMUL_MAX_WEIGHT and flops <= TVM_MATMUL_MAX_FLOPS)
    a = root.attrs
    groups = int(a.groups)
    if (a.data_layout != "NHWC" or weight.shape[2:] != (1, 1) or any(int(p) for p in a.padding)
            or weight.shape[0] % groups or (groups > 1 and weight.shape[1] == 1)):
        return False
    if (weight.shape[0] // groups) % 8:
        return False
    return flops <= (TVM_GEMM_MAX_FLOPS if groups == 1 else TVM_GROUPED_MAX_FLOPS)


def _small_conv(match: Match) -> bool:
    """A dense (one group) convolution whose static FLOPs are under SMALL_FLOPS: torch's aten
    convolution, whose fixed cost is a third of oneDNN's pointwise call."""
    flops = _static_flops(match)
    return int(match.attrs.groups) == 1 and flops is not None and flops < SMALL_FLOPS


def _small_matmul(match: Match) -> bool:
    """A matmul under SMALL_FLOPS: torch.addmm/mm instead of oneDNN's linear on a packed
    weight."""
    flops = _static_flops(match)
    return flops is not None and flops < SMALL_FLOPS


def _conv_aten(torch, plan: "_ConvPlan", x, weight, bias, residual):
    """torch's aten convolution (NCHW-shaped views of NHWC data give channels-last results),
    then the residual add and the activation in place."""
    padding, stride, dilation, groups = plan.args
    y = torch.nn.functional.conv2d(x, weight, bias, stride, padding, dilation, groups)
    apply_epilogue(torch, y, residual, plan.activation, y, plan.bounds)
    return y


def _conv_as_gemm(torch, plan: _ConvPlan, x, weight, bias, residual):
    """out[R, O] = x[R, I] @ weight[O, I]^T + bias, then residual and activation in place,
    where R is N*H*W of NHWC data, or N of a 1x1 image (the same bytes in NHWC and NCHW)."""
    rows = x.numel() // weight.shape[1]
    x2, w2 = x.reshape(rows, weight.shape[1]), weight.reshape(weight.shape[0], -1)
    y = torch.addmm(bias, x2, w2.t()) if bias is not None else torch.mm(x2, w2.t())
    if residual is not None:
        y.add_(residual.reshape(y.shape))
    if plan.activation is not None:
        _activate_(torch, y, plan.activation, plan.bounds)
    if plan.nhwc:
        return y.reshape(*x.shape[:-1], y.shape[1])
    return y.reshape(y.shape[0], y.shape[1], 1, 1)


def _activate_(torch, y, activation: str, bounds: tuple[float, ...]) -> None:
    """y = activation(y), in place (after a residual add, which oneDNN fuses with relu only)."""
    apply_epilogue(torch, y, None, activation, y, bounds)


def _compact(tensor):
    return tensor if tensor.is_contiguous() else tensor.contiguous()


class _MatmulPlan(NamedTuple):
    activation: str | None
    has_bias: bool
    has_residual: bool
    weight_digest: str   # "" when the weight is not a constant 2-D matrix (or an old artifact)
    transposed: tuple[str, ...] = ()   # operands (data, weight) to read as transposed views


@functools.lru_cache(maxsize=4096)
def _matmul_plan(text: str) -> _MatmulPlan:
    spec = parse_spec(text)
    epilogue = _steps(spec["e"])
    act = epilogue[-1] if epilogue and epilogue[-1] in ACTIVATIONS else None
    return _MatmulPlan(activation=act, has_bias="bias" in epilogue,
                       has_residual="residual" in epilogue, weight_digest=spec.get("w", ""),
                       transposed=_steps(spec.get("t", "")))


# A transposed operand smaller than this is copied, not read as a view: the copy costs about a
# microsecond and gives the numbers of the transpose kernel it replaces bit for bit, whereas
# MKL's kernel for a transposed operand rounds differently (1 ulp), which flipped a ReLU in
# the resnet SGD parity test (tests/compiler/training/test_parity.py) and moved a weight by
# 4e-4; a large operand is a view (a [256, 1024] transpose kernel took 2.8 ms)
_COPY_BELOW = 16384


def _operands(torch, plan: _MatmulPlan, args):
    """The matmul's two operands as torch tensors, transposed (.mT) where the compiler absorbed
    a permute_dims of their last two axes: a view (torch's GEMMs take such strides natively),
    or a contiguous copy for a small operand."""
    a, b = _view(args[0]), _view(args[1])
    if plan.transposed:
        a = _transposed(a) if "data" in plan.transposed else a
        b = _transposed(b) if "weight" in plan.transposed else b
    return a, b


def _transposed(t):
    t = t.mT
    return t.contiguous() if t.numel() < _COPY_BELOW else t


@functools.lru_cache(maxsize=1)
def _onednn_linear() -> bool:
    """Asked at the first call, not at import: torch must not be imported before anychip has
    chosen the OpenMP wait policy."""
    try:
        import torch

        return hasattr(torch.ops.mkldnn, "_linear_pointwise") and \
            hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and \
            torch.backends.mkldnn.is_available()
    except (ImportError, RuntimeError, AttributeError):
        return False


def _matmul(*args):
    import torch

    plan = _matmul_plan(str(args[-2]))
    out = _view(args[-1])
    a, b = _operands(torch, plan, args)
    rest = iter(_view(t) for t in args[2:-2])
    bias = next(rest) if plan.has_bias else None
    residual = next(rest) if plan.has_residual else None
    gemm_into(torch, a, b, bias, out)
    apply_epilogue(torch, out, residual, plan.activation, out)


def _softmax(x, spec, out):
    import torch

    torch.ops.aten._softmax.out(_view(x), -1, False, out=_view(out))


def _layer_norm(x, gamma, beta, spec):
    import torch

    eps = float.fromhex(parse_spec(str(spec))["eps"])
    x, gamma = _view(x), _view(gamma)
    return torch.nn.functional.layer_norm(x, gamma.shape, gamma, _view(beta), eps)


def _max_pool2d(x, spec):
    """Max pooling (NaN in a window gives NaN, as ONNX Runtime's ReduceMax); with q (uneven
    pads: ONNX's SAME_UPPER, Caffe2 exports; or pads over half the window) the input is
    padded with -inf first, then pooled without pads."""
    import torch

    spec = parse_spec(str(spec))
    x = _view(x)
    nhwc = spec["layout"] == "NHWC"
    x = x.permute(0, 3, 1, 2) if nhwc else x
    pads = _ints(spec["p"])
    if "q" in spec:
        (top, left), (bottom, right) = pads, _ints(spec["q"])
        x = torch.nn.functional.pad(x, (left, right, top, bottom), value=float("-inf"))
        pads = [0, 0]
    y = torch.nn.functional.max_pool2d(x, _ints(spec["k"]), _ints(spec["s"]), pads,
                                       _ints(spec["d"]))
    return _compact(y.permute(0, 2, 3, 1) if nhwc else y)


def _avg_pool2d(x, spec):
    """Average pooling, even pads, with or without the pads in the count."""
    import torch

    spec = parse_spec(str(spec))
    x = _view(x)
    nhwc = spec["layout"] == "NHWC"
    y = torch.nn.functional.avg_pool2d(x.permute(0, 3, 1, 2) if nhwc else x, _ints(spec["k"]),
                                       _ints(spec["s"]), _ints(spec["p"]),
                                       count_include_pad=spec.get("c", "1") == "1")
    return _compact(y.permute(0, 2, 3, 1) if nhwc else y)
