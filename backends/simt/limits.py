"""Check every scheduled kernel against the chip's limits before any code is generated.

TVM's GPU code verifier (`tvm.s_tir.analysis.verify_gpu_code`) answers yes or no for a set of
constraints; to say *which* limit a kernel breaks and by how much, each constraint is checked
on its own and the kernel's use is measured (shared memory from TVM's allocation analysis,
threads per block by asking the verifier). The kernels are first lowered the way the build
lowers them (block lowering, cross-thread reductions, shared-memory merging), on a copy: the
module that is built is not changed.
"""

from __future__ import annotations

from .chip import GpuChip

from anychip.compiler.errors import AnychipError

_UNITS = {"max_shared_memory_per_block": "B of shared memory per block",
          "max_threads_per_block": "threads per block",
          "max_thread_x": "threads along threadIdx.x", "max_thread_y": "threads along threadIdx.y",
          "max_thread_z": "threads along threadIdx.z"}


def _lowered_for_verification(tir_mod, target):
    """The kernels as the build sees them just before host/device split."""
    import tvm
    from tvm import s_tir, tirx

    passes = [
        tirx.transform.BindTarget(target),
        s_tir.transform.CanonicalizeLoop(),
        s_tir.transform.LowerCrossThreadReduction(),
        s_tir.transform.LowerInitBlock(),
        s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        s_tir.transform.ConvertBlocksToOpaque(),
        s_tir.transform.LiftThreadBinding(),
        s_tir.transform.ManifestSharedMemoryLocalStage(),
        s_tir.transform.CompactBufferAllocation(),
        s_tir.transform.LowerAutoCopy(),
        s_tir.transform.UnifyThreadBinding(),
        s_tir.transform.LowerMatchBuffer(),
        s_tir.transform.LowerOpaqueBlock(),
        tirx.transform.FlattenBuffer(),
        tirx.transform.NarrowDataType(32),
        tirx.transform.VectorizeLoop(True),
        s_tir.transform.InjectVirtualThread(),
        tirx.transform.StorageRewrite(),
        s_tir.transform.LowerThreadAllreduce(),
        s_tir.transform.MergeSharedMemoryAllocations(),
    ]
    return tvm.transform.Sequential(passes)(tir_mod)


def _shared_by_scope(func) -> tuple[int, int]:
    """(static, dynamic) shared memory bytes of one kernel."""
    from tvm.s_tir.analysis import calculate_allocated_bytes

    per_scope = {str(k): int(v) for k, v in calculate_allocated_bytes(func).get("main", {}).items()}
    return per_scope.get("shared", 0), per_scope.get("shared.dyn", 0)


def _shared_bytes(func) -> int:
    return sum(_shared_by_scope(func))


def _threads_per_block(func) -> int:
    """Smallest max_threads_per_block the verifier accepts for this kernel (binary search)."""
    from tvm.s_tir.analysis import verify_gpu_code

    lo, hi = 1, 1 << 24
    if not verify_gpu_code(func, {"max_threads_per_block": hi}):
        return hi
    while lo < hi:
        mid = (lo + hi) // 2
        if verify_gpu_code(func, {"max_threads_per_block": mid}):
            hi = mid
        else:
            lo = mid + 1
    return lo


def kernel_usage(func) -> dict[str, int]:
    return {"threads_per_block": _threads_per_block(func),
            "shared_memory_bytes": _shared_bytes(func)}


def upper_bounds(mod) -> dict[str, int]:
    """{symbol: upper bound} that the importer attached to main (symbolic dims), else {}."""
    for gv, func in mod.functions.items():
        attrs = getattr(func, "attrs", None)
        if gv.name_hint == "main" and attrs is not None and "tir_var_upper_bound" in attrs:
            return {str(k): int(v) for k, v in attrs["tir_var_upper_bound"].items()}
    return {}


def _at_upper_bounds(func, bounds: dict[str, int]):
    """The kernel specialised with its symbols at their upper bounds: a kernel with dims in
    symbols is checked against the chip's limits at the largest shape it serves (TVM's
    verifier also asserts on a symbolic launch extent). Buffers whose shape holds a symbol
    are re-declared with the bound; TIR's specialize carries the values everywhere."""
    from tvm import tirx

    if not bounds:
        return func
    param_map, seen = {}, set()
    for param in func.params:
        ty = param.ty
        if isinstance(ty, tirx.buffer.BufferType):
            shape, changed = [], False
            for d in ty.shape:   # unchanged dims must stay the very same expressions
                name = str(d.name) if isinstance(d, tirx.Var) else None
                if name in bounds and name not in seen:
                    shape.append(tirx.const(bounds[name], _int_dtype(d)))
                    seen.add(name)
                    changed = True
                else:
                    shape.append(d)
            if changed:
                param_map[param] = tirx.decl_buffer(shape, ty.dtype, str(param.name),
                                                    elem_offset=ty.elem_offset)
        elif str(param.name) in bounds and str(param.name) not in seen:
            param_map[param] = tirx.const(bounds[str(param.name)], _int_dtype(param))
            seen.add(str(param.name))
    if not param_map:
        return func
    try:
        return func.specialize(param_map)
    except Exception:  # noqa: BLE001 - a kernel TIR cannot specialise is checked as it is
        return func


def _int_dtype(var) -> str:
    return str(getattr(var.ty, "dtype", "int64"))


def _verify(func, limits: dict, name: str, skipped: dict) -> bool:
    """verify_gpu_code, except that a kernel TVM's verifier cannot analyse (it asserts, e.g.
    on a scan whose blockIdx.x extent depends on a loop variable: TVM's GPU CumSum) is
    recorded in `skipped` as not checked, instead of failing a valid model."""
    from tvm.s_tir.analysis import verify_gpu_code

    try:
        return bool(verify_gpu_code(func, limits))
    except Exception as exc:  # noqa: BLE001 - TVM's C++ check failures
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:160]
        skipped[name] = f"TVM's GPU verifier cannot analyse this kernel ({detail})"
        return True


def check_kernel_limits(mod, chip: GpuChip, target,
                        skipped: dict | None = None) -> dict[str, dict[str, int]]:
    """Raise AnychipError naming the first kernel over a limit; return each kernel's usage.
    Kernels the verifier cannot analyse are listed in `skipped` ({kernel: why})."""
    import tvm
    from tvm import tirx
    from tvm.tirx.analysis import verify_memory

    skipped = {} if skipped is None else skipped
    bounds = upper_bounds(mod)
    kernels = {gv: _at_upper_bounds(f, bounds) for gv, f in mod.functions.items()
               if isinstance(f, tirx.PrimFunc)}
    if not kernels:
        return {}
    lowered = _lowered_for_verification(tvm.IRModule(kernels), target)
    limits = chip.limits()
    usage: dict[str, dict[str, int]] = {}
    for gv, func in sorted(lowered.functions.items(), key=lambda kv: kv[0].name_hint):
        name = gv.name_hint
        if not verify_memory(func):
            raise AnychipError(f"target '{chip.name}': kernel '{name}' has no GPU thread binding "
                               f"(no dlight rule scheduled it); report the model with "
                               f"'anychip analyze' output.")
        static, dynamic = _shared_by_scope(func)
        if static > chip.max_shared_memory_per_block:
            raise AnychipError(
                f"target '{chip.name}': kernel '{name}' declares {static} B of static shared "
                f"memory per block, over the profile's limit target.max_shared_memory_per_block="
                f"{chip.max_shared_memory_per_block}; raise it in the profile if the chip allows.")
        if static + dynamic > chip.max_dynamic_shared_memory_per_block:
            raise AnychipError(
                f"target '{chip.name}': kernel '{name}' needs {static + dynamic} B of shared "
                f"memory per block ({dynamic} B dynamic), over the profile's limit "
                f"chip.max_dynamic_shared_memory_per_block="
                f"{chip.max_dynamic_shared_memory_per_block}; raise it in the profile if the chip "
                f"allows.")
        if not _verify(func, limits, name, skipped):
            for key, limit in limits.items():
                if _verify(func, {key: limit}, name, skipped):
                    continue
                used = _shared_bytes(func) if key == "max_shared_memory_per_block" else (
                    _threads_per_block(func) if key == "max_threads_per_block" else None)
                needs = f"needs {used} {_UNITS[key]}" if used is not None else \
                    f"exceeds {limit} {_UNITS[key]}"
                raise AnychipError(
                    f"target '{chip.name}': kernel '{name}' {needs}, over the profile's limit "
                    f"{key}={limit}; raise it in the profile if the chip allows, or use a "
                    f"smaller input shape.")
            raise AnychipError(f"target '{chip.name}': kernel '{name}' breaks the profile's "
                               f"GPU limits {limits}; check the profile's target section.")
        usage[name] = {"threads_per_block": 0, "shared_memory_bytes": _shared_bytes(func)} \
            if name in skipped else kernel_usage(func)
    return usage
