"""ONNX node conformance per target (issue 7): ONNX's own node test cases through the whole
anychip pipeline, each compared with the outputs ONNX expects under the case's tolerance.

    report = run_conformance("cpu", ops=["Add", "Conv"])
    report.summary()      # "cpu (executed): 20/20 passed (100.0%), ..."

Cases run in worker processes with a per-case time limit (pool.py), so a hang or a crash is
one failed case. Statuses and the comparison are defined in engines.py; expected failures
per target live in backends/conformance/<target>.yaml (expected.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import AnychipError
from . import cases as case_store
from .engines import COMPILED, FAILED, PASSED, UNSUPPORTED, Result
from .pool import DEFAULT_TIMEOUT_S, run_cases
from .report import TargetReport

ORT = "ort"


def how_target_runs(target: str) -> str:
    """'executed', 'simulated', 'compiled only' (or 'reference' for ONNX Runtime)."""
    if target == ORT:
        return "reference"
    from ..backend import Mode
    from ..registry import execution, get_profile

    mode = execution(get_profile(target)).mode
    if mode is Mode.UNAVAILABLE:
        raise AnychipError(f"target '{target}' cannot compile here: "
                           f"{execution(get_profile(target)).why}; see 'anychip targets'.")
    return mode.verb


def run_conformance(target: str, ops: list[str] | None = None, names: list[str] | None = None,
                    limit: int | None = None, jobs: int = 2,
                    timeout: float = DEFAULT_TIMEOUT_S,
                    progress: Callable[[Result, int, int], None] | None = None,
                    selected: list[case_store.Case] | None = None,
                    precision_mode: str | None = None, symbolic: bool = False) -> TargetReport:
    """Run the node suite (or a selection) on `target` ('ort' for ONNX Runtime). `symbolic`:
    each case's input dims become symbols (engines.symbolise), so every operator is also
    checked through the symbolic-shape path a dynamic model takes; run at the case's sizes."""
    import onnx

    how = how_target_runs(target)
    if selected is None:
        selected = case_store.select(case_store.collect(), ops, names, limit)
    start = time.perf_counter()
    mode = conformance_precision_mode(target, precision_mode)
    options: dict = {"precision_mode": mode} if mode else {}
    if symbolic and target != ORT:
        options["symbolic"] = True
    results = run_cases(selected, target, jobs=jobs, timeout=timeout, progress=progress,
                        options=options)
    report = TargetReport(target, how, onnx.__version__, results, time.perf_counter() - start)
    if mode:
        report.extra["precision_mode"] = mode
    if options.get("symbolic"):
        report.extra["symbolic"] = True
    return report


def suite_default_options(target: str) -> dict:
    """The options the suite compiles with on `target` unless given (the family's
    `conformance_options`); {} for ONNX Runtime."""
    if target == ORT:
        return {}
    from ..registry import get_backend, get_profile

    profile = get_profile(target)
    return dict(get_backend(profile).conformance_options(profile))


def conformance_precision_mode(target: str, given: str | None) -> str | None:
    """The precision mode `target` runs the suite in: the one given, else its family's suite
    default; None for a family without a precision_mode option (giving one there is an error).
    """
    if target == ORT:
        return None
    from ..registry import get_backend, get_profile

    profile = get_profile(target)
    if "precision_mode" not in get_backend(profile).Options.names():
        if given:
            raise AnychipError(f"--precision-mode is not an option of target '{target}' "
                               f"(family '{profile.family}'); see 'anychip conformance --help'.")
        return None
    return given or suite_default_options(target).get("precision_mode")


__all__ = ["run_conformance", "TargetReport", "Result", "ORT", "PASSED", "FAILED",
           "UNSUPPORTED", "COMPILED"]
