"""The build driver: model -> ONNX -> Relax -> backend.lower -> backend.build -> Artifact.

It knows the contract only (design.md §4): which family a target belongs to is the
profile's business, what the family does with it is the backend's.
"""

from __future__ import annotations

import shutil
from typing import Any

from .artifact import Artifact, new_staging_dir, write_artifact
from .backend import CompileOptions, Mode
from .cache import cached_model, cached_source
from .errors import AnychipError, NotExecutable
from .frontend import ModelSource, load_model
from .importer import to_relax
from .importer_fixes import specialised_by_safe_name
from .passes import target_neutral_passes
from .registry import get_backend, get_profile


def _tvm_failure(stage: str, target: str, exc: Exception) -> AnychipError:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    detail = (lines[-1] if lines else type(exc).__name__)[:300]
    return AnychipError(f"target '{target}': {stage} failed: {detail}. Rerun with --debug for "
                        f"the trace, or try 'anychip analyze'.")


def tvm_sequential(passes: list):
    import tvm

    return tvm.transform.Sequential(passes)


def neutral_relax(source: ModelSource):
    """The Relax module every backend's `lower` receives: imported, then the target-neutral
    passes. Compile and tune both start here, so tuned workloads are the compiled ones."""
    return tvm_sequential(target_neutral_passes())(to_relax(source))


def compile_source(source: ModelSource, target: str, options: CompileOptions) -> Artifact:
    """Compile an already loaded model for one target."""
    profile = get_profile(target)
    backend = get_backend(profile)
    execution = backend.execution(profile)
    if execution.mode is Mode.UNAVAILABLE:
        raise NotExecutable(f"target '{target}' cannot compile here: {execution.why}.")
    options.extra.setdefault("onnx_model", source.proto)
    # a tuple of (input, value) pairs: kept out of options.as_dict (manifest, cache key)
    options.extra.setdefault("onnx_specialise", tuple(specialised_by_safe_name(source).items()))
    mod = neutral_relax(source)
    try:
        lowered = backend.lower(mod, profile, options)
        result = backend.build(lowered, profile, options)
    except AnychipError:
        raise
    except Exception as exc:  # TVM raises its own error types from C++
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
    """anychip.compile: any model form, one target, keyword options passed to the backend."""
    shapes = {k: tuple(int(d) for d in v) for k, v in (shapes or {}).items()}
    source = load_model(model, example_inputs, shapes)
    options = CompileOptions(precision=precision, shapes=shapes, extra=dict(extra))
    return compile_source(source, target, options)


compile_model = cached_model(compile_model)  # cache hit before the frontend runs
