"""`anychip analyze MODEL --target T [--json]`: the porting report of one model on one chip.

It compiles the model and reads the artifact's report.json, so it shows what the backend
really did: where each operator runs (and why, for host fallbacks), which dtypes changed,
buffer and memory use against the chip's, and the estimated time with its roofline bound.
Sections a backend does not report are left out; the command never branches on a family.
"""

from __future__ import annotations

import json

from ..driver import compile_model
from .common import add_model_args, model_options
from .family_flags import add_family_flags, family_options_for


def add_parser(sub) -> None:
    p = sub.add_parser("analyze", help="porting report: placement, fallbacks, dtypes, memory, "
                                       "estimated time")
    add_model_args(p)
    p.add_argument("--top", type=int, default=10, help="slowest kernels to list (default 10)")
    p.add_argument("--json", action="store_true", help="print report.json's analysis as JSON")
    add_family_flags(p)
    p.set_defaults(func=run)


def run(args) -> int:
    extra = family_options_for(args, args.target)
    art = compile_model(args.model, target=args.target, precision=args.precision,
                        **model_options(args), **extra)
    report = art.report
    if args.json:
        print(json.dumps({"model": args.model, "precision": art.precision, **report}, indent=2,
                         default=str))
    else:
        print(render(args.model, art.precision, report, args.top, art.target))
    return 0


def render(model: str, precision: str, report: dict, top: int = 10,
           target: str | None = None) -> str:
    """The porting report as text: one header line, then the sections the target's family
    renders from its report (its `render` hook), each a title and a body."""
    target = target or report.get("target", "?")
    lines = [f"{model} on {target}: precision {precision}"
             + (f" (precision_mode {report['precision_mode']})" if "precision_mode" in report
                else "")
             + f"; here: {report.get('execution_here', '?')}"]
    for title, text in family_sections(report, target, top):
        lines += ["", title, text] if title else ["", text]
    if len(lines) == 1:
        lines.append("(this target's report has no porting analysis)")
    return "\n".join(lines)


def family_sections(report: dict, target: str, top: int = 10) -> list[tuple[str, str]]:
    """The sections the target's family renders (none when its backend is not installed)."""
    from ..registry import backends, profiles

    profile = profiles().get(target)
    backend = backends().get(profile.family) if profile is not None else None
    return list(backend.render(report, top=top)) if backend is not None else []
