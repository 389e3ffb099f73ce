"""The GPU pipeline, phase by phase (after TVM's relax/backend/gpu_generic):

  precision -> library dispatch -> legalize + fuse + dlight schedules -> limits check
  -> (build) dataflow lowering -> finalize -> TVM codegen for the profile's target

`lower_for_gpu` runs everything up to the limits check, so the module it returns has every
kernel scheduled and checked; `relax_build` finishes it without legalizing again.
"""

from __future__ import annotations

import ctypes.util
import time

from .chip import GpuChip
from .compound_dims import isolate_compound_dims
from .limits import check_kernel_limits, upper_bounds
from .precision import PRECISION_USED, apply_float64_policy, precision_passes

from anychip.compiler.errors import AnychipError

def cublas_available(chip: GpuChip) -> tuple[bool, str]:
    """cuBLAS dispatch needs TVM's cuBLAS codegen in this TVM build and libcublas on this host."""
    import tvm

    if chip.dialect != "cuda":
        return False, f"no BLAS library dispatch for the {chip.dialect} dialect"
    if tvm.get_global_func("relax.ext.cublas", allow_missing=True) is None:
        return False, "this TVM build has no cuBLAS codegen (relax.ext.cublas)"
    if ctypes.util.find_library("cublas") is None:
        return False, "libcublas is not installed"
    return True, "cuBLAS for matmul"


def library_dispatch_passes(chip: GpuChip, use_cublas: bool) -> list:
    from tvm import relax

    passes = [relax.backend.DispatchSampling(), relax.backend.DispatchSortScan()]
    if use_cublas:
        from tvm.relax.backend.cuda.cublas import partition_for_cublas

        passes = [_as_pass(partition_for_cublas, "PartitionForCublas"),
                  relax.transform.RunCodegen()] + passes
    return passes


def legalize_passes(schedule: bool = True) -> list:
    """Legalize, fuse, and give every kernel a GPU schedule (Fallback catches the rest);
    `schedule=False` stops before scheduling (the kernels as plain loops, which the host can
    build: the reference for executing the scheduled ones, backends/gpu/kernel_run.py)."""
    from tvm import relax

    fuse = [
        relax.transform.DecomposeOpsForInference(),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]
    return fuse + schedule_passes() if schedule else fuse


def schedule_passes() -> list:
    import tvm
    from tvm.s_tir import dlight as dl

    # dlight's gpu.Reduction is left out: on shufflenet's grouped 1x1 conv + batch norm it
    # keeps the reduced values in a thread-private array and reads them back from other threads
    # (wrong results on every GPU dialect; found by executing the kernels on PoCL,
    # backends/gpu/kernel_run.py). GeneralReduction schedules those reductions correctly.
    # GEMV asserts (instead of declining) on a reduction whose kept axis has extent 1, e.g. the
    # [B, T, 1] sums in a layer norm's gradient: it declines there, the next rule schedules it.
    # Matmul asserts likewise ("consumers of the cache-write stage that are not properly
    # inlined") on a matmul with a fused non-inlinable epilogue under a symbolic batch
    # (EfficientNet's squeeze-excite, tests/models/test_corpus_dynamic.py): it declines too.
    return [dl.ApplyDefaultSchedule(_declining(dl.gpu.Matmul()), _declining(dl.gpu.GEMV()),
                                    dl.gpu.GeneralReduction(), dl.gpu.Fallback()),
            tvm.relax.transform.DeadCodeElimination()]


def _declining(rule):
    """`rule`, declining (None) where it raises AssertionError instead of scheduling."""
    from tvm.s_tir import dlight as dl

    class Declining(dl.ScheduleRule):
        def apply(self, func, target, tunable):
            try:
                return rule.apply(func, target, tunable)
            except AssertionError:
                return None

    return Declining()


def build_passes(cuda_graph: bool = False) -> list:
    """What relax.build still runs on a lowered module: dataflow lowering and finalization;
    `cuda_graph`: Relax's RewriteCUDAGraph after memory planning (as TVM's CUDA pipeline
    places it), so static runs of kernels launch as one captured CUDA graph."""
    from tvm import relax
    from tvm.relax.backend import gpu_generic

    finalize = gpu_generic.finalize_passes(None)
    if cuda_graph:
        finalize = finalize[:1] + [relax.transform.RewriteCUDAGraph()] + finalize[1:]
    return gpu_generic.dataflow_lower_passes(None) + finalize


def _as_pass(function, name: str):
    import tvm

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod, _ctx):
        return function(mod)

    return _pass


def prepare_for_library(mod):
    """Batch norm decomposed and folded into the convolution's weights and bias, constants
    folded, parallel matmuls on one input joined: what lets conv2d + bias + relu reach a
    library as one call, and Q/K/V as one GEMM (the cpu family's graph phase,
    backends/cpu/backend.py)."""
    from tvm import relax

    from anychip.backends.host import relax_passes as passes

    mod = relax.transform.DecomposeOpsForInference()(mod)
    mod = relax.transform.CanonicalizeBindings()(mod)
    mod = passes.fold_constants(mod)
    mod = passes.drop_dropout(mod)
    mod = passes.sum_as_add(mod)
    mod = passes.fold_conv_affine(mod)
    return passes.combine_parallel_matmuls(mod)   # Q/K/V: one library GEMM instead of three


def fold_library_casts(mod):
    """After the fp16/bf16 precision passes, for a library that takes every matmul: a cast of
    a constant becomes the cast constant (the bias of a dense layer), and `astype(matmul(a, b,
    out_dtype=float32), t)` with a, b of dtype t becomes `matmul(a, b, out_dtype=t)` (the
    library accumulates in float32 either way), so that the bias / gelu / residual epilogue
    meets its matmul again and goes to the library with it."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from anychip.compiler.relax_info import dtype_of, known_shape

    astype, matmul = tvm.ir.Op.get("relax.astype"), tvm.ir.Op.get("relax.matmul")

    @mutator
    class FoldCasts(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not (isinstance(call.op, tvm.ir.Op) and call.op.same_as(astype)):
                return call
            target, inner = str(call.attrs.dtype), call.args[0]
            if isinstance(inner, tvm.ir.expr.GenericConst) and target in ("float16", "float32"):
                return relax.const(inner.value.numpy().astype(target), target)
            value = self.lookup_binding(inner) if isinstance(inner, relax.Var) else None
            # only matmuls the library takes (2-D and up): a TVM kernel would accumulate in t
            if (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op)
                    and value.op.same_as(matmul) and target in ("float16", "bfloat16")
                    and all(dtype_of(a) == target and len(known_shape(a) or ()) >= 2
                            for a in value.args)):
                return relax.op.matmul(value.args[0], value.args[1], out_dtype=target)
            return call

    for gvar, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            mod[gvar] = FoldCasts(mod).visit_expr(func)
    return relax.transform.DeadCodeElimination()(mod)


def lower_for_gpu(mod, profile, chip: GpuChip, precision: str,
                  library=None) -> tuple[object, dict]:
    """Target-neutral Relax -> scheduled, limit-checked Relax; returns (module, report).

    `library` (a compiler.dispatch Library, or None): conv2d and matmul patterns it accepts
    become calls into it after the precision passes; report["dispatch"] says what went there
    and what stayed in TVM kernels."""
    import tvm

    if precision not in profile.precisions:
        raise AnychipError(f"target '{profile.name}' supports --precision "
                           f"{', '.join(profile.precisions)}, not '{precision}'.")
    target = chip.target()
    started = time.perf_counter()
    mod, notes = apply_float64_policy(mod, profile.name, chip.float64)
    mod, isolated = isolate_compound_dims(mod)   # dlight fails on reductions over `s - 1`
    use_cublas, dispatch_why = cublas_available(chip)
    dispatched = None
    if library is not None:
        from anychip.backends.host import relax_passes as host_passes
        from anychip.compiler.dispatch import partition

        with target, tvm.transform.PassContext(opt_level=3):
            mod = prepare_for_library(mod)
            mod = tvm.transform.Sequential(precision_passes(precision))(mod)
            mod = host_passes.fold_constants(mod)
            if precision in ("fp16", "bf16"):
                mod = fold_library_casts(mod)
            mod, dispatched = partition(mod, library)
        use_cublas, dispatch_why = False, f"{library.name} through DLPack packed functions"
        passes = library_dispatch_passes(chip, False) + legalize_passes()
    else:
        passes = (precision_passes(precision) + library_dispatch_passes(chip, use_cublas)
                  + legalize_passes())
    with target, tvm.transform.PassContext(opt_level=3):
        mod = tvm.transform.Sequential(passes)(mod)
    scheduled = time.perf_counter()
    unverified: dict = {}
    usage = check_kernel_limits(mod, chip, target, unverified)
    report = {
        "precision_requested": precision,
        # tf32 is really used when a library multiplies (TVM's own kernels stay fp32)
        "precision_used": ("tf32" if precision == "tf32" and dispatched and dispatched.total
                           else PRECISION_USED[precision]),
        "library_dispatch": (dispatch_why if use_cublas or dispatched is not None
                             else f"none: {dispatch_why}"),
        "dispatch": dispatched.as_dict() if dispatched is not None else None,
        "schedule": "TVM dlight GPU rules: Matmul, GEMV, GeneralReduction, Fallback",
        "limits": chip.limits() | {"thread_warp_size": chip.warp_size},
        "kernels": len(usage),
        "compound_dims_isolated": {k: str(v) for k, v in isolated.items()},
        "max_threads_per_block_used": max((u["threads_per_block"] for u in usage.values()),
                                          default=0),
        "max_shared_memory_bytes_used": max((u["shared_memory_bytes"] for u in usage.values()),
                                            default=0),
        "timings_s": {"schedule": round(scheduled - started, 3),
                      "limits_check": round(time.perf_counter() - scheduled, 3)},
        "warnings": notes,
    }
    if unverified:   # kernels TVM's GPU verifier could not analyse (limits.py _verify)
        report["kernels_not_limit_checked"] = unverified
    symbols = upper_bounds(mod)
    if symbols:
        report["limits_checked_at_upper_bounds"] = symbols
    if precision == "tf32" and not (dispatched and dispatched.total):
        report["warnings"] = notes + ["tf32 requested: TVM-generated kernels multiply in fp32 "
                                      "(TF32 tensor cores need a library), so fp32 is used."]
    return mod, report


def relax_build(mod, chip: GpuChip, cuda_graph: bool = False):
    """Build a module from lower_for_gpu into a TVM executable for the chip's target."""
    import tvm
    from tvm import relax

    target = chip.target()
    config = {"relax.backend.use_cuda_graph": True} if cuda_graph else {}
    with tvm.transform.PassContext(opt_level=3, config=config):
        return relax.build(mod, target, relax_pipeline=tvm.transform.Sequential(
            build_passes(cuda_graph)))
