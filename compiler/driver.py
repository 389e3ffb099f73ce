"""The build driver: model -> ONNX -> Relax -> backend.lower -> backend.build -> Artifact.

It knows the contract only (docs/architecture.md): which family a target belongs to is the
profile's business, what the family does with it is the backend's.
"""

from __future__ import annotations

import shutil
from typing import Any

from . import progress
from .artifact import Artifact, new_staging_dir, write_artifact
from .backend import Backend, BuildResult, CompileContext, CompileOptions, Mode
from .cache import cached_model, cached_source
from .errors import (AnychipError, InternalCompilerError, NotExecutable, error_line,
                     memory_ceiling_error, out_of_memory)
from .frontend import ModelSource, load_model
from .onnx_safety import check_profile_memory
from .importer import to_relax
from .importer_fixes import specialised_by_safe_name
from .passes import target_neutral_passes
from .profiles import Profile
from .reference import reference_refusal
from .registry import get_backend, get_profile


def _tvm_failure(stage: str, target: str, exc: Exception) -> AnychipError:
    """An error raised inside TVM on a checked model: internal (exit 1), not bad input."""
    if out_of_memory(exc):
        return memory_ceiling_error(stage, target)
    detail = error_line(exc)
    return InternalCompilerError(f"target '{target}': {stage} failed: {detail}. Rerun with "
                                 f"--debug for the trace, or try 'anychip analyze'.")


def tvm_sequential(passes: list):
    import tvm

    return tvm.transform.Sequential(passes)


def neutral_relax(source: ModelSource):
    """The Relax module every backend's `lower` receives: imported, then the target-neutral
    passes. Compile and tune both start here, so tuned workloads are the compiled ones."""
    return tvm_sequential(target_neutral_passes())(to_relax(source))


def source_from_proto(proto, label: str, specialise: dict | None = None) -> ModelSource:
    """A ModelSource for an ONNX model a backend rewrote (its `prepare_onnx`): its names are
    already C-safe, its input and output dtypes are the rewritten ones (a cast may change
    them), and `specialise` ({input name: value}) carries the values the original import
    specialised, so both imports fold the same inputs."""
    import numpy as np
    from onnx import helper

    from .frontend import TensorSpec
    from .importer_fixes import SPECIALISE_KEY

    inits = {i.name for i in proto.graph.initializer}

    def spec(vi) -> TensorSpec:
        dims = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)).name
        return TensorSpec(vi.name, vi.name, dims, dtype)

    return ModelSource(label, proto, proto,
                       [spec(vi) for vi in proto.graph.input if vi.name not in inits],
                       [spec(vi) for vi in proto.graph.output], "",
                       {SPECIALISE_KEY: dict(specialise)} if specialise else {})


def new_context(backend: Backend, profile: Profile, options: CompileOptions,
                source: ModelSource | None = None, training: bool = False) -> CompileContext:
    """The driver's context for one compile: the family's options validated (an unknown key
    is an error here, before any work), the model and the values the importer specialised."""
    ctx = backend.context(profile, options, training=training)
    if source is not None:
        ctx.label = source.label
        ctx.model = source.proto
        ctx.specialised = specialised_by_safe_name(source)
    return ctx


def import_for(backend: Backend, source: ModelSource, profile: Profile,
               ctx: CompileContext):
    """ONNX -> the Relax module `lower` receives: through the family's `prepare_onnx` when it
    rewrites the ONNX model itself, so that the model is imported once either way."""
    with ctx.step("prepare_onnx"):
        prepared = backend.prepare_onnx(source.proto, profile, ctx.options, ctx)
    with ctx.step("import"):
        if prepared is None:
            return neutral_relax(source)
        return neutral_relax(source_from_proto(prepared, source.label, ctx.specialised))


def lower_and_build(backend: Backend, mod, profile: Profile, options: CompileOptions,
                    ctx: CompileContext) -> BuildResult:
    """`lower` (or `lower_train_step`) then `build`, timed; the result's report is the
    context's report plus what `build` returned, with the step timings (`steps_s`). Inference
    and train steps both go through here. TVM's errors are left to the caller to word."""
    lower = backend.lower_train_step if ctx.training else backend.lower
    native: list[dict] = []
    with ctx.step("lower"), progress.native_messages(native):
        lowered = lower(mod, profile, options, ctx)
    with ctx.step("build"), progress.native_messages(native):
        result = backend.build(lowered, profile, options, ctx)
    if native:   # TVM's per-kernel log lines, summarised instead of dumped on stderr
        ctx.report["native_messages"] = native
        progress.note(f"anychip: TVM logged {sum(m['count'] for m in native)} line(s) while "
                      f"building ({native[0]['message'][:80]}...); see report.json "
                      f"native_messages")
    result.report = {**ctx.report, **result.report, "steps_s": dict(ctx.timings)}
    return result


def compile_source(source: ModelSource, target: str, options: CompileOptions) -> Artifact:
    """Compile an already loaded model for one target."""
    profile = get_profile(target)
    backend = get_backend(profile)
    execution = backend.execution(profile)
    if execution.mode is Mode.UNAVAILABLE:
        raise NotExecutable(f"target '{target}' cannot compile here: {execution.why}.")
    check_profile_memory(source, profile)
    if backend.static_shapes and any(not s.is_static for s in source.inputs):
        from .gears import compile_gears  # one static program per gear (compiler/gears.py)

        return compile_gears(source, target, options, compile_source, profile, execution)
    ctx = new_context(backend, profile, options, source)
    try:
        with progress.stage(f"compile {source.label} for {target}"):
            mod = import_for(backend, source, profile, ctx)
            result = lower_and_build(backend, mod, profile, options, ctx)
    except AnychipError:
        raise
    except Exception as exc:  # TVM raises its own error types from C++
        refused = None if out_of_memory(exc) else reference_refusal(source)
        if refused is not None:
            why = error_line(exc).rstrip(".")
            raise AnychipError(f"{source.label}: ONNX Runtime (the reference) cannot run this "
                               f"model at its input shapes either ({refused}); TVM failed on "
                               f"it: {why}. Fix the model or give other shapes.") from exc
        raise _tvm_failure("compilation", target, exc) from exc
    staging = new_staging_dir()
    try:
        manifest = write_artifact(staging, result, source, profile, options, execution)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Artifact(staging, manifest, temporary=True)


compile_source = cached_source(compile_source)  # compile cache (compiler/cache.py)


def compile_model(model: Any, target: str = "cpu", example_inputs: tuple | None = None,
                  precision: str | None = None, shapes: dict | None = None,
                  **extra: Any) -> Artifact:
    """anychip.compile: any model form, one target, keyword options passed to the backend.
    `dims={"seq": (1, 2048)}` bounds symbolic dims (docs/dynamic-shapes.md)."""
    shapes = {k: tuple(int(d) for d in v) for k, v in (shapes or {}).items()}
    dims, gears = extra.pop("dims", None), extra.pop("gears", None)
    hot = bool(extra.pop("hot", False))
    source = load_model(model, example_inputs, shapes, dims)
    options = CompileOptions(precision=precision, shapes=shapes, extra=dict(extra), hot=hot,
                             dims=dict(source.extra.get("dims") or {}),
                             gears=normalise_gears(gears))
    return compile_source(source, target, options)


def normalise_gears(gears: dict | None) -> dict[str, tuple[int, ...]]:
    """{symbol: sorted distinct positive sizes}; one line for anything else."""
    out = {}
    for name, values in (gears or {}).items():
        try:
            sizes = tuple(sorted({int(v) for v in values}))
        except (TypeError, ValueError):
            raise AnychipError(f"gears['{name}'] must be a list of sizes, got {values!r}.") \
                from None
        if not sizes or sizes[0] < 1:
            raise AnychipError(f"gears['{name}'] must be sizes >= 1, got {values!r}.")
        out[str(name)] = sizes
    return out


compile_model = cached_model(compile_model)  # cache hit before the frontend runs
