"""`anychip conformance --target T|all`: ONNX's node test suite on each target.

Exit 0 when every target matches its expected-failure list (backends/conformance/T.yaml),
1 on a new failure or an unexpected pass, 2 on bad usage. `--update-expected` rewrites the
lists from this run (and exits 0).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .. import progress
from ..atomic import write_file
from ..errors import AnychipError
from .common import table


def add_parser(sub) -> None:
    p = sub.add_parser("conformance", help="run ONNX's node test suite on targets")
    p.add_argument("--target", "-t", default="cpu",
                   help="target name, comma-separated names, or 'all' (every target that "
                        "executes or simulates here); compiles-only targets may be named")
    p.add_argument("--against", choices=["ort"], help="also run the suite through ONNX Runtime "
                   "(CPU provider) as the anchor figure")
    p.add_argument("--ops", help="only cases of these ONNX operators, e.g. Add,Conv,Softmax")
    p.add_argument("--cases", help="only cases whose name contains one of these, comma-separated")
    p.add_argument("--limit", type=int, help="only the first N selected cases")
    p.add_argument("--precision-mode", help="for targets whose family has a precision mode: "
                   "the mode the suite runs in (default: the family's suite default, which "
                   "checks operator semantics; 'anychip verify' shows the default numerics). "
                   "Lists for another mode are <target>@<mode>.yaml")
    p.add_argument("--symbolic", action="store_true",
                   help="dynamic shapes: make each case's input dims symbols (one per distinct "
                        "size, bounded to it) and compile through the symbolic-shape path a "
                        "dynamic model takes; run at the case's sizes. Expected failures: "
                        "<target>@symbolic.yaml")
    p.add_argument("--jobs", "-j", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per case (default 20)")
    p.add_argument("--json", action="store_true", help="print one JSON object per target")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML (one suite per target)")
    p.add_argument("--per-op", action="store_true", help="print the per-operator table")
    p.add_argument("--expected-dir", metavar="DIR", help="folder of <target>.yaml expected-"
                   "failure lists (default: backends/conformance in the installed package)")
    p.add_argument("--update-expected", action="store_true",
                   help="rewrite the expected-failure lists from this run")
    p.add_argument("--force", action="store_true", help="replace an existing --junit file")
    p.set_defaults(func=run)


def _targets(args) -> list[str]:
    from ..conformance import ORT
    from ..registry import expand_targets

    names = [] if args.target == ORT else expand_targets(args.target)
    if args.target == "all" and not names:
        raise AnychipError("no target can execute or simulate here; see 'anychip targets'.")
    if args.against == ORT or args.target == ORT:
        names.append(ORT)
    return names


class _Progress:
    """Cases done per target: a bar on a terminal (compiler/progress.py); in a log (not a
    TTY, no --quiet) one line per 200 cases, as before."""

    def __init__(self, target: str):
        self.target, self.bar = target, None

    def __call__(self, result, done: int, total: int) -> None:
        if progress.enabled():
            if self.bar is None:
                self.bar = progress.counter(total, self.target, unit="case")
            self.bar.update(1)
            if done == total:
                self.bar.close()
        elif not progress.silenced() and (done % 200 == 0 or done == total):
            print(f"{self.target}: {done}/{total} cases", file=sys.stderr, flush=True)


def run(args) -> int:
    from ..conformance import cases as case_store
    from ..conformance import expected as exp
    from ..conformance import run_conformance, suite_default_options
    from ..conformance.report import failure_classes, junit_xml, per_op

    if args.jobs < 1 or args.timeout <= 0:
        raise AnychipError("--jobs must be >= 1 and --timeout > 0.")
    names = _targets(args)
    ops = args.ops.split(",") if args.ops else None
    wanted = args.cases.split(",") if args.cases else None
    selected = case_store.select(case_store.collect(), ops, wanted, args.limit)
    if not selected:
        raise AnychipError("no conformance case matches --ops/--cases; see the ONNX operator "
                           "names with 'anychip conformance --per-op'.")
    directory = Path(args.expected_dir) if args.expected_dir else None
    reports = []
    for name in names:
        report = run_conformance(name, selected=selected, jobs=args.jobs, timeout=args.timeout,
                                 progress=None if args.json else _Progress(name),
                                 precision_mode=args.precision_mode,
                                 symbolic=args.symbolic)
        mode = report.extra.get("precision_mode")
        default = suite_default_options(name).get("precision_mode")
        list_name = name if mode in (None, default) else f"{name}@{mode}"
        if report.extra.get("symbolic"):
            list_name += "@symbolic"
        listed = exp.load_expected(list_name, directory)
        report.expectation = exp.check(report.results, listed,
                                       str(exp.expected_path(list_name, directory)))
        if args.update_expected:
            path = exp.update_expected(list_name, report.results, report.onnx_version,
                                       directory)
            print(f"wrote {path}", file=sys.stderr)
        reports.append(report)
    if args.junit:
        write_file(args.junit, lambda tmp: tmp.write_bytes(junit_xml(reports)), force=args.force)
    if args.json:
        objs = [r.as_dict() for r in reports]
        print(json.dumps(objs[0] if len(objs) == 1 else objs, indent=1))
    else:
        for report in reports:
            _print_text(report, args.per_op, per_op, failure_classes)
    if args.update_expected:
        return 0
    return 0 if all(r.expectation.ok for r in reports) else 1


def _print_text(report, show_ops: bool, per_op, failure_classes) -> None:
    print(report.summary())
    if show_ops:
        rows = [[op, c["passed"], c["failed"], c["unsupported"], c["compiled"], sum(c.values())]
                for op, c in per_op(report.results)]
        print(table(["op", "passed", "failed", "unsupported", "compiled", "total"], rows))
    classes = failure_classes(report.results, top=10)
    if classes:
        print("most common reasons:")
        for count, reason, example in classes:
            print(f"  {count:5d}  {reason}  (e.g. {example})")
    check = report.expectation
    if check is None:
        return
    if check.ok:
        print(f"matches {check.file}: {len(check.expected_failures)} expected failures")
        return
    for r in check.new_failures[:20]:
        print(f"NEW FAILURE {r.name} ({r.op}): {r.status}: {r.reason}")
    for r in check.unexpected_passes[:20]:
        print(f"UNEXPECTED PASS {r.name} ({r.op}): remove it from {check.file}")
    more = len(check.new_failures) + len(check.unexpected_passes) - 40
    if more > 0:
        print(f"... and {more} more")
    print(f"{len(check.new_failures)} new failures, {len(check.unexpected_passes)} unexpected "
          f"passes against {check.file}; fix them or rerun with --update-expected")
