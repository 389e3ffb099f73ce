"""Execute a model's generated OpenCL kernels on this machine's OpenCL device, one by one.

No domestic GPU is here, and TVM's wheel has no OpenCL runtime, so a whole model cannot run on
an OpenCL target. Its kernels can: each GPU-scheduled TIR function is lowered to its device
kernel exactly as the build does (TVM's TIR pipeline, host/device split, OpenCL codegen), the
OpenCL C is built by the platform (PoCL on a CPU-only host) and launched through pyopencl
with the grid the schedule bound, and every buffer afterwards is compared with the same
function before scheduling, built for the host by LLVM, run on the same random data. A wrong
thread binding, index, barrier or reduction in the generated code fails here.

Kernels this cannot run are skipped with the reason (dynamic shapes or launch extents,
several device kernels in one function, float16 on a device without cl_khr_fp16). Integer
buffers are zero-filled so gathers index in bounds.
"""

from __future__ import annotations

import re
import time

import numpy as np

from anychip.backends.simt.kernel_check import (KernelResult, KernelRunReport, at_sizes,
                                               bind_sizes, host_reference, is_buffer,
                                               kernel_sizes, normwise, random_buffers,
                                               scheduled_functions)
from anychip.compiler.errors import AnychipError, NotExecutable

# `T.launch_thread("threadIdx.x", 256)` or `..., T.int64(256))` in a device function's script
_LAUNCH = re.compile(r'launch_thread\("((?:blockIdx|threadIdx)\.[xyz])", '
                     r'(?:T\.u?int(?:8|16|32|64)\()?(\w+)\)?\)')


def _opencl():
    try:
        import pyopencl as cl
    except ImportError as exc:
        raise NotExecutable("executing OpenCL kernels needs pyopencl (pip install pyopencl) "
                            "and an OpenCL platform (Debian: pocl-opencl-icd)") from exc
    try:
        devices = [d for p in cl.get_platforms() for d in p.get_devices()]
    except cl.Error:   # the ICD loader without any platform raises PLATFORM_NOT_FOUND_KHR
        devices = []
    if not devices:
        raise NotExecutable("no OpenCL device here (Debian: apt-get install pocl-opencl-icd)")
    return cl, devices[0]


def _device_kernels(gvar, func, target):
    """[(name, params, launch extents, OpenCL source)] of one scheduled TIR function."""
    import tvm
    from tvm.tirx.build import codegen_build, split_host_device_mods

    single = tvm.IRModule({gvar: func.with_attr("global_symbol", gvar.name_hint)})
    single = tvm.tirx.transform.BindTarget(target.with_host("llvm"))(single)
    pipeline, _, finalize_device = tvm.tirx.get_default_tir_pipeline(target)
    _, devices = split_host_device_mods(pipeline(single))
    kernels = []
    for device_target, device_mod in devices.items():
        device_mod = finalize_device()(device_mod)
        source = codegen_build(device_mod, device_target).inspect_source()
        for kvar, kfunc in device_mod.functions.items():
            extents = dict(_LAUNCH.findall(kfunc.script()))
            tags = [str(t) for t in (kfunc.attrs or {}).get("tirx.kernel_launch_params", [])]
            missing = [t for t in tags if "Idx." in t and t not in extents]
            if missing:   # an extent this parser cannot read: never launch with a guess
                extents["?"] = f"no extent found for {', '.join(missing)}"
            kernels.append((kvar.name_hint, [str(p) for p in kfunc.params], extents, source))
    return kernels


def _skip_reason(func, kernels, fp16_ok: bool) -> str | None:
    if len(kernels) != 1:
        return f"{len(kernels)} device kernels in one function (host code between them)"
    for param in func.params:
        if not is_buffer(param):
            return "scalar parameter (dynamic shape)"
        if not all(isinstance(d, int) or d.__class__.__name__ == "IntImm" for d in param.shape):
            return "dynamic shape"
    name, params, extents, source = kernels[0]
    if "?" in extents:
        return extents["?"]
    if any(not v.isdigit() for v in extents.values()):
        return "launch extents known only at run time"
    if not fp16_ok and "half" in source:
        return "float16 kernel; this OpenCL device lacks cl_khr_fp16"
    return None


def run_kernels(model, target: str, limit: int | None = None, seed: int = 0,
                precision: str | None = None, shapes: dict | None = None,
                dims: dict | None = None) -> KernelRunReport:
    """Execute every kernel of `model` built for `target` (an OpenCL-dialect profile) on this
    machine's OpenCL device; see the module docstring."""
    from anychip.backends.simt import GpuChip
    from anychip.compiler.frontend import load_model
    from anychip.compiler.registry import get_profile
    from anychip.compiler.tolerances import compare, tolerance_for

    profile = get_profile(target)
    if profile.family != "gpu" or GpuChip.from_profile(profile).dialect != "opencl":
        raise AnychipError(f"target '{target}' does not emit OpenCL C; kernel execution on an "
                           f"OpenCL device needs an OpenCL-dialect profile (e.g. biren-br104).")
    cl, device = _opencl()
    started = time.perf_counter()
    source = load_model(model, None, dict(shapes or {}), dims or None)
    chip, plain, scheduled = scheduled_functions(source, profile, precision)
    sizes = kernel_sizes(source, shapes)       # a dynamic model: its kernels at one shape
    plain, scheduled = bind_sizes(plain, sizes), bind_sizes(scheduled, sizes)
    precision_used = precision or profile.default_precision
    context = cl.Context([device])
    queue = cl.CommandQueue(context)
    fp16_ok = "cl_khr_fp16" in device.extensions
    rng = np.random.default_rng(seed)
    results: list[KernelResult] = []
    funcs = sorted(((gv, f) for gv, f in scheduled.functions.items()
                    if gv.name_hint in {g.name_hint for g in plain.functions}
                    and f.__class__.__name__ == "PrimFunc"), key=lambda x: x[0].name_hint)
    for gvar, func in funcs[:limit] if limit else funcs:
        kernels = _device_kernels(gvar, func, chip.target())
        why = _skip_reason(func, kernels, fp16_ok)
        kname = kernels[0][0] if kernels else ""
        if why:
            results.append(KernelResult(gvar.name_hint, kname, "skipped", why))
            continue
        name, params, extents, code = kernels[0]
        grid = [int(extents.get(f"blockIdx.{a}", 1)) for a in "xyz"]
        block = [int(extents.get(f"threadIdx.{a}", 1)) for a in "xyz"]
        arrays = random_buffers(func, rng)
        by_param = {f"{n}_ptr": n for n in arrays} | {n: n for n in arrays}
        if any(p not in by_param for p in params):
            results.append(KernelResult(gvar.name_hint, name, "skipped",
                                        "kernel parameter that is not a buffer"))
            continue
        plain_func = plain[plain.get_global_var(gvar.name_hint)]
        expected = host_reference(plain.get_global_var(gvar.name_hint), plain_func, arrays)
        mf = cl.mem_flags
        buffers = {n: cl.Buffer(context, mf.READ_WRITE | mf.COPY_HOST_PTR,
                                hostbuf=np.ascontiguousarray(a) if a.size else np.zeros(1, a.dtype))
                   for n, a in arrays.items()}
        try:
            program = cl.Program(context, code).build(options=["-cl-std=CL1.2"])
            kernel = getattr(program, name)
            kernel.set_args(*(buffers[by_param[p]] for p in params))
            global_size = tuple(g * b for g, b in zip(grid, block))
            cl.enqueue_nd_range_kernel(queue, kernel, global_size, tuple(block)).wait()
        except (cl.Error, RuntimeError) as exc:   # one kernel the device refuses: say which
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            results.append(KernelResult(gvar.name_hint, name, "failed",
                                        f"the OpenCL device refused it: {first}", grid, block))
            continue
        worst, bad = 0.0, []
        for n, want in expected.items():
            got = np.empty_like(arrays[n])
            if got.size:
                cl.enqueue_copy(queue, got, buffers[n]).wait()
            tol = normwise(tolerance_for(precision_used, want.dtype), want)
            check = compare(got, want, tol)
            worst = max(worst, check.max_abs)
            if not check.passed:
                bad.append(f"{n}: {check.mismatches}/{check.size} outside {tol}")
        results.append(KernelResult(gvar.name_hint, name, "failed" if bad else "passed",
                                    "; ".join(bad), grid, block, worst))
    return KernelRunReport(source.label, target, f"{device.platform.name} / {device.name}",
                           "executed: each kernel on the OpenCL device", results,
                           time.perf_counter() - started, language="OpenCL",
                           note="; the whole model did not run: no OpenCL runtime in TVM here"
                           + at_sizes(sizes))
