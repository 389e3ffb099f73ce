"""`verify --special-values`: inputs seeded with IEEE special values, compared with ONNX Runtime
element by element, reporting where the target's results differ.

Random N(0,1) inputs never hold a NaN, an infinity, a negative zero or a subnormal, so a
lowering that turns NaN into 0 (a max-based relu), flushes subnormals or loses the sign of
zero passes every ordinary verify. Here every float input gets those values at seeded
positions (the first elements of each input cycle through all of them, so each appears at
least once) and each output is compared with the reference: NaN must be NaN, an infinity the
same infinity, finite values within the precision's tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .tolerances import tolerance_for

SPECIALS = (np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40)
SPECIAL_FRACTION = 0.05


def special_inputs(feed: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """`feed` with NaN/+-Inf/+-0/subnormals written into every float input."""
    rng = np.random.default_rng(seed + 1)
    out = {}
    for name, value in feed.items():
        value = np.array(value, copy=True)
        if value.dtype.kind == "f" and value.size:
            flat = value.reshape(-1)
            count = min(flat.size, len(SPECIALS))
            flat[:count] = np.array(SPECIALS[:count], dtype=np.float64).astype(value.dtype)
            picks = rng.random(flat.size) < SPECIAL_FRACTION
            picks[:count] = False
            flat[picks] = np.array(SPECIALS, dtype=np.float64)[
                rng.integers(0, len(SPECIALS), int(picks.sum()))].astype(value.dtype)
        out[name] = value
    return out


@dataclass
class OutputDiff:
    name: str
    size: int
    differ: int
    first: list[str] = field(default_factory=list)    # "[i, j]: got X, reference Y"


def differences(name: str, got: np.ndarray, want: np.ndarray, precision: str,
                shown: int = 3) -> OutputDiff:
    """Positions where `got` and `want` disagree as IEEE values (NaN vs number, infinity vs
    finite or the other infinity, finite values beyond the precision's tolerance)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return OutputDiff(name, int(want.size), int(want.size),
                          [f"shape {list(got.shape)}, reference {list(want.shape)}"])
    if want.dtype.kind != "f":
        bad = got != want
    else:
        g, w = got.astype(np.float64), want.astype(np.float64)
        tol = tolerance_for(precision, want.dtype)
        both_finite = np.isfinite(g) & np.isfinite(w)
        close = np.zeros(g.shape, bool)
        close[both_finite] = (np.abs(g[both_finite] - w[both_finite])
                              <= tol.atol + tol.rtol * np.abs(w[both_finite]))
        same_special = (np.isnan(g) & np.isnan(w)) | (np.isinf(g) & (g == w))
        bad = ~(close | same_special)
    where = np.argwhere(bad)
    first = [f"{list(map(int, idx))}: got {_text(got[tuple(idx)])}, reference "
             f"{_text(want[tuple(idx)])}" for idx in where[:shown]]
    return OutputDiff(name, int(want.size), int(bad.sum()), first)


def _text(value) -> str:
    try:
        return f"{float(value):g}" if np.asarray(value).dtype.kind == "f" else str(value)
    except (TypeError, ValueError):
        return str(value)


@dataclass
class SpecialValuesReport:
    model: str
    target: str
    how: str
    precision: str
    outputs: list[OutputDiff]

    @property
    def passed(self) -> bool:
        return all(o.differ == 0 for o in self.outputs)

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        lines = [f"{verdict} {self.model} on {self.target} with special values "
                 f"(NaN, +-Inf, +-0, subnormals; {self.how}, {self.precision})"]
        for o in self.outputs:
            if o.differ:
                lines.append(f"  {o.name}: {o.differ}/{o.size} values differ from ONNX Runtime; "
                             + "; ".join(o.first))
        return "\n".join(lines)


def verify_special_values(model, target: str = "cpu", seed: int = 0, precision=None,
                          shapes=None, **extra) -> SpecialValuesReport:
    """Compile for `target`, run on special-valued inputs, compare with ONNX Runtime."""
    from .driver import compile_model
    from .errors import NotExecutable
    from .frontend import load_model
    from .inputs import random_inputs
    from .reference import run_onnxruntime

    source = load_model(model, shapes=shapes)
    artifact = compile_model(source, target, precision=precision, shapes=shapes, **extra)
    execution = artifact.execution()
    if not execution.can_run:
        raise NotExecutable(f"target '{target}' cannot run here ({execution.mode.verb}): "
                            f"{execution.why}.")
    feed = special_inputs(random_inputs(artifact.inputs, seed), seed)
    got = artifact.run(feed)
    want = run_onnxruntime(source.original, feed, source.label)
    diffs = [differences(spec.name, got[spec.name], ref, artifact.precision)
             for spec, ref in zip(artifact.outputs, want)]
    return SpecialValuesReport(source.label, target, execution.mode.verb, artifact.precision,
                               diffs)
