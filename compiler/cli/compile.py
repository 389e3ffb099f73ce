"""`anychip compile MODEL --target T -o OUT`: build an artifact folder."""

from __future__ import annotations

from pathlib import Path

from ..atomic import check_output
from ..driver import compile_model
from .common import add_model_args, parse_shapes, shape_options
from .family_flags import add_family_flags, family_options_for


def add_parser(sub) -> None:
    p = sub.add_parser("compile", help="compile a model into an artifact folder")
    add_model_args(p)
    p.add_argument("-o", "--output", help="artifact folder to write (default: NAME.anychip)")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="also print the time of each compile step and the family's report "
                        "sections")
    add_family_flags(p)
    p.set_defaults(func=run)


def default_output(model: str, target: str) -> Path:
    stem = model[4:] if model.startswith("zoo:") else Path(model).stem
    return Path(f"{stem}.{target}.anychip")


def run(args) -> int:
    extra = family_options_for(args, args.target)
    out = Path(args.output) if args.output else default_output(args.model, args.target)
    check_output(out, args.force)   # refuse '-o .', a user's folder... before compiling
    art = compile_model(args.model, target=args.target, precision=args.precision,
                        shapes=parse_shapes(args.shape), **shape_options(args), **extra)
    art.save(out, force=args.force)
    ex = art.execution()
    print(f"wrote {out} ({args.target}, {art.precision}; here: {ex.mode.value}: {ex.why})")
    if args.verbose:
        print(verbose_text(art.report, art.target))
    return 0


def verbose_text(report: dict, target: str) -> str:
    """Step timings (report.json steps_s) and the family's own sections, as text."""
    from .analyze import family_sections

    steps = report.get("steps_s") or {}
    lines = ["steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items())] if steps else []
    for title, text in family_sections(report, target):
        lines += ["", title, text]
    for m in report.get("native_messages", []):
        lines.append(f"TVM logged {m['count']}x: {m['message']}")
    return "\n".join(lines)
