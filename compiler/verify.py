"""Verification (docs/architecture.md): compile, run on the target, compare with ONNX Runtime.

Every report states how the target ran (executed or simulated), the precision actually used,
the tolerance that precision implies, and max abs / max rel error per output.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .artifact import Artifact
from .backend import CompileOptions
from .driver import compile_source
from .errors import InputsRejected, NotExecutable
from .format_error import FORMAT_ERROR_MULTIPLIER, emulated_outputs, judge
from .frontend import load_model
from .inputs import random_inputs
from .reference import reference_outputs
from .tolerances import Tolerance, compare, looser, model_precision, tolerance_for


@dataclass
class OutputCheck:
    name: str
    dtype: str
    shape: list[int]
    max_abs: float
    max_rel: float
    mismatches: int
    size: int
    rtol: float
    atol: float
    passed: bool
    nonfinite: int = 0        # NaN/Inf where the reference is finite (max abs ignores them)
    # "elementwise" (the table's rtol/atol) or "format-error" (format_error.py: a reduced
    # precision's result outside rtol/atol but within 3x the format's own error)
    rule: str = "elementwise"
    rmse: float | None = None            # set when the format-error rule was evaluated
    format_rmse: float | None = None     # rmse of the storage emulation against the reference


@dataclass
class VerifyReport:
    model: str
    target: str
    how: str                 # "executed" or "simulated"
    precision: str
    passed: bool
    outputs: list[OutputCheck] = field(default_factory=list)
    reference: str = "onnxruntime CPUExecutionProvider on the original ONNX model"
    where: str = ""          # a farm server: "HOST ADDR (remote, key K)"; "" = this machine
    # a model with symbolic dims: the symbol values this report ran at, and, on the combined
    # report verify_model returns, one report per shape checked (docs/dynamic-shapes.md)
    sizes: dict[str, int] = field(default_factory=dict)
    by_shape: list[VerifyReport] = field(default_factory=list)
    # the artifact's report.json (per-step timings, the family's own analysis) for
    # `verify --verbose`; left out of as_dict: `anychip analyze --json` is its JSON form
    analysis: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=0.0)

    def summary(self) -> str:
        if self.by_shape:
            return "\n".join(r.summary() for r in self.by_shape)
        verdict = "PASS" if self.passed else "FAIL"
        tol = self.outputs[0] if self.outputs else None
        tol_text = f"rtol={tol.rtol:g} atol={tol.atol:g}" if tol else "-"
        worst = [o for o in self.outputs if not o.passed]
        extra = (f"; {worst[0].mismatches}/{worst[0].size} values of '{worst[0].name}' out of "
                 f"tolerance") if worst else ""
        if worst and worst[0].nonfinite:
            extra += f" ({worst[0].nonfinite} of them NaN/Inf where the reference is finite)"
            saturated = (self.analysis or {}).get("saturated_constants") or []
            if saturated:   # the likely cause, named: a mask fill of float32's minimum
                first = saturated[0]
                extra += (f"; {len(saturated)} constant(s) exceed {first['dtype']}'s range and "
                          f"became inf (first: '{first['tensor']}', |x| up to "
                          f"{first['max_abs']:.3g}): use a value within the format's range "
                          f"(a mask fill of -1e4, not float32's minimum) or --precision fp32")
        by_format = [o for o in self.outputs if o.format_rmse is not None]
        if by_format:
            o = by_format[0]
            extra += (f"; '{o.name}': {o.mismatches}/{o.size} values outside rtol/atol, rmse "
                      f"{o.rmse:.3g} {'<=' if o.passed else '>'} {FORMAT_ERROR_MULTIPLIER:g}x "
                      f"{o.format_rmse:.3g} (+atol/10) of {self.precision} storage emulated in "
                      f"ONNX Runtime: {'passed' if o.passed else 'failed'} by the format-error "
                      f"rule")
        how = f"{self.how} on {self.where}" if self.where else self.how
        at = (" at " + ",".join(f"{k}={v}" for k, v in self.sizes.items())) if self.sizes else ""
        return (f"{verdict} {self.model} on {self.target}{at} ({how}, {self.precision}): "
                f"max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}, {tol_text}{extra}")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("analysis", None)
        for sub in d.get("by_shape") or []:
            sub.pop("analysis", None)
        d["max_abs"], d["max_rel"] = self.max_abs, self.max_rel
        return d

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)


def verify_artifact(artifact: Artifact, reference_model, label: str, inputs=None, seed: int = 0,
                    rtol: float | None = None, atol: float | None = None,
                    remote=None, sizes: dict[str, int] | None = None,
                    model_digest: str | None = None) -> VerifyReport:
    """Run an artifact and ONNX Runtime on the same inputs and compare every output.

    A float output of a reduced precision that fails the table's rtol/atol is judged again
    against the format's own error (format_error.py), unless the caller set rtol/atol.
    `remote` (compiler/farm: (artifact, feed) -> (outputs, how, where)) runs the artifact on a
    farm server instead of here; the comparison with ONNX Runtime stays here."""
    if inputs is None and sizes is None:
        sizes = artifact.sizes_at("min")
    feed = random_inputs(artifact.inputs, seed, sizes) if inputs is None else dict(inputs)
    where = ""
    if remote is not None:
        actual, how, where = remote(artifact, feed)
    else:
        execution = artifact.execution()
        if not execution.can_run:
            raise NotExecutable(f"target '{artifact.target}' cannot run here "
                                f"({execution.mode.verb}): {execution.why}.")
        actual, how = artifact.run(feed), execution.mode.verb
    expected = reference_outputs(reference_model, feed, label, model_digest)
    checks = []
    emulated: list | None = None
    precision = looser(artifact.precision, model_precision(reference_model))
    for k, (spec, exp) in enumerate(zip(artifact.outputs, expected)):
        tol = tolerance_for(precision, exp.dtype)
        tol = Tolerance(tol.rtol if rtol is None else rtol, tol.atol if atol is None else atol)
        got = actual[spec.name]
        cmp = compare(got, exp, tol)
        check = OutputCheck(spec.name, str(exp.dtype), list(exp.shape), cmp.max_abs,
                            cmp.max_rel, cmp.mismatches, cmp.size, tol.rtol, tol.atol,
                            cmp.passed, cmp.nonfinite)
        if not cmp.passed and rtol is None and atol is None and exp.dtype.kind == "f":
            if emulated is None:
                emulated = emulated_outputs(reference_model, feed, artifact.precision,
                                            label) or []
            if k < len(emulated):
                verdict = judge(got, emulated[k], exp, tol.atol)
                check.rmse, check.format_rmse = verdict.rmse, verdict.format_rmse
                check.passed, check.rule = verdict.passed, "format-error"
        checks.append(check)
    return VerifyReport(label, artifact.target, how, artifact.precision,
                        all(c.passed for c in checks), checks, where=where,
                        sizes=dict(sizes or {}), analysis=artifact.report)


def shape_points(artifact: Artifact) -> list[dict[str, int]]:
    """The symbol values verify checks by default: the lower bound, the midpoint and the upper
    bound (fewer when they coincide), and every gear of a gear artifact; for a symbol that
    only runs at exact gears (compiler/gears.py), its gears only."""
    modes = artifact.manifest.get("gear_modes") or {}
    gears = [dict(g["sizes"]) for g in artifact.manifest.get("gears") or []]
    points = []
    for where in ("min", "mid", "max"):
        point = artifact.sizes_at(where)
        if point not in points and not any(m == "exact" for m in modes.values()):
            points.append(point)
    for point in gears:
        if point not in points:
            points.append(point)
    return sorted(points, key=lambda p: tuple(p.values()))


def snapped_points(point: dict[str, int], bounds: dict[str, tuple[int, int]]) -> list[dict]:
    """`point` with every symbol moved to a multiple of 2, 4, ... 64 within its bounds (up,
    else down): the sizes to try when a model does not accept `point` itself."""
    out = []
    for k in range(1, 7):
        step, snapped = 2 ** k, {}
        for name, value in point.items():
            lo, hi = bounds.get(name, (value, value))
            up, down = -(-value // step) * step, value // step * step
            snapped[name] = up if up <= hi else down if down >= lo else value
        if snapped != point and snapped not in out:
            out.append(snapped)
    return out


def _verify_at_accepted_sizes(artifact, source, point, seed, rtol, atol, remote):
    """verify_artifact at `point`; where the model does not accept those sizes (ONNX Runtime
    fails, or the compiled program's shape checks do: a U-Net at an odd height, whose skip
    connection comes back from a stride-2 layer one pixel taller), at the nearest sizes that
    are multiples of a power of two instead. The error at `point` stands if none is accepted."""
    def at(sizes):
        return verify_artifact(artifact, source.original, source.label, None, seed, rtol, atol,
                               remote=remote, sizes=sizes, model_digest=source.sha256)

    try:
        return at(point)
    except InputsRejected:
        for sizes in snapped_points(point, artifact.symbols):
            try:
                return at(sizes)
            except InputsRejected:
                continue
        raise


def verify_model(model, target: str = "cpu", *, example_inputs=None, inputs=None, seed: int = 0,
                 rtol: float | None = None, atol: float | None = None,
                 precision: str | None = None, shapes: dict | None = None, remote=None,
                 **extra: Any) -> VerifyReport:
    """anychip.verify: compile for `target`, run, and compare with ONNX Runtime."""
    from .driver import normalise_gears

    shapes = {k: tuple(int(d) for d in v) for k, v in (shapes or {}).items()}
    dims, gears = extra.pop("dims", None), extra.pop("gears", None)
    source = load_model(model, example_inputs, shapes, dims)
    options = CompileOptions(precision=precision, shapes=shapes, extra=dict(extra),
                             dims=dict(source.extra.get("dims") or {}),
                             gears=normalise_gears(gears))
    artifact = compile_source(source, target, options)
    points = shape_points(artifact) if inputs is None else []
    if len(points) <= 1:
        return verify_artifact(artifact, source.original, source.label, inputs, seed, rtol,
                               atol, remote=remote, sizes=points[0] if points else None,
                               model_digest=source.sha256)
    # a symbolic model: one comparison with ONNX Runtime per shape, one artifact for all
    reports = []
    for point in points:
        report = _verify_at_accepted_sizes(artifact, source, point, seed, rtol, atol, remote)
        if report.sizes not in [r.sizes for r in reports]:
            reports.append(report)
    worst = next((r for r in reports if not r.passed), reports[-1])
    return VerifyReport(worst.model, worst.target, worst.how, worst.precision,
                        all(r.passed for r in reports), worst.outputs, where=worst.where,
                        sizes=worst.sizes, by_shape=reports, analysis=artifact.report)
