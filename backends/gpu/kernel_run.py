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
from dataclasses import asdict, dataclass, field

import numpy as np

from anychip.compiler.errors import AnychipError, NotExecutable

# `T.launch_thread("threadIdx.x", 256)` or `..., T.int64(256))` in a device function's script
_LAUNCH = re.compile(r'launch_thread\("((?:blockIdx|threadIdx)\.[xyz])", '
                     r'(?:T\.u?int(?:8|16|32|64)\()?(\w+)\)?\)')


@dataclass
class KernelResult:
    function: str
    kernel: str
    status: str                 # "passed" | "failed" | "skipped"
    detail: str = ""
    grid: list[int] = field(default_factory=list)
    block: list[int] = field(default_factory=list)
    max_abs: float = 0.0


@dataclass
class KernelRunReport:
    model: str
    target: str
    device: str
    how: str
    kernels: list[KernelResult]
    seconds: float
    language: str = "OpenCL"
    note: str = "; the whole model did not run: no OpenCL runtime in TVM here"

    def counts(self) -> dict[str, int]:
        out = {"passed": 0, "failed": 0, "skipped": 0}
        for k in self.kernels:
            out[k.status] += 1
        return out

    @property
    def passed(self) -> bool:
        counts = self.counts()
        return counts["failed"] == 0 and counts["passed"] > 0

    def summary(self) -> str:
        c = self.counts()
        verdict = "PASS" if self.passed else "FAIL"
        return (f"{verdict} {self.model} on {self.target}: {c['passed']} of {len(self.kernels)} "
                f"{self.language} kernels executed on {self.device} and matched the host build, "
                f"{c['failed']} failed, {c['skipped']} skipped ({self.how}{self.note})")

    def as_dict(self) -> dict:
        return {"model": self.model, "target": self.target, "device": self.device,
                "how": self.how, "passed": self.passed, "counts": self.counts(),
                "seconds": round(self.seconds, 2), "kernels": [asdict(k) for k in self.kernels]}


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


def scheduled_functions(source, profile, precision: str | None = None):
    """(plain, scheduled) IRModules of the model's fused kernels for the profile: the same
    functions before and after the GPU schedule."""
    import tvm

    from anychip.backends.simt import GpuChip
    from anychip.backends.simt.lowering import legalize_passes, schedule_passes
    from anychip.backends.simt.precision import apply_float64_policy, precision_passes
    from anychip.compiler.importer import to_relax
    from anychip.compiler.passes import target_neutral_passes

    chip = GpuChip.from_profile(profile)
    precision = precision or profile.default_precision
    mod = tvm.transform.Sequential(target_neutral_passes())(to_relax(source))
    mod, _ = apply_float64_policy(mod, profile.name, chip.float64)
    with chip.target(), tvm.transform.PassContext(opt_level=3):
        plain = tvm.transform.Sequential(precision_passes(precision)
                                         + legalize_passes(schedule=False))(mod)
        # dlight updates the module it is given in place: schedule a copy
        scheduled = tvm.transform.Sequential(schedule_passes())(
            tvm.IRModule(dict(plain.functions), attrs=plain.attrs))
    return chip, plain, scheduled


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


def _is_buffer(param) -> bool:
    """TIR parameters in TVM 0.27 are Vars; a buffer parameter's type is a BufferType."""
    return type(getattr(param, "ty", None)).__name__ == "BufferType"


def _random_buffers(func, rng) -> dict[str, np.ndarray]:
    arrays = {}
    for param in func.params:
        shape = tuple(int(d) for d in param.shape)
        dtype = np.dtype(str(param.dtype)) if str(param.dtype) != "bool" else np.dtype(bool)
        if dtype.kind == "f":
            arrays[param.name] = rng.standard_normal(shape).astype(dtype)
        else:
            arrays[param.name] = np.zeros(shape, dtype)
    return arrays


def _host_reference(gvar, plain_func, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import tvm

    func = plain_func.with_attr("global_symbol", gvar.name_hint)
    lib = tvm.tirx.build(tvm.IRModule({gvar: func}), target="llvm")
    tensors = {name: tvm.runtime.tensor(a.copy()) for name, a in arrays.items()}
    order = [p.name for p in plain_func.params]
    lib[gvar.name_hint](*(tensors[n] for n in order))
    return {n: t.numpy() for n, t in tensors.items()}


def _skip_reason(func, kernels, fp16_ok: bool) -> str | None:
    if len(kernels) != 1:
        return f"{len(kernels)} device kernels in one function (host code between them)"
    for param in func.params:
        if not _is_buffer(param):
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


def _normwise(tol, want: np.ndarray):
    """The table's tolerance with atol scaled by the buffer's largest finite magnitude: the
    device schedule sums in another order than the host loop, and on random data a reduction
    over thousands of terms (divided by a near-zero random 'variance', say) reaches magnitudes
    where a fixed atol would judge rounding, not code."""
    from anychip.compiler.tolerances import Tolerance

    finite = np.abs(want[np.isfinite(want)]) if want.dtype.kind == "f" else np.zeros(0)
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    return Tolerance(tol.rtol, tol.atol * scale)


def run_kernels(model, target: str, limit: int | None = None, seed: int = 0,
                precision: str | None = None, shapes: dict | None = None) -> KernelRunReport:
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
    source = load_model(model, None, dict(shapes or {}))
    chip, plain, scheduled = scheduled_functions(source, profile, precision)
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
        arrays = _random_buffers(func, rng)
        by_param = {f"{n}_ptr": n for n in arrays} | {n: n for n in arrays}
        if any(p not in by_param for p in params):
            results.append(KernelResult(gvar.name_hint, name, "skipped",
                                        "kernel parameter that is not a buffer"))
            continue
        plain_func = plain[plain.get_global_var(gvar.name_hint)]
        expected = _host_reference(plain.get_global_var(gvar.name_hint), plain_func, arrays)
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
            tol = _normwise(tolerance_for(precision_used, want.dtype), want)
            check = compare(got, want, tol)
            worst = max(worst, check.max_abs)
            if not check.passed:
                bad.append(f"{n}: {check.mismatches}/{check.size} outside {tol}")
        results.append(KernelResult(gvar.name_hint, name, "failed" if bad else "passed",
                                    "; ".join(bad), grid, block, worst))
    return KernelRunReport(source.label, target, f"{device.platform.name} / {device.name}",
                           "executed: each kernel on the OpenCL device", results,
                           time.perf_counter() - started)
