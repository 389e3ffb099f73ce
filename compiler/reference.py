"""The reference: ONNX Runtime's CPU execution provider on the original ONNX model."""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict

import numpy as np
import onnx

from .errors import AnychipError, InputsRejected


def run_onnxruntime(model: onnx.ModelProto, feed: dict[str, np.ndarray], label: str) -> list[np.ndarray]:
    """Outputs in graph order. ORT's own graph optimizations are off: the reference is the model."""
    return reference_session(model, label)(feed)


def reference_session(model: onnx.ModelProto, label: str):
    """feed -> outputs in graph order, on one ONNX Runtime session (for many feeds)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), opts,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise AnychipError(f"{label}: ONNX Runtime (the reference) failed: "
                           f"{ort_error_line(exc)}") from exc

    quiet = ort.RunOptions()
    quiet.log_severity_level = 4   # a failed run is reported by the error below, once

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return [np.asarray(v) for v in session.run(None, feed, quiet)]
        except Exception as exc:
            raise InputsRejected(f"{label}: ONNX Runtime (the reference) failed: "
                               f"{ort_error_line(exc)}") from exc

    return run


# The last few reference runs, keyed by the model's digest and the inputs' bytes: a matrix
# verifies one model on several targets with the same seeded inputs, and ONNX Runtime's
# session on a large model (VGG-19: 548 MB) costs seconds per target otherwise.
_REFERENCE_RUNS: OrderedDict = OrderedDict()
_REFERENCE_RUNS_KEPT = 2


def reference_outputs(model: onnx.ModelProto, feed: dict[str, np.ndarray], label: str,
                      model_digest: str | None = None) -> list[np.ndarray]:
    """run_onnxruntime, remembered for the last few (model_digest, inputs) when the caller
    gives the model's digest (ModelSource.sha256); copies, so no caller can alter another's."""
    if model_digest is None:
        return run_onnxruntime(model, feed, label)
    h = hashlib.sha256(model_digest.encode())
    for name in sorted(feed):
        value = np.ascontiguousarray(feed[name])
        h.update(f"{name}:{value.dtype}:{value.shape}".encode())
        h.update(value.tobytes())
    key = h.hexdigest()
    if key not in _REFERENCE_RUNS:
        _REFERENCE_RUNS[key] = run_onnxruntime(model, feed, label)
        while len(_REFERENCE_RUNS) > _REFERENCE_RUNS_KEPT:
            _REFERENCE_RUNS.popitem(last=False)
    _REFERENCE_RUNS.move_to_end(key)
    return [np.array(v, copy=True) for v in _REFERENCE_RUNS[key]]


def ort_error_line(exc: Exception) -> str:
    """ORT's message without its C++ source location and signature (which push the reason past
    any sensible line length), plus what to do where the reason is a known one."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"\S+\.(?:cc|cpp|h):\d+ [\w:~<>]+\([^)]*\)\s*", "", text)[:300]
    if "IR version" in text:
        text += (" (the model's IR version is newer than this onnxruntime reads: upgrade "
                 "onnxruntime, or save the model with an older ir_version)")
    return text


def reference_refusal(source) -> str | None:
    """Why ONNX Runtime cannot run `source` (a ModelSource with static input shapes) on seeded
    inputs of its own shapes, or None (it runs, or the shapes are symbolic). Asked only after
    TVM failed on a model: where the reference refuses the model as well (a Conv over an
    input of width 0), the model is at fault and the failure is bad input (exit 2), not an
    internal error."""
    from .inputs import random_inputs

    if any(not spec.is_static for spec in source.inputs):
        return None
    try:
        run_onnxruntime(source.original, random_inputs(source.inputs), source.label)
    except AnychipError as exc:
        return str(exc).split("failed: ", 1)[-1]
    except Exception:  # noqa: BLE001 - the reference itself broke: no verdict on the model
        return None
    return None
