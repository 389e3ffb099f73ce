"""The cpu backend's kernel library: torch's oneDNN (convolution) and MKL (matmul) kernels.

The TVM wheel has no CPU BYOC library, so compiled code reaches these through packed
functions registered from Python (tvm-notes.md). Tensors cross as DLPack views, no copies:
- `anychip.torch.conv2d` (returns a new tensor): oneDNN convolution on channels-last data
  with the bias, residual add and relu fused as post-ops. Constant weights are reordered
  into oneDNN's blocked layout once per process, keyed by the weight's content digest that
  the compiler baked into the call, so a reused address can never serve a stale weight.
- `anychip.torch.matmul` (destination-passing): torch.mm/addmm/matmul writing straight into
  the output buffer TVM planned; residual and activation applied in place.

Every call carries a spec string with what the kernel needs (layout, strides, padding,
epilogue, weight digest), so lib.so stays self-contained: loading it needs only `register()`.
"""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from anychip.compiler.dispatch import Match, Pattern

NAME = "torch-cpu"
CONV = "anychip.torch.conv2d"
MATMUL = "anychip.torch.matmul"
SPEC_VERSION = "1"
ACTIVATIONS = ("relu", "gelu")
_PACKED_CACHE_ENTRIES = 4096


@dataclass(frozen=True)
class ConvSpec:
    layout: str                 # "NHWC" or "NCHW" (data and output)
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    epilogue: tuple[str, ...]
    weight_digest: str          # "" when the weight is not a compile-time constant


def _conv_spec_text(spec: ConvSpec) -> str:
    return ";".join([f"v{SPEC_VERSION}", spec.layout, "s=%d,%d" % spec.stride,
                     "p=%d,%d" % spec.padding, "d=%d,%d" % spec.dilation, f"g={spec.groups}",
                     "e=" + ",".join(spec.epilogue), f"w={spec.weight_digest}"])


@functools.lru_cache(maxsize=4096)
def parse_conv_spec(text: str) -> ConvSpec:
    parts = text.split(";")
    if parts[0] != f"v{SPEC_VERSION}":
        raise ValueError(f"conv2d call spec version {parts[0]!r}, this anychip reads "
                         f"v{SPEC_VERSION}: recompile the model")
    fields = dict(p.split("=", 1) for p in parts[2:])

    def pair(key):
        a, b = (int(v) for v in fields[key].split(","))
        return a, b

    epilogue = tuple(e for e in fields["e"].split(",") if e)
    return ConvSpec(parts[1], pair("s"), pair("p"), pair("d"), int(fields["g"]), epilogue,
                    fields["w"])


@functools.lru_cache(maxsize=4096)
def parse_matmul_spec(text: str) -> tuple[str, ...]:
    parts = text.split(";")
    if parts[0] != f"v{SPEC_VERSION}":
        raise ValueError(f"matmul call spec version {parts[0]!r}, this anychip reads "
                         f"v{SPEC_VERSION}: recompile the model")
    return tuple(e for e in parts[1].removeprefix("e=").split(",") if e)


def _shape(expr):
    shape = getattr(getattr(expr, "ty", None), "shape", None)
    return None if shape is None else tuple(int(d) for d in shape)


def _constant(expr) -> np.ndarray | None:
    import tvm

    if isinstance(expr, tvm.ir.expr.GenericConst):
        return expr.value.numpy()
    return None


class TorchCpuLibrary:
    """conv2d and matmul (with bias / residual / relu / gelu epilogues) through torch."""

    name = NAME
    codegen = None

    def __init__(self) -> None:
        self._packed: OrderedDict = OrderedDict()
        self._registered = False

    # -- compile time -------------------------------------------------------------------
    def implements(self, pattern: Pattern) -> bool:
        return pattern.root in ("conv2d", "matmul") and (
            pattern.activation is None or pattern.activation in ACTIVATIONS)

    def accepts(self, pattern: Pattern, annotated: dict) -> bool:
        root = annotated["root"]
        if str(root.ty.dtype) != "float32" or any(
                str(annotated[k].ty.dtype) != "float32" for k in ("data", "weight")):
            return False
        if pattern.root == "conv2d":
            a = root.attrs
            layout_ok = (a.data_layout, a.out_layout) in (("NHWC", "NHWC"), ("NCHW", "NCHW"))
            pad = [int(p) for p in a.padding]
            return (layout_ok and a.kernel_layout == "OIHW" and len(pad) == 4
                    and pad[0] == pad[2] and pad[1] == pad[3])
        a_shape, b_shape = _shape(annotated["data"]), _shape(annotated["weight"])
        return len(a_shape) >= 2 and len(b_shape) >= 2   # no 1-D (vector) operands

    def emit(self, match: Match):
        import tvm
        from tvm import relax

        epilogue = tuple(s for s in match.pattern.epilogue)
        tensors = [match.data, match.weight]
        if match.bias is not None:
            tensors.append(self._flat_bias(match.bias))
        if match.residual is not None:
            tensors.append(match.residual)
        if match.pattern.root == "conv2d":
            a = match.attrs
            weight = _constant(match.weight)
            digest = "" if weight is None else hashlib.sha256(
                np.ascontiguousarray(weight).tobytes() + str(weight.shape).encode()).hexdigest()
            spec = ConvSpec(a.data_layout, tuple(int(s) for s in a.strides),
                            (int(a.padding[0]), int(a.padding[1])),
                            tuple(int(d) for d in a.dilation), int(a.groups), epilogue, digest)
            return relax.op.call_pure_packed(CONV, *tensors,
                                             tvm.ir.StringImm(_conv_spec_text(spec)),
                                             ty_args=match.out_ty)
        spec = f"v{SPEC_VERSION};e=" + ",".join(epilogue)
        return relax.call_dps_packed(MATMUL, [*tensors, tvm.ir.StringImm(spec)], match.out_ty)

    @staticmethod
    def _flat_bias(bias):
        from tvm import relax

        value = _constant(bias)
        if value is not None:
            return relax.const(np.ascontiguousarray(value.reshape(-1)))
        return bias

    def digest(self) -> str:
        import torch

        return f"{NAME}:spec{SPEC_VERSION}:torch{torch.__version__}"

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

        tvm_ffi.register_global_func(CONV, self._conv2d, override=True)
        tvm_ffi.register_global_func(MATMUL, self._matmul, override=True)
        self._registered = True

    def _packed_weight(self, spec: ConvSpec, weight, input_shape):
        import torch

        key = (spec.weight_digest, spec.stride, spec.padding, spec.dilation, spec.groups,
               tuple(input_shape))
        packed = self._packed.get(key)
        if packed is None:
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                weight.contiguous(), list(spec.padding), list(spec.stride),
                list(spec.dilation), spec.groups, list(input_shape))
            self._packed[key] = packed
            if len(self._packed) > _PACKED_CACHE_ENTRIES:
                self._packed.popitem(last=False)
        else:
            self._packed.move_to_end(key)
        return packed

    def _conv2d(self, *args):
        import torch

        spec = parse_conv_spec(str(args[-1]))
        tensors = [torch.from_dlpack(t) for t in args[:-1]]
        x, weight = tensors[0], tensors[1]
        rest = iter(tensors[2:])
        bias = next(rest) if "bias" in spec.epilogue else None
        residual = next(rest) if "residual" in spec.epilogue else None
        nhwc = spec.layout == "NHWC"
        if nhwc:  # NCHW-shaped views with channels-last strides: oneDNN's native format
            x = x.permute(0, 3, 1, 2)
            residual = residual.permute(0, 3, 1, 2) if residual is not None else None
        if spec.weight_digest:
            weight = self._packed_weight(spec, weight, x.shape)
        act = spec.epilogue[-1] if spec.epilogue and spec.epilogue[-1] in ACTIVATIONS else None
        args_common = (list(spec.padding), list(spec.stride), list(spec.dilation), spec.groups)
        if residual is not None:
            y = torch.ops.mkldnn._convolution_pointwise.binary(
                x, residual, weight, bias, *args_common, "add", None, act, [], "")
        else:
            y = torch.ops.mkldnn._convolution_pointwise(
                x, weight, bias, *args_common, act or "none", [], "")
        y = y.permute(0, 2, 3, 1) if nhwc else y
        return y if y.is_contiguous() else y.contiguous()

    @staticmethod
    def _matmul(*args):
        import torch

        epilogue = parse_matmul_spec(str(args[-2]))
        out = torch.from_dlpack(args[-1])
        a, b, *rest = (torch.from_dlpack(t) for t in args[:-2])
        it = iter(rest)
        bias = next(it) if "bias" in epilogue else None
        residual = next(it) if "residual" in epilogue else None
        if b.dim() == 2 and a.dim() >= 2 and out.is_contiguous() and a.is_contiguous():
            a2, o2 = a.reshape(-1, a.shape[-1]), out.view(-1, out.shape[-1])
            if bias is not None:
                torch.addmm(bias, a2, b, out=o2)
            else:
                torch.mm(a2, b, out=o2)
        else:
            torch.matmul(a, b, out=out)
            if bias is not None:
                out.add_(bias)
        if residual is not None:
            out.add_(residual)
        if epilogue and epilogue[-1] == "relu":
            out.relu_()
        elif epilogue and epilogue[-1] == "gelu":
            torch.ops.aten.gelu_(out)
        return None
