"""CPU backend: TVM LLVM for the host CPU (model and features detected), executed by the Relax VM.

The lowering reads as phases (after TVM's relax/backend/cpu_generic pipeline):
1. graph: inference decomposition (batch norm becomes elementwise ops), constants folded in
   numpy, inference dropout removed, ONNX Sum as adds, batch norm folded into conv weights,
   other per-channel chains to one multiply-add, NHWC layout (oneDNN's native activation
   format, so no reorder per call; per-channel constants first given the full rank, channel
   shuffles redone on NHWC data);
2. library dispatch: conv2d and matmul with their bias / residual / activation epilogues,
   softmax, layer norm and max/average pooling go to oneDNN/MKL through torch, calls under
   4 MFLOP to torch's plain kernels (compiler/dispatch, backends/cpu/torch_library.py);
3. TVM: what is left (reshapes, transposes, elementwise glue) is legalized, fused, given the
   tuned schedules of the tuning database and simple default ones (backends/cpu/schedule.py);
   float32 exp, erf and sigmoid first become (fast_math, on unless turned off)
   vectorizable polynomials instead of scalar libm calls (backends/host/fast_math.py).

Options (anychip.compile(..., dispatch=False, layout="NCHW", parallel=True)) turn phases off
or on, for tests and for comparing against TVM's own kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

from anychip.compiler.backend import (BuildResult, CompileContext, CompileOptions, Execution,
                                      FamilyOptions, Mode, OptionalBackendHooks, option)
from anychip.backends.host.probe import (check_built_here, host_cores, host_cpu_features,
                                         host_cpu_name, host_target)
from anychip.backends.host.vm_runner import VmRunner
from anychip.compiler.dispatch import usable_cores
from anychip.compiler.errors import AnychipError
from anychip.compiler.profiles import Profile



@dataclass(frozen=True)
class CpuOptions(FamilyOptions):
    """The cpu family's options: phases to turn off or on, for tests and for comparing
    against TVM's own kernels."""

    layout: str = option("NHWC", "activation layout of convolutions", choices=("NHWC", "NCHW"))
    dispatch: bool | None = option(None, "send conv/matmul (cpu: also softmax/norms) to the "
                                         "kernel library: cpu oneDNN/MKL, cuda cuBLAS/cuDNN, "
                                         "both through torch (cpu default: chosen per model, "
                                         "see the report's `kernels`)", metavar="BOOL")
    combine_matmuls: bool = option(True, "join parallel matmuls on one input (Q/K/V)",
                                   metavar="BOOL")
    parallel: bool | None = option(None, "TVM's own kernels on all cores (default: unless "
                                         "library calls are in the graph)", metavar="BOOL")
    fast_math: bool = option(True, "float32 exp, erf, sigmoid and tanh as vectorizable "
                                   "polynomials (exp within 1.5 ulp, erf 8, sigmoid 3, tanh 7) "
                                   "instead of scalar libm calls; `anychip tune` tunes the libm "
                                   "forms",
                             metavar="BOOL")
    winograd: bool = option(True, "3x3 stride-1 convolutions TVM computes as Winograd "
                                  "F(4x4 or 2x2, 3x3) where estimated faster (a NaN/inf "
                                  "then reaches its whole output tile)", metavar="BOOL")
    torch_plugin: str | None = option(None, "the torch device plug-in (module:device) conv2d/"
                                            "matmul go through (cuda default torch:cuda; cpu "
                                            "default none: oneDNN)", metavar="MODULE:DEVICE")


def _library():
    from anychip.compiler.dispatch import get_library

    return get_library("torch-cpu")


def _plugin(plugin: str):
    """The generic torch device plug-in library (compiler/dispatch/torch_device.py) on the
    host: how a vendor plug-in is exercised without its device (tests use a stand-in)."""
    from anychip.compiler.dispatch import get_library
    from anychip.compiler.dispatch.torch_device import library_name

    return get_library(library_name(plugin))


def _has_conv2d(mod) -> bool:
    """Whether any function of `mod` calls relax.nn.conv2d (one linear walk)."""
    import tvm
    from tvm import relax

    conv = tvm.ir.Op.get("relax.nn.conv2d")
    found = []

    def visit(expr) -> None:
        if not found and isinstance(expr, relax.Call) and expr.op.same_as(conv):
            found.append(True)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
            if found:
                return True
    return False


def _to_nhwc(mod):
    """NHWC activations (OIHW weights stay: the library reorders them once). TVM's
    ConvertLayout fails on some graphs; those stay NCHW, which is slower, not wrong.
    Without a conv2d there is nothing to convert, and ConvertLayout's cost grows faster than
    the graph (a 4k-node Add chain: 20 s, 10k: over 100 s), so it is skipped."""
    from tvm import relax

    if not _has_conv2d(mod):
        return mod, "NHWC"

    from anychip.backends.host import relax_passes as passes

    _unary_ops_keep_layout()
    try:
        converted = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OIHW"]})(mod)
    except Exception as exc:  # TVM InternalError from C++
        detail = (str(exc).strip().splitlines() or ["?"])[-1][:160]
        return mod, f"NCHW (NHWC conversion failed in TVM: {detail})"
    return passes.fold_constants(passes.sink_permutes(converted)), "NHWC"


# elementwise unary ops TVM 0.27 gives no layout rule
_UNARY_WITHOUT_LAYOUT_RULE = ("relax.clip", "relax.nn.leakyrelu", "relax.nn.softplus")


def _unary_ops_keep_layout() -> None:
    """Give relax.clip, nn.leakyrelu and nn.softplus the layout rule of the other
    elementwise unary ops (their attributes name no axis): without one, ConvertLayout wraps
    each in two transposes back to NCHW, so a HardSwish (z * clip(z + 3, 0, 6) / 6), a ReLU6
    or a LeakyReLU (YOLO's activation) after an NHWC convolution became transposes per layer
    and could not join the conv's epilogue (a conv -> LeakyReLU -> conv probe: a transpose
    pair around the activation)."""
    import tvm

    rule = tvm.ir.Op.get("relax.sigmoid").get_attr("FRelaxInferLayout")
    for name in _UNARY_WITHOUT_LAYOUT_RULE:
        op = tvm.ir.Op.get(name)
        if op.get_attr("FRelaxInferLayout") is None:
            op.set_attr("FRelaxInferLayout", rule)


class CpuBackend(OptionalBackendHooks):
    family = "cpu"
    Options = CpuOptions
    fused_optimizer_update = True   # one kernel per parameter's Adam update (memory-bound)
    # fast_math's polynomials have no FLOP estimate in MetaSchedule (EstimateTIRFlops has no
    # rule for TIR's Let): tune takes the libm forms; kernels without exp/erf/sigmoid/tanh
    # are the same either way
    tuning_options = {"fast_math": False}

    def target(self, profile: Profile):
        return host_target(profile)

    def execution(self, profile: Profile) -> Execution:
        return Execution(Mode.EXECUTES, f"host CPU ({host_cpu_name()}) through TVM LLVM")

    def lower(self, mod, profile: Profile, options: CompileOptions,
              ctx: CompileContext | None = None):
        from tvm import relax

        from anychip.backends.host import relax_passes as passes
        from anychip.backends.host.conv_transpose import conv_transpose_as_conv
        from anychip.backends.host.fast_math import polynomial_exp_erf
        from anychip.backends.host.hwio import hwio_conv_weights
        from anychip.backends.host.lanes import vector_lanes
        from anychip.backends.host.narrow_conv import narrow_convs
        from anychip.backends.host.packed_weights import pack_weights
        from anychip.backends.host.split_concat import split_concat_convs
        from anychip.backends.host.widen import widen_outputs
        from anychip.backends.host.winograd import winograd_convs
        from anychip.backends.host.ieee import propagate_nan
        from anychip.backends.cpu.kernel_choice import choose_kernels
        from anychip.backends.cpu.torch_library import vector_math
        from anychip.compiler.dispatch import partition

        ctx = ctx or self.context(profile, options)
        opts: CpuOptions = ctx.options
        precision = options.precision or profile.default_precision
        if precision not in profile.precisions:
            raise AnychipError(f"target '{profile.name}' supports --precision "
                               f"{', '.join(profile.precisions)}, not '{precision}'.")
        layout = opts.layout
        target = self.target(profile)
        with target:
            mod = relax.transform.DecomposeOpsForInference()(mod)
            mod = passes.variance_as_means(mod)
            mod = relax.transform.CanonicalizeBindings()(mod)
            mod = passes.fold_constants(mod)
            mod = passes.drop_dropout(mod)
            mod = passes.sum_as_add(mod)
            mod = passes.fold_conv_affine(mod)
            mod = passes.fold_affine_chains(mod)
            if opts.combine_matmuls:
                mod = passes.combine_parallel_matmuls(mod)
            report = {"layout": layout, "dispatch": None}
            if layout == "NHWC":
                mod, report["layout"] = _to_nhwc(passes.full_rank_constants(mod))
                mod = passes.nhwc_channel_shuffle(mod)
                mod = conv_transpose_as_conv(mod)   # TVM lowers it in NCHW only
            if layout == "NHWC":   # few output channels: vectors along the output row
                mod, report["narrow_convs"] = narrow_convs(mod, vector_lanes(target))
            dispatch = opts.dispatch
            if dispatch is None:   # the library, or TVM's kernels alone (kernel_choice.py)
                # a train step keeps the library: its weight gradients are products of
                # transposed activations the GEMM schedule does not take
                if opts.torch_plugin or layout != "NHWC" or ctx.training:
                    dispatch = True
                else:
                    report["kernels"] = choose_kernels(mod, int(target.attrs["num-cores"]),
                                                       bool(opts.winograd))
                    dispatch = report["kernels"]["kernels"] == "library"
            if dispatch:
                library = _library() if not opts.torch_plugin else _plugin(opts.torch_plugin)
                if getattr(library, "transposed_operands", False):   # no transpose kernels
                    mod = passes.transpose_matmul_products(mod)
                with vector_math(bool(opts.fast_math)):
                    mod, dispatched = partition(mod, library)
                report["dispatch"] = dispatched.as_dict()
            if layout == "NHWC":   # the convolutions left to TVM: weights HWIO for gemm.py
                mod = hwio_conv_weights(mod)
                mod, report["concats_split"] = split_concat_convs(mod)
            # TVM's GEMMs: whole vectors along N
            mod, report["matmuls_widened"], report["convs_widened"] = widen_outputs(
                mod, vector_lanes(target))
            if opts.fast_math:   # (tune lowers without: `tuning_options` above)
                mod, report["fast_math"] = polynomial_exp_erf(mod)
            # NaN through relu/max/min/clip as ONNX Runtime, max pools in one kernel
            mod = propagate_nan(mod, fused_pools=True)
            if layout == "NHWC" and opts.winograd and not dispatch:   # fewer products
                mod, report["winograd_convs"] = winograd_convs(
                    mod, vector_lanes(target), opts.parallel is not False)
            # last: the passes above see plain matmul/conv2d; the panels' kernels are TE
            mod, report["weights_packed"] = pack_weights(mod, vector_lanes(target))
            mod = relax.transform.DeadCodeElimination()(mod)
        ctx.report.update(report)
        return mod

    def build(self, mod, profile: Profile, options: CompileOptions,
              ctx: CompileContext | None = None) -> BuildResult:
        from tvm import relax

        from anychip.backends.host import schedule
        from anychip.compiler.tuning import meta_schedule_database

        ctx = ctx or self.context(profile, options)
        report = {k: ctx.report[k] for k in ("layout", "dispatch", "kernels", "fast_math",
                                             "narrow_convs",
                                             "matmuls_widened", "convs_widened", "concats_split",
                                             "weights_packed")
                  if k in ctx.report}
        target = self.target(profile)
        libraries = [report["dispatch"]["library"]] if (report.get("dispatch") or {}).get(
            "total") else []
        # With library calls in the graph, TVM's own kernels stay on one thread: its thread
        # pool spinning next to the library's OpenMP threads slowed the library's convolutions
        # by a third (measured on ResNet-50); what TVM still computes there is small.
        parallel = bool(not libraries if ctx.options.parallel is None else ctx.options.parallel)
        database = meta_schedule_database(str(target))
        if database is not None:
            from anychip.compiler.tuning.tune import kernels_with_records

            try:   # a count for the report, on TVM's plain fusion; the build does not need it
                tuned = kernels_with_records(mod, target, database)
            except Exception:  # noqa: BLE001 - the build below reports its own failures
                tuned = None
            report["tuning"] = {"records": len(database.get_all_tuning_records()),
                                "kernels_tuned": tuned}
        flops: dict = {}
        executable = relax.build(mod, target, relax_pipeline=schedule.pipeline(
            target, parallel, database, flops))
        report["kernel_flops"] = flops
        return BuildResult(executable=executable,
                           precision=options.precision or profile.default_precision,
                           report={"target": str(target), **report},
                           runtime={"device": "cpu", "mcpu": target.attrs["mcpu"],
                                    "num_threads": int(target.attrs["num-cores"]),
                                    "libraries": libraries})

    def runner(self, artifact) -> VmRunner:
        return VmRunner(artifact, "cpu", self.execution(artifact.profile))

    def check_loadable(self, manifest: dict) -> None:
        check_built_here(manifest, "built for CPU")

    def cache_key_parts(self, profile: Profile) -> dict:
        """What the compile cache must key on beyond the profile: CPU and kernel library."""
        return {"mcpu": host_cpu_name(), "features": host_cpu_features(),
                "cores": usable_cores(), "library": _library().digest()}


__all__ = ["CpuBackend", "CpuOptions", "VmRunner", "host_cores", "host_cpu_features",
           "host_cpu_name"]
