"""Precision policy on the Relax graph: fp16/bf16 compute, and float64 on chips without it.

- fp32: unchanged. tf32: TVM's generated kernels multiply in fp32 (TF32 tensor cores need a
  library such as cuBLAS), so tf32 is accepted and reported as fp32, the precision really used.
- fp16: TVM's own ToMixedPrecision pass (matmul/conv in fp16 with fp32 accumulation, the rest
  where it is safe). bf16: TVM has no such pass, so matmul and convolution inputs are cast to
  bfloat16 with fp32 results (what tensor cores do with bf16); everything else stays fp32.
- float64 on a chip without it (profile `float64: refuse | lower-with-warning`): refused, or
  computed in float32 with a warning; a float64 model input or output is always refused, since
  the artifact's signature would change.
"""

from __future__ import annotations

import warnings

from anychip.compiler.errors import AnychipError

# The precision each requested --precision really gives with TVM-generated kernels.
PRECISION_USED = {"fp32": "fp32", "tf32": "fp32", "fp16": "fp16", "bf16": "bf16"}


def precision_passes(precision: str) -> list:
    from tvm import relax

    if precision == "fp16":
        return [relax.transform.ConvertToDataflow(), relax.transform.ToMixedPrecision("float32")]
    if precision == "bf16":
        return [_cast_heavy_ops_pass("bfloat16")]
    if precision in ("fp32", "tf32"):
        return []
    raise AnychipError(f"precision '{precision}' is not one the GPU backends implement "
                       f"(fp32, tf32, fp16, bf16).")


def _cast_heavy_ops_pass(dtype: str):
    """A module pass: matmul and conv1d/2d/3d take `dtype` inputs and give float32 results."""
    import tvm
    from tvm import relax

    conv_ops = {"relax.nn.conv1d": relax.op.nn.conv1d, "relax.nn.conv2d": relax.op.nn.conv2d,
                "relax.nn.conv3d": relax.op.nn.conv3d}

    @relax.expr_functor.mutator
    class CastHeavyOps(relax.PyExprMutator):
        def visit_call_(self, call):  # noqa: N802 (TVM's visitor naming)
            call = self.visit_expr_post_order(call)
            if not isinstance(call.op, tvm.ir.Op) or not _all_float32(call.args[:2]):
                return call
            name = call.op.name
            if name == "relax.matmul":
                a, b = (relax.op.astype(x, dtype) for x in call.args[:2])
                return relax.op.matmul(a, b, out_dtype="float32")
            if name in conv_ops:
                at = call.attrs
                data, weight = (relax.op.astype(x, dtype) for x in call.args[:2])
                return conv_ops[name](data, weight, strides=at.strides, padding=at.padding,
                                      dilation=at.dilation, groups=at.groups,
                                      data_layout=at.data_layout, kernel_layout=at.kernel_layout,
                                      out_layout=at.out_layout, out_dtype="float32")
            return call

    @tvm.transform.module_pass(opt_level=0, name=f"CastHeavyOpsTo_{dtype}")
    def _pass(mod, _ctx):
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                mod[gv] = CastHeavyOps(mod).visit_expr(func)
        return mod

    return _pass


def _dtype_of(expr) -> str | None:
    ty = getattr(expr, "ty", None)
    return str(getattr(ty, "dtype", "")) or None


def _all_float32(exprs) -> bool:
    return all(_dtype_of(e) == "float32" for e in exprs)


def _float64_sites(mod) -> list[str]:
    """Where float64 appears in the Relax functions: 'input x', 'output', 'op relax.astype'..."""
    import tvm
    from tvm import relax

    sites: list[str] = []
    for gv, func in mod.functions.items():
        if not isinstance(func, relax.Function):
            continue
        for param in func.params:
            if _dtype_of(param) == "float64":
                sites.append(f"input '{param.name}'")
        if "float64" in str(getattr(func, "ret_ty", "")):
            sites.append(f"an output of '{gv.name_hint}'")

        def visit(expr):
            if isinstance(expr, tvm.ir.Constant) and _dtype_of(expr) == "float64":
                sites.append("a float64 constant")
            elif isinstance(expr, relax.Call) and _dtype_of(expr) == "float64":
                op = getattr(expr.op, "name", None) or getattr(expr.op, "name_hint", "call")
                sites.append(f"op {op}")

        relax.analysis.post_order_visit(func.body, visit)
    return sites


def apply_float64_policy(mod, profile_name: str, policy: str) -> tuple[object, list[str]]:
    """Return (module, warnings) after applying the profile's float64 setting."""
    if policy == "native":
        return mod, []
    sites = _float64_sites(mod)
    if not sites:
        return mod, []
    boundary = [s for s in sites if s.startswith(("input", "an output"))]
    if policy == "refuse" or boundary:
        first = (boundary or sites)[0]
        raise AnychipError(f"target '{profile_name}' has no float64 units and the model uses "
                           f"float64 ({first}); export the model in float32"
                           + ("" if boundary else ", or set 'float64: lower-with-warning' in the "
                              "profile to compute it in float32") + ".")
    lowered = _float64_to_float32(mod)
    left = _float64_sites(lowered)
    if left:
        raise AnychipError(f"target '{profile_name}' has no float64 units and the model's "
                           f"float64 {left[0]} could not be lowered to float32; export the "
                           f"model in float32.")
    message = (f"target '{profile_name}' has no float64 units: {len(sites)} float64 value(s) "
               f"({sites[0]}, ...) are computed in float32.")
    warnings.warn(message, stacklevel=3)
    return lowered, [message]


def _float64_to_float32(mod):
    """float64 constants become float32 and casts to float64 cast to float32 instead."""
    import numpy as np
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class Float64ToFloat32(relax.PyExprMutator):
        def visit_generic_const_(self, const):  # noqa: N802
            if _dtype_of(const) == "float64":
                return relax.const(const.value.numpy().astype(np.float32), "float32")
            return const

        def visit_call_(self, call):  # noqa: N802
            call = self.visit_expr_post_order(call)
            if (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.astype"
                    and str(call.attrs.dtype) == "float64"):
                return relax.op.astype(call.args[0], "float32")
            return call

    out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gv, func in list(out.functions.items()):
        if isinstance(func, relax.Function):
            out[gv] = Float64ToFloat32(out).visit_expr(func)
    return out
