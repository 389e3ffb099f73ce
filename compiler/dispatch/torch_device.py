"""Vendor libraries through a torch device plug-in: one Library for every accelerator whose
vendor ships torch support.

A torch device plug-in is a module that, once imported, gives torch a device type whose
kernels are the vendor's tuned libraries: torch itself for 'cuda' (cuBLAS, cuDNN), `torch_npu`
for 'npu', `torch_musa` for 'musa' and the like. `TorchDeviceLibrary(module, device)` sends
conv2d and matmul (dense and batched, with their bias / residual / relu / gelu / sigmoid / SiLU /
HardSwish epilogues) and attention (softmax(Q K^T / c) V, to SDPA) to that device's torch
kernels through packed functions, the way the cpu backend reaches oneDNN
(backends/cpu/torch_library.py). A family declares the plug-in it may use
('module:device', e.g. the cuda family's Options `torch_plugin="torch:cuda"`); the library's
registered name is 'torch-plugin:module:device', which the manifest's runtime `libraries`
lists, so a runner can make it available before it loads lib.so without knowing the family.

Run time: `register()` imports the plug-in and checks that its device is present; where it is
not (torch without CUDA, no torch_npu installed) the run stops with one line and exit 3
(NotExecutable), before lib.so is loaded. Compile time needs neither the plug-in nor the
device: the calls are recorded in lib.so whatever the build machine has.

Every call is destination-passing (R.call_dps_packed): the packed function views TVM's
tensors with torch.from_dlpack (no copies) and writes the result into the output buffer TVM
planned, with `out=` where torch has it (mm, addmm, matmul, add, clamp_min, gelu) and one
copy_ otherwise (a convolution without epilogue).

Streams: TVM's CUDA runtime launches its kernels on the stream TVMFFIEnvGetStream gives for
the device, which is null, the legacy default stream, unless a caller sets one (anychip's
runners never do), and torch's default current stream is the same legacy default stream
(torch.cuda.default_stream().cuda_stream == 0), so a library call queued by torch runs after
the TVM kernel that produced its inputs and before the one that consumes its output, with no
synchronization; DLPack's `stream` argument is ignored by TVM's tensors, so from_dlpack adds
no synchronization either. Where a caller did set TVM's stream (tvm_ffi.use_raw_stream), the
'cuda' calls follow it: torch runs them on that stream (torch.cuda.ExternalStream), so the
order holds there too. CUDA-graph capture (the cuda family's `cuda_graph` option) is not
combined with library calls: torch's caching allocator would hand the temporaries a captured
graph keeps writing to back to other tensors. Both use the
device's primary context, so the pointers DLPack hands over are valid on either side. A caller
that makes another torch stream current around a run (`with torch.cuda.stream(s):`) would
break this ordering; anychip's runners never do. A vendor plug-in must likewise queue on the
stream its TVM runtime launches on (the legacy default stream for CUDA-like runtimes).

Precision: fp32 calls run in full fp32 (cuDNN's TF32 default is turned off for the call and
restored after), tf32 calls may use TF32 tensor cores; fp16/bf16 operands with a float32
result (what --precision fp16|bf16 leaves in the graph) are multiplied in the operands' dtype
on tensor cores and widened into the float32 output.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import re
from collections import Counter
from typing import NamedTuple

from ..errors import AnychipError, NotExecutable
from ..relax_info import dtype_of, known_shape
from .partition import Match, bias_axis
from .patterns import Pattern

_NO_CONTEXT = contextlib.nullcontext()
PREFIX = "torch-plugin:"
SPEC_VERSION = "d1"
# what apply_epilogue computes with out= (the shared table also has clip, whose bounds this
# library's plan does not read: not offered)
ACTIVATIONS = ("relu", "gelu", "sigmoid", "silu", "hardswish")
FLOATS = ("float32", "float16", "bfloat16")
_PLUGIN = re.compile(r"^([A-Za-z_][\w.]*):([A-Za-z_]\w*)$")


def parse_plugin(text: str) -> tuple[str, str]:
    """'module:device' -> (module, device); anything else is bad input (exit 2)."""
    found = _PLUGIN.match(str(text).strip())
    if not found:
        raise AnychipError(f"torch plug-in '{text}': give module:device, e.g. torch:cuda, "
                           f"torch_npu:npu or torch_musa:musa.")
    return found.group(1), found.group(2)


def library_name(plugin: str) -> str:
    module, device = parse_plugin(plugin)
    return f"{PREFIX}{module}:{device}"


def library_for(name: str) -> "TorchDeviceLibrary":
    """The library a registered name such as 'torch-plugin:torch:cuda' stands for."""
    return TorchDeviceLibrary(*parse_plugin(name[len(PREFIX):]))


def plugin_status(module: str, device: str) -> tuple[bool, str]:
    """(usable, why): the plug-in imports and torch sees its device here."""
    try:
        importlib.import_module(module)
        import torch
    except ImportError as exc:
        return False, f"the torch plug-in '{module}' does not import ({exc})"
    backend = getattr(torch, device, None)
    available = getattr(backend, "is_available", None)
    try:
        present = bool(available()) if callable(available) else False
    except Exception as exc:  # noqa: BLE001 - a plug-in's probe may raise anything
        return False, f"torch.{device}.is_available() failed: {str(exc)[:160]}"
    if not present:
        return False, (f"torch has no '{device}' device here (torch {torch.__version__}"
                       f"{', a CPU-only build' if '+cpu' in torch.__version__ else ''})")
    return True, f"torch {torch.__version__} with device '{device}' through '{module}'"


def _spec(**fields) -> str:
    def text(value) -> str:
        return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)

    return ";".join([SPEC_VERSION] + [f"{k}={text(v)}" for k, v in fields.items()])


class _Plan(NamedTuple):
    conv: tuple | None      # (stride, padding, dilation, groups) for a convolution
    nhwc: bool
    activation: str | None
    has_bias: bool
    has_residual: bool
    tf32: bool


@functools.lru_cache(maxsize=4096)
def _plan(text: str) -> _Plan:
    parts = text.split(";")
    if parts[0] != SPEC_VERSION:
        raise ValueError(f"library call spec {parts[0]!r}, this anychip reads {SPEC_VERSION}: "
                         f"recompile the model")
    spec = dict(p.split("=", 1) for p in parts[1:])
    steps = tuple(s for s in spec.get("e", "").split(",") if s)

    def ints(key):
        return tuple(int(v) for v in spec[key].split(",") if v)

    conv = (ints("s"), ints("p"), ints("d"), int(spec["g"])) if "g" in spec else None
    act = steps[-1] if steps and steps[-1] in ACTIVATIONS else None
    return _Plan(conv, spec.get("layout") == "NHWC", act, "bias" in steps,
                 "residual" in steps, spec.get("tf32") == "1")


class TorchDeviceLibrary:
    """conv2d and matmul with bias / residual / activation epilogues on the device of a torch
    plug-in. `calls` counts the calls this process made, per root (the tests read it)."""

    codegen = None

    def __init__(self, module: str, device: str, precision: str = "fp32") -> None:
        self.module, self.device = module, device
        self.name = f"{PREFIX}{module}:{device}"
        self.tf32 = precision == "tf32"
        self.calls: Counter = Counter()
        self._registered = False
        self._ffi_devices: dict = {}

    @property
    def _prefix(self) -> str:
        return f"anychip.torchdev.{self.module}.{self.device}."

    def with_precision(self, precision: str) -> "TorchDeviceLibrary":
        """This library emitting calls for `precision` (tf32 lets the call use TF32)."""
        return TorchDeviceLibrary(self.module, self.device, precision)

    # -- compile time ---------------------------------------------------------------------
    def implements(self, pattern: Pattern) -> bool:
        if pattern.root == "attention":
            return True
        return pattern.root in ("conv2d", "matmul") and (
            pattern.activation is None or pattern.activation in ACTIVATIONS)

    @staticmethod
    def _accepts_attention(annotated: dict) -> bool:
        """[B, H, S, D] float tensors of one dtype, a scalar scale, softmax over the keys."""
        import tvm

        q, kt, v, root = (annotated[k] for k in ("query", "key_t", "value", "root"))
        dtypes = {dtype_of(x) for x in (q, kt, v, root)}
        scale = annotated["scale"]
        if len(dtypes) != 1 or dtypes.pop() not in FLOATS:
            return False
        if not isinstance(scale, tvm.ir.expr.GenericConst) or scale.value.numpy().size != 1:
            return False
        shapes = [known_shape(x) for x in (q, kt, v)]
        return all(len(s) == 4 for s in shapes)

    def accepts(self, pattern: Pattern, annotated: dict) -> bool:
        if pattern.root == "attention":
            return self._accepts_attention(annotated)
        root = annotated["root"]
        data, weight = (dtype_of(annotated[k]) for k in pattern.operands)
        out = dtype_of(root)
        if data != weight or data not in FLOATS or out not in FLOATS:
            return False
        if out != data and out != "float32":   # a widening result only (fp16 -> fp32)
            return False
        a, rank = root.attrs, len(known_shape(root))
        if "bias" in annotated:
            channel = rank - 1 if pattern.root == "matmul" else a.out_layout.index("C")
            if bias_axis(annotated["bias"], known_shape(root)) != channel:
                return False
        if pattern.root == "conv2d":
            pad = [int(p) for p in a.padding]
            return ((a.data_layout, a.out_layout) in (("NCHW", "NCHW"), ("NHWC", "NHWC"))
                    and a.kernel_layout == "OIHW" and len(pad) == 4
                    and pad[0] == pad[2] and pad[1] == pad[3])
        return (len(known_shape(annotated["data"])) >= 2
                and len(known_shape(annotated["weight"])) >= 2)

    def emit(self, match: Match):
        import numpy as np
        import tvm
        from tvm import relax

        a = match.attrs
        if match.pattern.root == "attention":
            scale = float(match.scale.value.numpy().reshape(-1)[0])
            factor = 1.0 / scale if match.scale_op == "divide" else scale
            spec = _spec(scale=factor.hex(), tf32=int(self.tf32))
            operands = [match.operands[k] for k in ("query", "key_t", "value")]
            return relax.call_dps_packed(self._prefix + "attention",
                                         [*operands, tvm.ir.StringImm(spec)], match.out_ty)
        tensors = [match.data, match.weight]
        if match.bias is not None:
            bias = match.bias
            if isinstance(bias, tvm.ir.expr.GenericConst):   # a constant: flat [C]
                bias = relax.const(np.ascontiguousarray(bias.value.numpy().reshape(-1)))
            tensors.append(bias)
        if match.residual is not None:
            tensors.append(match.residual)
        common = {"e": match.pattern.epilogue, "tf32": int(self.tf32)}
        if match.pattern.root == "conv2d":
            spec = _spec(layout=a.data_layout, s=list(a.strides), p=list(a.padding)[:2],
                         d=list(a.dilation), g=int(a.groups), **common)
        else:
            spec = _spec(**common)
        return relax.call_dps_packed(self._prefix + match.pattern.root,
                                     [*tensors, tvm.ir.StringImm(spec)], match.out_ty)

    def digest(self) -> str:
        return f"{self.name}:{SPEC_VERSION}"

    # -- run time -------------------------------------------------------------------------
    def register(self, threads: int) -> None:
        """Import the plug-in, check its device, install the packed functions (idempotent).
        NotExecutable (exit 3) when the plug-in or its device is missing here."""
        if self._registered:
            return
        usable, why = plugin_status(self.module, self.device)
        if not usable:
            fix = (f"install '{self.module}' here" if "does not import" in why else
                   f"install torch with '{self.device}' support here")
            raise NotExecutable(f"this artifact sends convolutions, matmuls and attention to "
                                f"the '{self.device}' libraries through torch, but {why}; "
                                f"{fix}, or recompile with --dispatch false.")
        import torch
        import tvm_ffi

        if self.device != "cpu":
            torch.empty(0, device=self.device)   # initialise the plug-in's runtime now
        for root, func in (("conv2d", self._conv2d), ("matmul", self._matmul),
                           ("attention", self._attention)):
            tvm_ffi.register_global_func(self._prefix + root, func, override=True)
        self._registered = True

    def _stream(self, torch, out):
        """torch on TVM's current stream for the output's device when a caller set one (the
        null stream, the default, is torch's default stream already)."""
        if self.device != "cuda":
            return _NO_CONTEXT
        import tvm_ffi

        index = out.device.index or 0
        device = self._ffi_devices.get(index)
        if device is None:
            device = self._ffi_devices[index] = tvm_ffi.device("cuda", index)
        raw = tvm_ffi.get_raw_stream(device)
        if not raw:
            return _NO_CONTEXT
        return torch.cuda.stream(torch.cuda.ExternalStream(raw, device=out.device))

    def _conv2d(self, *args) -> None:
        import torch

        plan = _plan(str(args[-2]))
        self.calls["conv2d"] += 1
        x, w, *rest = (torch.from_dlpack(t) for t in args[:-2])
        out = torch.from_dlpack(args[-1])
        bias = rest[0] if plan.has_bias else None
        residual = rest[-1] if plan.has_residual else None
        if plan.nhwc:   # NCHW-shaped views with channels-last strides, no copies
            x, out = x.permute(0, 3, 1, 2), out.permute(0, 3, 1, 2)
            residual = residual.permute(0, 3, 1, 2) if residual is not None else None
        stride, padding, dilation, groups = plan.conv
        with _precision(torch, self.device, plan.tf32), self._stream(torch, out):
            widen = x.dtype != out.dtype
            y = torch.nn.functional.conv2d(x, w, None if widen else bias, stride, padding,
                                           dilation, groups)
            if widen:   # the epilogue runs in the result's dtype (out= needs it)
                y = y.to(out.dtype)
                if bias is not None:
                    y.add_(bias.view(1, -1, 1, 1))
            apply_epilogue(torch, y, residual, plan.activation, out)

    def _attention(self, q, kt, v, spec, out) -> None:
        """softmax(q @ kt * scale) @ v as one fused kernel (torch's SDPA: flash or
        memory-efficient attention on CUDA; one copy into TVM's buffer)."""
        import torch

        self.calls["attention"] += 1
        scale = float.fromhex(_attention_scale(str(spec)))
        q, kt, v = torch.from_dlpack(q), torch.from_dlpack(kt), torch.from_dlpack(v)
        out = torch.from_dlpack(out)
        with _precision(torch, self.device, False), self._stream(torch, out):
            y = torch.nn.functional.scaled_dot_product_attention(
                q, kt.transpose(-2, -1), v, scale=scale)
            out.copy_(y)

    def _matmul(self, *args) -> None:
        import torch

        plan = _plan(str(args[-2]))
        self.calls["matmul"] += 1
        a, b, *rest = (torch.from_dlpack(t) for t in args[:-2])
        out = torch.from_dlpack(args[-1])
        bias = rest[0] if plan.has_bias else None
        residual = rest[-1] if plan.has_residual else None
        with _precision(torch, self.device, plan.tf32), self._stream(torch, out):
            if a.dtype != out.dtype:   # fp16/bf16 operands, float32 result
                y = torch.matmul(a, b).to(out.dtype)   # the epilogue in the result's dtype
                if bias is not None:
                    y.add_(bias)
                apply_epilogue(torch, y, residual, plan.activation, out)
                return
            gemm_into(torch, a, b, bias, out)
            apply_epilogue(torch, out, residual, plan.activation, out)


def gemm_into(torch, a, b, bias, out) -> None:
    """out = a @ b (+ bias), written into `out`: a dense layer (2-D weight) as one GEMM over all
    leading rows, anything else as a batched matmul. Shared by every torch-backed library (the
    host's oneDNN/MKL one in backends/cpu/torch_library.py and the device plug-ins here)."""
    if b.dim() == 2 and a.dim() >= 2:
        a2, o2 = a.reshape(-1, a.shape[-1]), out.view(-1, out.shape[-1])
        if bias is not None:
            torch.addmm(bias, a2, b, out=o2)
        else:
            torch.mm(a2, b, out=o2)
    else:
        torch.matmul(a, b, out=out)
        if bias is not None:
            out.add_(bias)


@functools.lru_cache(maxsize=1024)
def _attention_scale(text: str) -> str:
    parts = text.split(";")
    if parts[0] != SPEC_VERSION:
        raise ValueError(f"library call spec {parts[0]!r}, this anychip reads {SPEC_VERSION}: "
                         f"recompile the model")
    return dict(p.split("=", 1) for p in parts[1:])["scale"]


def apply_epilogue(torch, y, residual, activation: str | None, out,
                   bounds: tuple[float, ...] = ()) -> None:
    """out = activation(y + residual), each step with out= (y may be out itself: in place).
    Shared with the cpu library (backends/cpu/torch_library.py), which also passes a clip's
    bounds."""
    if residual is not None:
        torch.add(y, residual, out=out)
        y = out
    if activation == "relu":
        torch.clamp_min(y, 0, out=out)
    elif activation == "gelu":
        torch.ops.aten.gelu.out(y, out=out)
    elif activation == "gelu_tanh":
        torch.ops.aten.gelu.out(y, approximate="tanh", out=out)
    elif activation == "sigmoid":
        torch.sigmoid(y, out=out)
    elif activation == "silu":
        torch.ops.aten.silu.out(y, out=out)
    elif activation == "hardswish":
        torch.ops.aten.hardswish.out(y, out=out)
    elif activation == "clip":
        torch.clamp(y, *bounds, out=out)
    elif y is not out:
        out.copy_(y)


class _precision:
    """Within a call: TF32 tensor cores allowed only for a tf32 artifact (cuDNN allows them by
    default, cuBLAS does not); the process's own settings are restored after the call."""

    __slots__ = ("torch", "cuda", "allow", "saved")

    def __init__(self, torch, device: str, allow: bool) -> None:
        self.torch, self.cuda, self.allow = torch, device == "cuda", allow

    def __enter__(self):
        self.saved = None
        if self.cuda:
            c = self.torch._C
            try:   # torch refuses the legacy getters after a mix of per-op precision settings
                self.saved = (c._get_cudnn_allow_tf32(), c._get_cublas_allow_tf32())
            except (RuntimeError, AttributeError):
                return self   # the process's own settings apply
            c._set_cudnn_allow_tf32(self.allow)
            c._set_cublas_allow_tf32(self.allow)
        return self

    def __exit__(self, *exc) -> None:
        if self.saved is not None:
            c = self.torch._C
            c._set_cudnn_allow_tf32(self.saved[0])
            c._set_cublas_allow_tf32(self.saved[1])
