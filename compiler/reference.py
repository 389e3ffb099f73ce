"""The reference: ONNX Runtime's CPU execution provider on the original ONNX model."""

from __future__ import annotations

import re

import numpy as np
import onnx

from .errors import AnychipError


def run_onnxruntime(model: onnx.ModelProto, feed: dict[str, np.ndarray], label: str) -> list[np.ndarray]:
    """Outputs in graph order. ORT's own graph optimizations are off: the reference is the model."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), opts,
                                       providers=["CPUExecutionProvider"])
        return [np.asarray(v) for v in session.run(None, feed)]
    except Exception as exc:
        raise AnychipError(f"{label}: ONNX Runtime (the reference) failed: "
                           f"{ort_error_line(exc)}") from exc


def ort_error_line(exc: Exception) -> str:
    """ORT's message without its C++ source location and signature (which push the reason past
    any sensible line length), plus what to do where the reason is a known one."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"\S+\.(?:cc|cpp|h):\d+ [\w:~<>]+\([^)]*\)\s*", "", text)[:300]
    if "IR version" in text:
        text += (" (the model's IR version is newer than this onnxruntime reads: upgrade "
                 "onnxruntime, or save the model with an older ir_version)")
    return text
