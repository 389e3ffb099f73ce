"""What every per-kernel check of GPU code shares, whichever device runs the kernels.

A model's kernels are taken twice from the same pipeline: plain (legalized and fused, before
any GPU schedule; built for the host by LLVM, they are the reference) and GPU-scheduled (what
the build compiles for the device). Each kernel is fed the same seeded random buffers on both
sides and every buffer compared. backends/gpu/kernel_run.py launches the OpenCL ones on PoCL,
backends/cuda/kernel_check.py the CUDA ones on an NVIDIA GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


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
    language: str = "GPU"   # the kernels' language, for the summary
    note: str = ""          # appended to `how` in the summary

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


def scheduled_functions(source, profile, precision: str | None = None):
    """(plain, scheduled) IRModules of the model's fused kernels for the profile: the same
    functions before and after the GPU schedule."""
    import tvm

    from anychip.backends.simt import GpuChip
    from anychip.backends.simt.compound_dims import isolate_compound_dims
    from anychip.backends.simt.lowering import legalize_passes, schedule_passes
    from anychip.backends.simt.precision import apply_float64_policy, precision_passes
    from anychip.compiler.importer import to_relax
    from anychip.compiler.passes import target_neutral_passes

    chip = GpuChip.from_profile(profile)
    precision = precision or profile.default_precision
    mod = tvm.transform.Sequential(target_neutral_passes())(to_relax(source))
    mod, _ = apply_float64_policy(mod, profile.name, chip.float64)
    mod, definitions = isolate_compound_dims(mod)   # as lower_for_gpu
    if definitions:   # what bind_sizes gives those symbols
        mod = mod.with_attr(DEFINITIONS_ATTR, definitions)
    with chip.target(), tvm.transform.PassContext(opt_level=3):
        plain = tvm.transform.Sequential(precision_passes(precision)
                                         + legalize_passes(schedule=False))(mod)
        # dlight updates the module it is given in place: schedule a copy
        scheduled = tvm.transform.Sequential(schedule_passes())(
            tvm.IRModule(dict(plain.functions), attrs=plain.attrs))
    return chip, plain, scheduled


def kernel_sizes(source, shapes: dict | None = None) -> dict[str, int]:
    """The size each symbol of a dynamic model takes for the per-kernel checks: the kernels
    compile once with symbolic extents, and run here at one concrete shape. The smallest of
    the symbol's bounds that is at least 3 (an odd size that is not 1 catches a schedule's
    remainder and broadcasting bugs that batch 1 hides); none when --shape made it static."""
    from anychip.compiler.importer import symbol_bounds

    if shapes:
        return {}
    return {name: min(hi, max(lo, 3)) for name, (lo, hi) in symbol_bounds(source).items()}


def at_sizes(sizes: dict[str, int]) -> str:
    """The report's note of the shape a dynamic model's kernels ran at ('' when static)."""
    return ("; symbolic kernels run at " + ", ".join(f"{k}={v}" for k, v in sizes.items())
            if sizes else "")


DEFINITIONS_ATTR = "anychip_symbol_definitions"


def _with_defined(mod, sizes: dict[str, int]) -> dict[str, int]:
    """`sizes` plus the symbols isolate_compound_dims introduced, each its expression's value."""
    import tvm
    import tvm_ffi
    from tvm import tirx

    definitions = (mod.attrs or {}).get(DEFINITIONS_ATTR) if mod.attrs is not None else None
    if not definitions:
        return sizes
    out = dict(sizes)
    for name, expr in definitions.items():
        analyzer = tvm.sym.Analyzer()
        variables: list = []
        tvm_ffi.structural_walk(expr, (tirx.Var, variables.append), order="post")
        for var in variables:
            if var.name in sizes:
                analyzer.bind(var, tirx.IntImm(str(var.ty), sizes[var.name]))
        value = analyzer.simplify(expr)
        if isinstance(value, tirx.IntImm):
            out[str(name)] = int(value.value)
    return out


def bind_sizes(mod, sizes: dict[str, int]):
    """`mod` with every PrimFunc specialised to `sizes` ({symbol: size}): a kernel written for
    symbolic extents becomes the same schedule at those extents, which runs like a static
    one. A function whose symbols cannot all be bound stays as it is (and is skipped)."""
    import tvm

    if not sizes:
        return mod
    sizes = _with_defined(mod, sizes)
    functions = {gv: _specialised(f, sizes) if f.__class__.__name__ == "PrimFunc" else f
                 for gv, f in mod.functions.items()}
    return tvm.IRModule(functions, attrs=mod.attrs)


def _is_symbol(dim, sizes) -> bool:
    return dim.__class__.__name__ == "Var" and getattr(dim, "name", None) in sizes


def _specialised(func, sizes: dict[str, int]):
    import tvm

    for _ in range(len(func.params)):
        binding = {}
        for param in func.params:
            if is_buffer(param) and any(_is_symbol(d, sizes) for d in param.shape):
                dims = [tvm.tirx.IntImm(str(d.ty), sizes[d.name]) if _is_symbol(d, sizes) else d
                        for d in param.shape]
                binding = {param: tvm.tirx.decl_buffer(dims, param.dtype, name=param.name)}
                break
            if not is_buffer(param) and getattr(param, "name", None) in sizes:
                binding = {param: tvm.tirx.IntImm(str(param.ty), sizes[param.name])}
                break
        if not binding:
            return func
        try:
            func = func.specialize(binding)
        except Exception:  # noqa: BLE001 - TVM's check failures: leave it symbolic (skipped)
            return func
    return func


def is_buffer(param) -> bool:
    """TIR parameters in TVM 0.27 are Vars; a buffer parameter's type is a BufferType."""
    return type(getattr(param, "ty", None)).__name__ == "BufferType"


def random_buffers(func, rng) -> dict[str, np.ndarray]:
    arrays = {}
    for param in func.params:
        shape = tuple(int(d) for d in param.shape)
        if any(d < 0 for d in shape):   # the symbols' sizes (kernel_sizes) are not the model's
            from anychip.compiler.errors import AnychipError

            raise AnychipError(
                f"a kernel's buffer '{param.name}' has shape {list(shape)} at the sizes the "
                f"symbolic kernels run at (the smallest of each symbol's range that is at "
                f"least 3): give the model's range with --dim NAME=LO..HI.")
        dtype = np.dtype(str(param.dtype)) if str(param.dtype) != "bool" else np.dtype(bool)
        if dtype.kind == "f":
            arrays[param.name] = rng.standard_normal(shape).astype(dtype)
        else:
            arrays[param.name] = np.zeros(shape, dtype)
    return arrays


def host_reference(gvar, plain_func, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import tvm

    func = plain_func.with_attr("global_symbol", gvar.name_hint)
    lib = tvm.tirx.build(tvm.IRModule({gvar: func}), target="llvm")
    tensors = {name: tvm.runtime.tensor(a.copy()) for name, a in arrays.items()}
    order = [p.name for p in plain_func.params]
    lib[gvar.name_hint](*(tensors[n] for n in order))
    return {n: t.numpy() for n, t in tensors.items()}


def normwise(tol, want: np.ndarray):
    """The table's tolerance with atol scaled by the buffer's largest finite magnitude: the
    device schedule sums in another order than the host loop, and on random data a reduction
    over thousands of terms (divided by a near-zero random 'variance', say) reaches magnitudes
    where a fixed atol would judge rounding, not code."""
    from anychip.compiler.tolerances import Tolerance

    finite = np.abs(want[np.isfinite(want)]) if want.dtype.kind == "f" else np.zeros(0)
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    return Tolerance(tol.rtol, tol.atol * scale)
