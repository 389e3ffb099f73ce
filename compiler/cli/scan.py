"""`anychip scan PATH`: find the CUDA lock-in in a PyTorch codebase and say how to port it.

Exit codes make it a CI gate: 1 when a finding blocks (the chosen target, or any non-NVIDIA
accelerator without --target), 0 otherwise, 2 for a bad path or option. Output files are
written atomically; --fix prints a diff and edits nothing unless --write.
"""

from __future__ import annotations

import json
import sys

from ..atomic import write_file
from ..errors import AnychipError


def add_parser(sub) -> None:
    p = sub.add_parser("scan", help="find CUDA lock-in in a PyTorch codebase and the portable "
                                    "form of each piece")
    p.add_argument("path", help="folder (or file) to scan: Python, .cu/.cuh/C++, requirements, "
                                "pyproject.toml")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--target", "-t", help="judge against one chip (see 'anychip targets')")
    which.add_argument("--family", help="judge against every chip of a family (worst case)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--sarif", metavar="FILE", help="write SARIF 2.1.0 (GitHub code scanning)")
    p.add_argument("--markdown", metavar="FILE", help="write the report as Markdown")
    p.add_argument("--fix", action="store_true", help="print a unified diff of the safe "
                   "mechanical rewrites (apply with 'git apply' or 'patch -p1')")
    p.add_argument("--write", action="store_true", help="with --fix: apply the rewrites in "
                   "place (atomically, file by file)")
    p.add_argument("--force", action="store_true", help="overwrite existing --sarif/--markdown "
                                                        "files")
    p.add_argument("--jobs", "-j", type=int, help="worker processes (default: CPU count)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..scan.fix import plan, write
    from ..scan.report import as_json, render_markdown, render_text
    from ..scan.sarif import to_sarif
    from ..scan.targets import judge, select
    from ..scan.walk import scan_path

    if args.write and not args.fix:
        raise AnychipError("--write applies the rewrites of --fix; pass both.")
    if args.jobs is not None and args.jobs < 1:
        raise AnychipError(f"--jobs {args.jobs}: give at least 1.")
    profiles = select(args.target, args.family)  # before scanning: a bad target fails fast
    result = scan_path(args.path, jobs=args.jobs)
    judge(result, profiles)
    if args.sarif:
        text = json.dumps(to_sarif(result), indent=2)
        write_file(args.sarif, lambda tmp: tmp.write_text(text), force=args.force)
    if args.markdown:
        text = render_markdown(result)
        write_file(args.markdown, lambda tmp: tmp.write_text(text), force=args.force)
    if args.fix:
        fixes = plan(result)
        if args.write:
            written = write(result, fixes)
            print(f"rewrote {len(written)} file(s) in place", file=sys.stderr)
        else:
            sys.stdout.write(fixes.diff())
        for note in fixes.notes:
            print(f"anychip scan --fix: {note}", file=sys.stderr)
        print(f"anychip scan --fix: {sum(f.rewrites for f in fixes.files)} rewrite(s) in "
              f"{len(fixes.files)} file(s)", file=sys.stderr)
    elif args.json:
        print(json.dumps(as_json(result), indent=2))
    else:
        print(render_text(result))
    return result.exit_code()
