"""The `npu` backend: Ascend-style chips, compiled through TVM and run by a functional simulator.

`lower` reads as phases:
1. placement and precision per ONNX node, as ATC decides them (placement.py);
2. the precision-annotated graph (precision.py), imported into Relax (lowering.py);
3. graph passes, float32 accumulation of float16 reductions, and the cube: matmul and conv
   as tiled, tensorized TIR kernels staged through L1/L0A/L0B/L0C/UB (cube.py);
`build` compiles the program for the host through LLVM (vector.py schedules the rest), adds
the cost model's estimate (cost.py) and the files ATC needs for the real chip (atc.py).

A train step has no ONNX graph: `lower_train_step` cube-tiles its Relax module directly
(forward and backward matmuls/convolutions) in ATC's training modes, and its estimate is made
from the lowered program's kernels (cost.train_step_estimate).

Phase 1 is `prepare_onnx` in the backend contract: ATC's precision decisions are per ONNX node,
so this family rewrites the ONNX model and the driver imports the rewritten one (once).
"""

from __future__ import annotations

from dataclasses import dataclass

from anychip.backends.host import relax_passes
from anychip.backends.host.probe import check_built_here, host_cores, host_cpu_name, host_target
from anychip.backends.host.vm_runner import VmRunner
from anychip.compiler.backend import (BuildResult, CompileContext, CompileOptions, Execution,
                                      FamilyOptions, Mode, OptionalBackendHooks, option)
from anychip.compiler.errors import AnychipError
from anychip.compiler.profiles import Profile

from . import atc, cost
from .chip import CHIP_SCHEMA, Chip
from .placement import (NodePlacement, place_nodes, precision_used, resolve_precision_mode,
                        summary)

SIMULATOR = "functional simulator on the host CPU (TVM LLVM, with the cube's numerics)"
ASSUMPTIONS = [
    "cube: float16/bfloat16 inputs, float32 accumulation, result cast to the op's dtype "
    "(docs/hardware.md §1.1)",
    "vector reductions (softmax, layer norm, mean, sum, average pooling) over float16 "
    "accumulate in float32 and round the result [U]",
    "a constant bias after a float16 conv2d/matmul is added to the float32 accumulator "
    "before the one rounding (bias as L0C's initial value / 910B's bias table) [U]",
    "Conv+BatchNorm and per-channel Scale (Mul/Add by constants) are folded in float32 before "
    "float16 conversion, as ATC's fusion passes do",
    "LRN in float16 is computed in float32 on float16-rounded inputs (TVM's converter takes "
    "float32 only)",
]


# Precision modes a train step is lowered in. must_keep_origin_dtype: float32 stays float32
# (910B's cube takes it). allow_fp32_to_fp16: float32 stays where the unit has it (the vector
# unit), the cube's operands are rounded to float16 where its cube lacks float32 (910, 310P).
TRAIN_STEP_MODES = ("must_keep_origin_dtype", "allow_fp32_to_fp16")

# ctx.scratch key: (the model prepare_onnx fused, the fused model)
FUSED = "npu.fused_model"

# Ops a cube could take that CubeLowering may leave as vector kernels (a grouped
# conv2d_transpose, a packed layout, a dtype the cube lacks): counted in a train step's report.
CUBE_SHAPED_OPS = ("relax.matmul", "relax.nn.conv2d", "relax.nn.conv2d_transpose")


def _calls_of(mod, names) -> dict[str, int]:
    """How many calls the module's Relax functions make of each name in `names`: an operator
    (relax.matmul) or a PrimFunc reached through call_tir (a cube kernel)."""
    import tvm
    from tvm import relax

    counts: dict[str, int] = {}

    def visit(expr):
        if not (isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op)):
            return
        name = expr.op.name
        if name == "relax.call_tir" and isinstance(expr.args[0], tvm.ir.GlobalVar):
            name = expr.args[0].name_hint
        if name in names:
            counts[name] = counts.get(name, 0) + 1

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return counts


@dataclass(frozen=True)
class NpuOptions(FamilyOptions):
    """The npu family's options, as CANN's ATC names them."""

    precision_mode: str | None = option(
        None, "precision mode, as CANN's ATC (force_fp16, allow_fp32_to_fp16, "
              "must_keep_origin_dtype, allow_mix_precision, allow_mix_precision_bf16; "
              "default: the chip's)", metavar="MODE")
    cube_tile: tuple | list | None = option(None, "force the cube tile [m1, n1, k1, k0]",
                                            cli=False)
    quick_build: bool | None = option(
        None, "compile the simulator's host code without LLVM optimisation (default: on, "
              "except for train steps and other artifacts run many times)")


class NpuBackend(OptionalBackendHooks):
    family = "npu"
    # static tiles and buffers: a symbolic dim is compiled as gears (compiler/gears.py)
    static_shapes = True
    chip_schema = CHIP_SCHEMA
    Options = NpuOptions

    def target(self, profile: Profile):
        return host_target(profile)     # the simulator runs on the host CPU

    def execution(self, profile: Profile) -> Execution:
        if atc.cann_available():
            return Execution(Mode.EXECUTES, "ONNX Runtime's CANN execution provider "
                                            "(onnxruntime-cann) on the legalised ONNX model")
        return Execution(Mode.SIMULATES, f"{SIMULATOR}; onnxruntime-cann is not installed, so "
                                         f"no Ascend device is used")

    # -- prepare_onnx and lower -------------------------------------------------------------
    def prepare_onnx(self, model, profile: Profile, opts: NpuOptions, ctx: CompileContext):
        """Phase 1: ATC's decisions per ONNX node (fusion, placement, precision casts); the
        driver imports the precision-annotated model this returns."""
        from .fusion import fuse_channel_affine
        from .precision import simulated_model

        chip = Chip.of(profile)
        label = model.graph.name or "model"
        mode = resolve_precision_mode(chip, opts.as_dict(), ctx.precision, False)
        source = model
        model, fused = fuse_channel_affine(model)     # as ATC does, before any dtype change
        ctx.scratch[FUSED] = (source, model)          # build's cost estimate reads it
        placements = place_nodes(model, chip, mode)
        saturated: list[dict] = []
        simulated = simulated_model(model, placements, label, saturated)
        absorbed = [NodePlacement(f.name, f.op_type, "fused", f.reason, None, None)
                    for f in fused]
        ctx.report.update({
            "precision_mode": mode,
            "precision": precision_used(mode, placements),
            "placement": {**summary(placements + absorbed),
                          "nodes": [p.as_dict() for p in placements + absorbed]},
        })
        if saturated:   # e.g. an attention mask's -1e9 becomes -inf in float16
            ctx.report["saturated_constants"] = saturated
        return simulated

    def lower(self, mod, profile: Profile, options: CompileOptions,
              ctx: CompileContext | None = None):
        from tvm import relax

        from anychip.backends.host.ieee import propagate_nan

        from .lowering import (CubeLowering, cube_bias_in_fp32, fp32_reductions, graph_passes,
                               requested_tile)

        ctx = ctx or self.context(profile, options)
        if "placement" not in ctx.report:
            raise AnychipError(f"target '{profile.name}': the npu family lowers the model its "
                               f"prepare_onnx placed; compile through anychip.compile.")
        chip = Chip.of(profile)
        cube = CubeLowering(chip, requested_tile(ctx.options.as_dict()))
        with self.target(profile):
            mod = graph_passes(mod)
            mod = propagate_nan(mod)   # NaN through relu/max/min/clip as ONNX Runtime
            mod = fp32_reductions(mod)
            mod = cube_bias_in_fp32(mod)
            mod = cube(mod)
            mod = relax_passes.fold_constants(mod)   # weight layouts for the cube, at compile time
            mod = relax.transform.DeadCodeElimination()(mod)
        ctx.report.update({"cube_kernels": cube.kernels, "assumptions": ASSUMPTIONS})
        return mod

    def lower_train_step(self, mod, profile: Profile, options: CompileOptions,
                         ctx: CompileContext):
        """The train step (forward, gradients, optimizer: one Relax module, no ONNX graph)
        in a precision mode of TRAIN_STEP_MODES: every matmul and conv2d the cube can take
        (forward and backward alike) becomes a tiled cube kernel, the rest vector kernels,
        all built for the simulator as inference is. Modes that round ops to float16 per ONNX
        node (placement.py) need the graph a train step has not; they raise
        NotImplementedError and the trainer builds the step for the host, saying so."""
        from tvm import relax

        from .lowering import CubeLowering, requested_tile

        chip = Chip.of(profile)
        mode = resolve_precision_mode(chip, ctx.options.as_dict(), options.precision, True)
        if mode not in TRAIN_STEP_MODES:
            raise NotImplementedError(f"npu train steps are lowered in "
                                      f"{' or '.join(TRAIN_STEP_MODES)} only; precision mode "
                                      f"'{mode}' changes dtypes per ONNX node, which a train "
                                      f"step does not have")
        reduce = mode == "allow_fp32_to_fp16" and "float32" not in chip.cube_dtypes
        cube = CubeLowering(chip, requested_tile(ctx.options.as_dict()),
                            fp32_inputs_as="float16" if reduce else None)
        with self.target(profile):
            mod = relax.transform.CanonicalizeBindings()(mod)
            mod = cube(mod)
            mod = relax.transform.DeadCodeElimination()(mod)
        on_cube = sorted({k["in_dtype"] for k in cube.kernels.values()})
        left = _calls_of(mod, CUBE_SHAPED_OPS)
        ctx.report.update({
            "precision_mode": mode,
            "precision": "fp16" if reduce and cube.kernels else "fp32",
            "train_step": {"cube_kernels": len(cube.kernels), "cube_dtypes": on_cube,
                           "cube_calls": _calls_of(mod, set(cube.kernels)),
                           "matmul_conv_on_vector_unit": left,
                           "note": "matmul/conv2d in a cube dtype on the cube (forward and "
                                   "backward); everything else on the vector unit"},
            "cube_kernels": cube.kernels,
            "assumptions": ASSUMPTIONS,
        })
        return mod

    # -- build -----------------------------------------------------------------------------
    def build(self, mod, profile: Profile, options: CompileOptions,
              ctx: CompileContext | None = None) -> BuildResult:
        from tvm import relax

        from .fusion import fuse_channel_affine
        from .lowering import requested_tile
        from .vector import pipeline

        ctx = ctx or self.context(profile, options)
        chip = Chip.of(profile)
        report = dict(ctx.report)
        target = self.target(profile)
        quick = ctx.options.quick_build
        if quick if quick is not None else not (ctx.training or options.hot):
            target = unoptimised(target)
            report["simulator_llvm_opt_level"] = 0
        vector_kernels: list[dict] = []
        executable = relax.build(mod, target, relax_pipeline=pipeline(target, chip,
                                                                     vector_kernels))
        report["vector_kernels"] = vector_kernels
        model = ctx.model
        report["simulator"] = SIMULATOR
        fused_model = None
        if model is not None:   # the fused model of prepare_onnx, unless it fused another
            source, fused_model = ctx.scratch.get(FUSED, (None, None))
            if source is not model:
                fused_model = fuse_channel_affine(model)[0]
        if "train_step" in report:
            report["estimate"] = cost.train_step_estimate(
                chip, report.get("cube_kernels", {}), report["train_step"]["cube_calls"],
                vector_kernels)
        else:
            report["estimate"] = cost.estimate(fused_model, chip, report,
                                               requested_tile(ctx.options.as_dict()))
        device_sources, report["atc"] = atc.device_files(model, chip, profile, report)
        return BuildResult(executable=executable, precision=report.get("precision", "fp16"),
                           device_sources=device_sources, report=report,
                           runtime={"device": "cpu", "mcpu": target.attrs["mcpu"],
                                    "num_threads": int(target.attrs["num-cores"]),
                                    "libraries": [],
                                    "precision_mode": report.get("precision_mode")})

    # -- run -------------------------------------------------------------------------------
    def runner(self, artifact):
        execution = self.execution(artifact.profile)
        if execution.mode is Mode.EXECUTES:
            return atc.CannRunner(artifact, execution)
        return VmRunner(artifact, "cpu", execution)

    def check_loadable(self, manifest: dict) -> None:
        check_built_here(manifest, "built to simulate on CPU")

    def render(self, report: dict, top: int = 10) -> list[tuple[str, str]]:
        from .report_text import sections

        return sections(report, top)

    def gear_summary(self, report: dict) -> dict:
        from .report_text import gear_summary

        return gear_summary(report)

    def conformance_options(self, profile: Profile) -> dict:
        """The operator suite keeps the model's dtypes (ATC's must_keep_origin_dtype): it
        measures what the backend implements, not how float16 rounds; `anychip verify` and
        `anychip matrix` measure the default force_fp16 numerics on real models."""
        return {"precision_mode": "must_keep_origin_dtype"}

    def cache_key_parts(self, profile: Profile) -> dict:
        return {"mcpu": host_cpu_name(), "cores": host_cores(), "cann": atc.cann_available()}

    def doctor(self) -> list[dict]:
        return atc.doctor()


def unoptimised(target):
    """`target` with LLVM's opt-level 0. The simulator's host code is most of a simulated
    compile (LLVM took 26 of zoo:mobilenet_v3's 35 s on ascend-910 at -O3) and runs once per
    verify; at -O0 the compile took 16 s and the simulation 0.8 s instead of 0.4. Neither level
    uses fast-math, so the simulated fp16 numerics are the same (equal max abs error vs ONNX
    Runtime on bert and mobilenet_v3; tests/backends/npu checks it)."""
    import tvm

    return tvm.target.Target({**dict(target.export()), "opt-level": 0})
