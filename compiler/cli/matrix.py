"""`anychip matrix MODEL... --targets all`: models x targets, markdown and JUnit for CI.

Exit 0 when every cell that should pass (its target executes, simulates or compiles here)
passed, 1 otherwise, 2 on bad usage.
"""

from __future__ import annotations

import json

from .. import progress
from ..atomic import write_file
from ..errors import AnychipError
from .common import add_shape_args, model_options, table


def add_parser(sub) -> None:
    p = sub.add_parser("matrix", help="verify or compile models on many targets (CI matrix)")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help=".onnx paths or zoo:NAME ('zoo:all' for every zoo model)")
    p.add_argument("--targets", "-t", default="all",
                   help="comma-separated target names, or 'all' (default): every target; "
                        "those that cannot compile here give 'unavailable' cells")
    add_shape_args(p)
    p.add_argument("--markdown", metavar="FILE", help="write the table as markdown")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML (one test case per cell)")
    p.add_argument("--json", action="store_true", help="print the cells as JSON")
    p.add_argument("--jobs", "-j", type=int, default=None,
                   help="models compiled and checked at once, each in its own process "
                        "(default: one per usable core, as the memory allows)")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    from ..farm.client import add_farm_args

    add_farm_args(p)
    p.set_defaults(func=run)


def _models(given: list[str]) -> list[str]:
    if "zoo:all" not in given:
        return given
    from anychip import models as zoo

    expanded = []
    for m in given:
        expanded.extend([f"zoo:{n}" for n in zoo.names()] if m == "zoo:all" else [m])
    return expanded


def run(args) -> int:
    from ..conformance.matrix import (FAILED, default_jobs, junit_xml, local_matrix, markdown,
                                      matrix_targets)

    models = _models(args.models)
    options = model_options(args)   # symbolic models: verified at each shape verify checks
    targets = matrix_targets(args.targets)
    if not targets:
        raise AnychipError(f"--targets '{args.targets}' names no target; see 'anychip targets'.")
    from ..farm.client import spec_from_args

    farm = spec_from_args(args)
    cells = []
    if farm is not None:
        from ..farm.matrix import farm_matrix, stderr_progress

        cells = farm_matrix(models, targets, farm,
                            progress=None if args.json else stderr_progress, options=options)
    else:
        jobs = default_jobs() if args.jobs is None else args.jobs
        if jobs < 1:
            raise AnychipError("--jobs must be >= 1.")

        def show(cell, done: int, total: int) -> None:
            if not args.json:
                progress.echo(f"[{done}/{total}] {cell.model} on {cell.target}: {cell.text()} "
                              f"({cell.seconds:.1f} s)")

        with progress.stage(f"matrix: {len(models)} model(s) x {len(targets)} target(s), "
                            f"{min(jobs, len(models))} at once"):
            cells = local_matrix(models, targets, options, jobs, show)
    if args.markdown:
        text = markdown(cells, models, targets)
        write_file(args.markdown, lambda tmp: tmp.write_text(text), force=args.force)
    if args.junit:
        data = junit_xml(cells)
        write_file(args.junit, lambda tmp: tmp.write_bytes(data), force=args.force)
    if args.json:
        print(json.dumps([c.as_dict() for c in cells], indent=1))
    else:
        rows = [[c.model, c.target, c.status, f"{c.max_abs:.3g}" if c.max_abs is not None else "",
                 f"{c.max_rel:.3g}" if c.max_rel is not None else "", c.tolerance,
                 c.shapes_text(),
                 (c.reason or (f"on {c.where}" if c.where else ""))[:70]] for c in cells]
        print(table(["model", "target", "result", "max abs", "max rel", "tolerance", "shapes",
                     "why"], rows))
    failed = [c for c in cells if c.expected_to_pass and (c.status == FAILED or not c.passed)]
    return 1 if failed else 0
