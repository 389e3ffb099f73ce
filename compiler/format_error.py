"""The error a reduced-precision format makes on its own: the second reference for fp16/bf16.

A backend that computes in float16 is compared with ONNX Runtime's fp32 run of the original
model. On a shallow network the table's elementwise tolerance (tolerances.py) bounds that
difference; on a deep one the format itself does not stay inside it: DenseNet-121 with every
tensor merely *stored* in float16 (all arithmetic in fp32) leaves a third of its logits outside
rtol=atol=1e-2. Loosening the table for every model would hide real errors on shallow ones.

So, as PyTorch's inductor accuracy check does (`torch._dynamo.utils.same`: a compiled result
whose elementwise check fails still passes when its RMSE against the fp64 reference is within
3x the RMSE of eager low-precision execution, plus tol/10), a reduced-precision output that
fails the table is judged against the format's own error: ONNX Runtime runs the original model
with every float32 weight, input and node output rounded to the format (Cast to float16 or
bfloat16 and back, arithmetic left in fp32), and the backend passes when

    rmse(backend - fp32 reference) <= FORMAT_ERROR_MULTIPLIER * rmse(emulated - fp32 reference)
                                      + atol / 10.

The emulation keeps every op's arithmetic in fp32 (the cube's fp32 accumulation, and better:
fp32 elementwise math), so it is the least error any implementation storing tensors in that
format can make; a wrong kernel (a dropped bias, a swapped channel, a flipped filter) misses it
by orders of magnitude. Mixed precision is bounded by all-float16 storage (an upper bound of its
format error). tf32 and int8 have no such emulation: the table alone judges them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .reference import run_onnxruntime

# torch._dynamo.utils.same's multiplier for float16/bfloat16 results.
FORMAT_ERROR_MULTIPLIER = 3.0
# Where storing the model's tensors in the format already costs more than 10% of the output's
# RMS, the format is not a usable precision for this model and bounds nothing (our choice: the
# zoo's deepest fp16 case, densenet121, is at 1.2%).
MAX_FORMAT_RELATIVE_ERROR = 0.1
STORAGE = {"fp16": TensorProto.FLOAT16, "mixed": TensorProto.FLOAT16,
           "bf16": TensorProto.BFLOAT16}
SUFFIX = "__anychip_fmt"


def has_emulation(precision: str) -> bool:
    return precision in STORAGE


def _round_array(a: np.ndarray, storage: int) -> np.ndarray:
    if storage == TensorProto.FLOAT16:
        return a.astype(np.float16).astype(np.float32)
    import ml_dtypes

    return a.astype(ml_dtypes.bfloat16).astype(np.float32)


def storage_emulation(model: onnx.ModelProto, precision: str) -> onnx.ModelProto:
    """`model` with every float32 initializer rounded to the format and every float32 output of a
    top-level node passed through Cast(format) -> Cast(float32). Graph outputs keep their names."""
    storage = STORAGE[precision]
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    float_values = {vi.name for vi in list(graph.value_info) + list(graph.output)
                    if vi.type.tensor_type.elem_type == TensorProto.FLOAT}
    out = onnx.ModelProto()
    out.CopyFrom(inferred)
    for init in out.graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(
                _round_array(numpy_helper.to_array(init), storage), init.name))
    nodes = []
    for node in out.graph.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        rounding = []
        for k, name in enumerate(node.output):
            if name and name in float_values:
                new.output[k] = name + SUFFIX
                rounding += [helper.make_node("Cast", [name + SUFFIX], [name + SUFFIX + "_r"],
                                              to=storage),
                             helper.make_node("Cast", [name + SUFFIX + "_r"], [name],
                                              to=TensorProto.FLOAT)]
        nodes += [new, *rounding]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def emulated_outputs(model: onnx.ModelProto, feed: dict[str, np.ndarray], precision: str,
                     label: str) -> list[np.ndarray] | None:
    """ONNX Runtime's outputs with tensors stored in `precision`'s format; None where the
    precision has no emulation or ORT cannot run the rewritten model (the table alone judges)."""
    if not has_emulation(precision):
        return None
    storage = STORAGE[precision]
    rounded = {k: _round_array(v, storage) if np.asarray(v).dtype == np.float32 else v
               for k, v in feed.items()}
    try:
        return run_onnxruntime(storage_emulation(model, precision), rounded, label)
    except Exception:  # noqa: BLE001 - shape inference, external data, ORT: cannot judge
        return None


def rmse(actual: np.ndarray, expected: np.ndarray) -> float:
    """Root-mean-square difference in float64; inf when either side has a NaN/Inf the other
    lacks (a result that is not finite where the reference is, is never within a format's error)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return float("inf")
    same = (np.isnan(a) & np.isnan(e)) | (np.isinf(e) & (a == e))
    finite = np.isfinite(a) & np.isfinite(e)
    if np.any(~(same | finite)):
        return float("inf")
    if not finite.any():
        return 0.0
    return float(np.sqrt(np.mean((a[finite] - e[finite]) ** 2)))


def within_format_error(actual_rmse: float, format_rmse: float, atol: float,
                        signal_rms: float | None = None) -> bool:
    """The rule. A format whose storage overflows or produces NaN on this model (an infinite
    format_rmse), or loses the signal (its own error above MAX_FORMAT_RELATIVE_ERROR of the
    reference's RMS), bounds nothing: the table's verdict then stands."""
    if not math.isfinite(format_rmse):
        return False
    if signal_rms is not None and \
            format_rmse > MAX_FORMAT_RELATIVE_ERROR * signal_rms + atol / 10.0:
        return False
    return actual_rmse <= FORMAT_ERROR_MULTIPLIER * format_rmse + atol / 10.0


@dataclass(frozen=True)
class Judgement:
    rmse: float            # the result's RMS error against the reference
    format_rmse: float     # the storage emulation's RMS error against the same reference
    passed: bool

    @property
    def ratio(self) -> float:
        return self.rmse / self.format_rmse if self.format_rmse else float("inf")


def judge(actual, emulated, expected, atol: float) -> Judgement:
    """The format-error rule for one output: `actual` and the storage emulation's `emulated`,
    both against the fp32 `expected`. The one place verify, compare and conformance decide it."""
    r, f = rmse(actual, expected), rmse(emulated, expected)
    return Judgement(r, f, within_format_error(r, f, atol, reference_rms(expected)))


def reference_rms(expected: np.ndarray) -> float:
    """RMS of the reference's finite values (the signal the format's error is measured against)."""
    e = np.asarray(expected, dtype=np.float64)
    finite = e[np.isfinite(e)]
    return float(np.sqrt(np.mean(finite ** 2))) if finite.size else 0.0
