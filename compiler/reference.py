"""The reference: ONNX Runtime's CPU execution provider on the original ONNX model."""

from __future__ import annotations

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
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise AnychipError(f"{label}: ONNX Runtime (the reference) failed: {first}") from exc
