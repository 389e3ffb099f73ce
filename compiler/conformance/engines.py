"""Run one conformance case on one engine: an anychip target, or ONNX Runtime (`--against ort`).

The anychip engine is the whole pipeline a user gets: load_model -> compile_source ->
Artifact.run, then each output is checked as ONNX's backend runner checks it (same shape,
same dtype, |actual - expected| <= atol + rtol * |expected| with the case's own rtol/atol,
NaN equal to NaN; bfloat16 outputs get at least two bfloat16 ULPs of rtol).

Statuses: `passed`; `failed` (a wrong value, a crash, a compile or import error); `unsupported`
(the pipeline refuses the case up front and says why: an operator or dtype TVM cannot take,
non-tensor graph inputs or outputs); `compiled` (a compiles-only target built the case; nothing
ran, so it is never reported as passed).
"""

from __future__ import annotations

import re
import time
import traceback
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import error_line
from ..format_error import FORMAT_ERROR_MULTIPLIER
from .cases import Case

PASSED, FAILED, UNSUPPORTED, COMPILED = "passed", "failed", "unsupported", "compiled"

# Messages of deliberate refusals (anychip's own checks), as opposed to errors along the way.
_REFUSALS = [
    re.compile(r"TVM's ONNX importer does not support"),
    re.compile(r"is not a tensor \(sequence/optional/map\)"),
    re.compile(r"not supported by anychip"),
]


@dataclass
class Result:
    name: str
    op: str
    status: str
    reason: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)   # e.g. inputs specialised at compile time
    # a reduced-precision case out of its tolerance: "within" or "beyond" 3x the error of the
    # case run with its tensors stored in that format (format_error.py); "" when not judged
    format_error: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


_NOISE = [(re.compile(r"<ModelProto [^>]*>: "), ""),
          (re.compile(r"anychip-build-[\w-]+"), "the artifact"),
          (re.compile(r"\s*(Run 'anychip compare' or report the model|Rerun with --debug for "
                      r"the trace, or try 'anychip analyze')\.?"), "")]


def _clean(text: str) -> str:
    """A reason without the parts that change from run to run (temp folders) or say nothing."""
    for pattern, repl in _NOISE:
        text = pattern.sub(repl, text)
    return text.strip()


def _first_line(exc: BaseException) -> str:
    """The exception's type and first line: a case's failure reason in the suite's lists."""
    return f"{type(exc).__name__}: {error_line(exc, last=False) if str(exc).strip() else ''}"


def _is_refusal(exc: BaseException) -> bool:
    from ..importer_fixes import NotSupported

    return isinstance(exc, NotSupported) or any(p.search(str(exc)) for p in _REFUSALS)


def check_outputs(actual: list, expected: list, rtol: float, atol: float,
                  undefined: list | None = None) -> str:
    """'' when every output matches as ONNX's backend runner requires, else the first mismatch.
    `undefined`: per output, a mask of elements the spec leaves undefined (not compared)."""
    from ..tolerances import Tolerance, compare

    if len(actual) != len(expected):
        return f"{len(actual)} outputs, expected {len(expected)}"
    for i, (got, exp) in enumerate(zip(actual, expected)):
        skip = undefined[i] if undefined and i < len(undefined) else None
        if isinstance(exp, (list, tuple)):
            if not isinstance(got, (list, tuple)):
                return f"output {i} is a tensor, expected a sequence"
            why = check_outputs(list(got), list(exp), rtol, atol)
            if why:
                return f"output {i}: {why}"
            continue
        if exp is None or got is None:
            if exp is not got:
                return f"output {i}: {got!r} where {exp!r} was expected"
            continue
        got, exp = np.asarray(got), np.asarray(exp)
        if got.shape != exp.shape:
            return f"output {i} has shape {list(got.shape)}, expected {list(exp.shape)}"
        if exp.dtype == object:
            if not np.array_equal(got.astype(object), exp):
                return f"output {i}: strings differ"
            continue
        if got.dtype != exp.dtype:
            return f"output {i} has dtype {got.dtype}, expected {exp.dtype}"
        if skip is not None and skip.shape == exp.shape:
            got, exp = got[~skip], exp[~skip]
        tol_r = max(rtol, 2.0**-6) if exp.dtype.name == "bfloat16" else rtol
        if exp.dtype.kind in "iub":
            if not np.array_equal(got, exp):
                bad = int(np.count_nonzero(got != exp))
                return f"output {i}: {bad}/{exp.size} values differ"
            continue
        cmp = compare(got.astype(np.float64), exp.astype(np.float64), Tolerance(tol_r, atol))
        if not cmp.passed:
            return (f"output {i}: {cmp.mismatches}/{cmp.size} values out of tolerance "
                    f"(max abs {cmp.max_abs:.3g}, max rel {cmp.max_rel:.3g}, rtol {tol_r:g} "
                    f"atol {atol:g})")
    return ""


def _array(value):
    """Case data as arrays: some cases give numpy scalars (np.int32(10)) for 0-d tensors."""
    if isinstance(value, (list, tuple)) or value is None or isinstance(value, np.ndarray):
        return value
    return np.asarray(value)


def symbolise(model, feed: dict) -> tuple[object, dict[str, tuple[int, int]]]:
    """`conformance --symbolic`: the case's model with every input dim over 1 made a named
    symbol, one per distinct size (`d3`: inputs or axes of the same size share it, so
    broadcasting and shared extents stay provable), bounded to that size; the graph outputs
    keep their rank, their sizes are left to inference. Dims of 1 stay static (they broadcast). Returns the new
    model and the symbols' bounds, for load_model(dims=...). Shape-valued inputs
    (specialise_for) keep their dims: their values, not their sizes, matter."""
    import onnx

    from ..importer_fixes.specialise import shape_inputs

    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = set(shape_inputs(model))
    dims: dict[str, tuple[int, int]] = {}
    for vi in out.graph.input:
        if vi.name in keep or not vi.type.HasField("tensor_type") or vi.name not in feed:
            continue
        shape = np.shape(feed[vi.name])
        for dim, size in zip(vi.type.tensor_type.shape.dim, shape):
            if size > 1:
                dim.dim_param = f"d{size}"
                dims[f"d{size}"] = (size, size)
    for vi in out.graph.output:   # rank kept, sizes unknown
        if vi.type.HasField("tensor_type"):
            for dim in vi.type.tensor_type.shape.dim:
                dim.Clear()
    return out, dims


def run_anychip(case: Case, target: str, precision_mode: str | None = None,
                symbolic: bool = False) -> Result:
    """load_model -> compile_source -> Artifact.run, exactly as a user's model goes
    (`precision_mode`: for a family with precision modes, as `--precision-mode` gives it;
    `symbolic`: the inputs' dims made symbols first, see `symbolise`)."""
    import onnx

    from ..backend import CompileOptions
    from ..driver import compile_source
    from ..errors import AnychipError
    from ..frontend import load_model
    from ..importer_fixes import specialise_for

    start = time.perf_counter()
    result = Result(case.name, case.op, FAILED)
    stage = "load"
    try:
        model = onnx.load_from_string(case.model)
        feed = {vi.name: _array(v) for vi, v in zip(model.graph.input, case.inputs)}
        dims: dict = {}
        if symbolic:
            model, dims = symbolise(model, feed)
        source = load_model(model, None, None, dims or None)
        result.notes = specialise_for(source, feed)
        stage = "compile"
        extra = {"precision_mode": precision_mode} if precision_mode else {}
        artifact = compile_source(source, target, CompileOptions(
            extra=extra, dims=dict(source.extra.get("dims") or {})))
        if not artifact.execution().can_run:
            result.status = COMPILED
            result.reason = f"compiled only: {artifact.execution().why}"
            return result
        stage = "run"
        outs = artifact.run({s.name: feed[s.name] for s in source.inputs})
        why = check_outputs(list(outs.values()), case.outputs, case.rtol, case.atol,
                            case.undefined)
        result.status, result.reason = (FAILED, why) if why else (PASSED, "")
        if why and "out of tolerance" in why:
            result.format_error = _format_verdict(case, model, feed, list(outs.values()),
                                                  artifact.precision)
            if result.format_error:
                result.reason += (f" [{result.format_error} {FORMAT_ERROR_MULTIPLIER:g}x "
                                  f"{artifact.precision} storage's own error]")
    except Exception as exc:  # noqa: BLE001 - every error becomes the case's reason
        result.status = UNSUPPORTED if _is_refusal(exc) else FAILED
        text = str(exc).strip().splitlines()[0][:400] if isinstance(exc, AnychipError) else \
            _first_line(exc)
        text = _clean(text)
        result.reason = f"{stage}: {text}" if result.status == FAILED else text
        if isinstance(exc, (AssertionError, TypeError, AttributeError, KeyError, IndexError)) \
                and not isinstance(exc, AnychipError):
            where = traceback.extract_tb(exc.__traceback__)[-1]
            result.reason += f" [{where.name} in {where.filename.rsplit('/', 1)[-1]}]"
    finally:
        result.seconds = round(time.perf_counter() - start, 3)
    return result


def _format_verdict(case: Case, model, feed: dict, actual: list, precision: str) -> str:
    """'within' / 'beyond' when every float output of a reduced-precision run is / is not
    within the format-error rule against the case's expected outputs; '' when it cannot be
    judged (full precision, sequences, ONNX Runtime cannot run the case)."""
    from ..format_error import emulated_outputs, has_emulation, judge

    if not has_emulation(precision):
        return ""
    emulated = emulated_outputs(model, feed, precision, case.name)
    if emulated is None or len(emulated) != len(case.outputs):
        return ""
    for got, emu, exp in zip(actual, emulated, case.outputs):
        if isinstance(exp, (list, tuple)) or exp is None:
            return ""
        exp = np.asarray(exp)
        if exp.dtype.kind != "f":
            continue
        if not judge(got, emu, exp, case.atol).passed:
            return "beyond"
    return "within"


# ORT has no kernel, or its numpy API cannot take the element type (bfloat16, float8, int4).
_ORT_REFUSALS = re.compile(r"NOT_IMPLEMENTED|Could not find an implementation|not supported|"
                           r"Unsupported (type|data type)|unsupported type|can't be converted to "
                           r"MLDataType|No corresponding Numpy type", re.IGNORECASE)


def run_ort(case: Case) -> Result:
    """The same case through ONNX Runtime's CPU provider (the anchor figure)."""
    import onnxruntime as ort

    start = time.perf_counter()
    result = Result(case.name, case.op, FAILED)
    stage = "load"
    try:
        import onnx

        model = onnx.load_from_string(case.model)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(case.model, opts, providers=["CPUExecutionProvider"])
        stage = "run"
        names = [vi.name for vi in model.graph.input]
        feed = {n: _array(v) for n, v in zip(names, case.inputs)}
        outs = session.run(None, feed)
        why = check_outputs(list(outs), case.outputs, case.rtol, case.atol, case.undefined)
        result.status, result.reason = (FAILED, why) if why else (PASSED, "")
    except Exception as exc:  # noqa: BLE001
        text = _first_line(exc)
        result.status = UNSUPPORTED if _ORT_REFUSALS.search(text) else FAILED
        result.reason = f"{stage}: {text}"
    finally:
        result.seconds = round(time.perf_counter() - start, 3)
    return result


def run_case(case: Case, engine: str, precision_mode: str | None = None,
             symbolic: bool = False) -> Result:
    """engine: 'ort', or an anychip target name."""
    return run_ort(case) if engine == "ort" else run_anychip(case, engine, precision_mode,
                                                            symbolic)
