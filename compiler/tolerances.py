"""The one tolerance table: keyed by the precision actually used and the output dtype.

A value passes when |actual - expected| <= atol + rtol * |expected| (ONNX Runtime's
checkers.cc rule); NaN must be NaN and infinities must be equal. The reference is always
ONNX Runtime's CPU provider on the original fp32 model (docs/architecture.md).

Why these numbers (docs/security.md): fp32 starts from ORT's per-op fp32 default (rtol 1e-4,
atol 1e-5) and allows a whole network's different summation order (atol 1e-4). Reduced
precisions are compared against the fp32 reference, so they get the error of the format
accumulated over a network: tf32 and fp16 have 10-bit mantissas (unit roundoff 4.9e-4), bf16
has 7 bits (3.9e-3); the figures are ~20x the unit roundoff, as ORT derives its fp16/bf16
rows as a multiple of the cast error. Integers and booleans are exact. Training compares
losses and parameters after several optimizer steps, so errors compound once more.

A model that computes in float16 or bfloat16 by itself (model_precision: an internal Cast, a
weight of that type) is judged by that format's row even when compiled at fp32.

The table is the first rule. A reduced-precision output that misses it is judged once more by
verify against the format's own error (format_error.py: within 3x the RMS error of the model
run with every tensor stored in that format), because on a deep network the format alone
leaves these elementwise bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import AnychipError


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float

    def __str__(self) -> str:
        return f"rtol={self.rtol:g} atol={self.atol:g}"


FLOAT_TOLERANCES: dict[str, Tolerance] = {
    "fp64": Tolerance(1e-5, 1e-5),
    "fp32": Tolerance(1e-4, 1e-4),
    "tf32": Tolerance(1e-2, 1e-2),
    "fp16": Tolerance(1e-2, 1e-2),
    "mixed": Tolerance(1e-2, 1e-2),
    "bf16": Tolerance(5e-2, 5e-2),
    "int8": Tolerance(1e-1, 1e-1),
}
TRAINING_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(1e-4, 1e-5),
    "tf32": Tolerance(2e-2, 2e-2),
    "fp16": Tolerance(2e-2, 2e-2),
    "mixed": Tolerance(2e-2, 2e-2),
    "bf16": Tolerance(1e-1, 1e-1),
}
# Mixed-precision training (training/mixed.py: fp32 master weights, forward and backward in
# the reduced dtype) against the fp32 loss curve of the same model, data and optimizer, over
# the first 20 updates: about 10x the format's unit roundoff relative (the curve compounds the
# per-step error, as a network compounds it for inference), plus an absolute floor for losses
# near zero. Measured: a TransformerEncoderLayer classifier, 20 AdamW steps at lr 1e-2, bf16
# stays within 8.4e-3 relative (8.7e-4 absolute) of fp32.
MIXED_TRAINING_CURVE: dict[str, Tolerance] = {
    "bf16": Tolerance(4e-2, 5e-3),
    "fp16": Tolerance(1e-2, 1e-3),
}
EXACT = Tolerance(0.0, 0.0)
# A model run at batch N against the same model on each row alone, both in ONNX Runtime fp32
# (compiler/rebatch.py): only summation order may differ (kernels block by batch), so the fp32
# inference rule; a graph that mixes rows differs by O(1).
REBATCH = FLOAT_TOLERANCES["fp32"]


def tolerance_for(precision: str, dtype, training: bool = False) -> Tolerance:
    """The tolerance for an output of `dtype` computed at `precision`."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iub":
        return EXACT
    table = TRAINING_TOLERANCES if training else FLOAT_TOLERANCES
    if precision not in table:
        raise AnychipError(f"no tolerance for precision '{precision}'; known: "
                           f"{', '.join(table)}.")
    if dtype == np.float64 and precision == "fp32" and not training:
        return FLOAT_TOLERANCES["fp32"]
    return table[precision]


# precisions from the tightest row to the loosest
_LOOSENESS = ["fp64", "fp32", "tf32", "fp16", "mixed", "bf16", "int8"]
# ONNX element types (TensorProto.FLOAT16, BFLOAT16) a model may compute in by itself
_MODEL_FORMATS = {10: "fp16", 16: "bf16"}


def model_precision(model) -> str | None:
    """'fp16' or 'bf16' when the model itself computes in that format: a Cast to it, or a
    weight or graph input of that type (an autocast export keeps float32 inputs and outputs
    and casts inside). ONNX Runtime then rounds to that format too, but from float32 values
    that differ from ours in the last bits, so an output differs by the format's rounding
    (an fp32 model with one internal float16 Cast: 9.8e-4 apart at values near 1); None
    for a model that computes in float32 or wider only."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        return None
    graph = model.graph
    found = {init.data_type for init in graph.initializer}
    found |= {i.type.tensor_type.elem_type for i in graph.input
              if i.type.HasField("tensor_type")}
    for node in graph.node:
        if node.op_type == "Cast":
            found |= {a.i for a in node.attribute if a.name == "to"}
    formats = [_MODEL_FORMATS[t] for t in found if t in _MODEL_FORMATS]
    return max(formats, key=_LOOSENESS.index) if formats else None


def looser(precision: str, other: str | None) -> str:
    """The looser of two precisions' rows (`other` None: `precision`)."""
    if other is None or precision not in _LOOSENESS:
        return precision
    return max(precision, other, key=_LOOSENESS.index)


@dataclass(frozen=True)
class Comparison:
    max_abs: float
    max_rel: float
    mismatches: int
    size: int
    nonfinite: int = 0          # NaN/Inf produced where the reference is finite

    @property
    def passed(self) -> bool:
        return self.mismatches == 0


def compare(actual: np.ndarray, expected: np.ndarray, tol: Tolerance) -> Comparison:
    """Elementwise check with NaN/Inf rules; max abs and max rel error over finite values.

    Relative error divides by max(|expected|, atol), so values near zero do not report
    meaningless relative errors the tolerance itself would never judge by.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        return Comparison(float("inf"), float("inf"), max(actual.size, expected.size, 1),
                          expected.size)
    if expected.dtype.kind in "iub":
        diff = actual.astype(np.int64) - expected.astype(np.int64)
        bad = int(np.count_nonzero(diff))
        mx = float(np.max(np.abs(diff))) if diff.size else 0.0
        rel = float(np.max(np.abs(diff) / np.maximum(np.abs(expected.astype(np.float64)), 1))) if diff.size else 0.0
        return Comparison(mx, rel, bad, expected.size)
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    nan_ok = np.isnan(a) & np.isnan(e)
    inf_ok = np.isinf(e) & (a == e)
    finite = np.isfinite(a) & np.isfinite(e)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(finite, np.abs(a - e), 0.0)
    within = finite & (diff <= tol.atol + tol.rtol * np.abs(e))
    bad = int(np.count_nonzero(~(within | nan_ok | inf_ok)))
    max_abs = float(diff.max()) if diff.size else 0.0
    rel = np.where(finite, diff / np.maximum(np.abs(e), max(tol.atol, 1e-12)), 0.0)
    max_rel = float(rel.max()) if rel.size else 0.0
    nonfinite = int(np.count_nonzero(~np.isfinite(a) & np.isfinite(e)))
    return Comparison(max_abs, max_rel, bad, expected.size, nonfinite)
