"""Execute a model's CUDA kernels one by one on this host's NVIDIA GPU, each against the same
function before scheduling built for the host by LLVM, on the same random data.

`anychip verify` compares a whole model's outputs with ONNX Runtime; when they disagree (or come
out NaN) it cannot say which kernel is wrong. This check can: every GPU-scheduled TIR function
is built for the profile's CUDA target on its own (TVM's TIR pipeline and CUDA codegen, as the
model build does), run on the GPU through TVM's CUDA runtime, and every buffer is compared.
Warp-level reductions (shuffles with warp 32) are exercised here and nowhere else: the OpenCL
check on PoCL runs with warp size 1. Kernels with dynamic shapes or scalar parameters are
skipped with the reason.
"""

from __future__ import annotations

import time

import numpy as np

from anychip.backends.simt.kernel_check import (KernelResult, KernelRunReport, at_sizes,
                                               bind_sizes, host_reference, is_buffer,
                                               kernel_sizes, normwise, random_buffers,
                                               scheduled_functions)
from anychip.backends.simt.toolchains import cuda_device
from anychip.compiler.errors import NotExecutable


def _skip_reason(func) -> str | None:
    for param in func.params:
        if not is_buffer(param):
            return "scalar parameter (dynamic shape)"
        if not all(isinstance(d, int) or d.__class__.__name__ == "IntImm" for d in param.shape):
            return "dynamic shape"
    return None


def _run_on_gpu(gvar, func, target, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import tvm

    name = gvar.name_hint
    lib = tvm.tirx.build(tvm.IRModule({gvar: func.with_attr("global_symbol", name)}),
                         target=target)
    dev = tvm.cuda(0)
    tensors = {n: tvm.runtime.tensor(a.copy(), dev) for n, a in arrays.items()}
    lib[name](*(tensors[p.name] for p in func.params))
    dev.sync()
    return {n: t.numpy() for n, t in tensors.items()}


def run_kernels(model, target: str, limit: int | None = None, seed: int = 0,
                precision: str | None = None, shapes: dict | None = None,
                dims: dict | None = None) -> KernelRunReport:
    """Every kernel of `model` built for `target` (an nvidia-* profile), run on this GPU."""
    import tvm

    from anychip.compiler.frontend import load_model
    from anychip.compiler.registry import get_profile
    from anychip.compiler.tolerances import compare, tolerance_for

    present, why = cuda_device()
    if not present:
        raise NotExecutable(f"target '{target}': executing CUDA kernels needs an NVIDIA GPU: "
                            f"{why}")
    from .runner import install_compile_hook

    install_compile_hook()   # nvcc without fast math, as the build compiles them
    profile = get_profile(target)
    started = time.perf_counter()
    source = load_model(model, None, dict(shapes or {}), dims or None)
    chip, plain, scheduled = scheduled_functions(source, profile, precision)
    sizes = kernel_sizes(source, shapes)       # a dynamic model: its kernels at one shape
    plain, scheduled = bind_sizes(plain, sizes), bind_sizes(scheduled, sizes)
    precision_used = precision or profile.default_precision
    plain_names = {g.name_hint for g in plain.functions}
    funcs = sorted(((gv, f) for gv, f in scheduled.functions.items()
                    if gv.name_hint in plain_names and f.__class__.__name__ == "PrimFunc"),
                   key=lambda x: x[0].name_hint)
    rng = np.random.default_rng(seed)
    results: list[KernelResult] = []
    for gvar, func in funcs[:limit] if limit else funcs:
        why = _skip_reason(func)
        if why:
            results.append(KernelResult(gvar.name_hint, gvar.name_hint, "skipped", why))
            continue
        arrays = random_buffers(func, rng)
        plain_gvar = plain.get_global_var(gvar.name_hint)
        expected = host_reference(plain_gvar, plain[plain_gvar], arrays)
        try:
            got = _run_on_gpu(gvar, func, chip.target(), arrays)
        except Exception as exc:  # noqa: BLE001 - TVM raises builtin types on build/launch
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200]
            results.append(KernelResult(gvar.name_hint, gvar.name_hint, "failed",
                                        f"build or launch failed: {first}"))
            continue
        worst, bad = 0.0, []
        for n, want in expected.items():
            tol = normwise(tolerance_for(precision_used, want.dtype), want)
            check = compare(got[n], want, tol)
            worst = max(worst, check.max_abs)
            if not check.passed:
                nonfinite = f", {check.nonfinite} NaN/Inf" if check.nonfinite else ""
                bad.append(f"{n}: {check.mismatches}/{check.size} outside {tol}{nonfinite}")
        results.append(KernelResult(gvar.name_hint, gvar.name_hint,
                                    "failed" if bad else "passed", "; ".join(bad),
                                    max_abs=worst))
    return KernelRunReport(source.label, target, f"{tvm.cuda(0).device_name}",
                           "executed: each kernel on the GPU through TVM's CUDA runtime",
                           results, time.perf_counter() - started, language="CUDA",
                           note="; whole-model results come from plain 'anychip verify'" + at_sizes(sizes))
