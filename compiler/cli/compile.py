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
    return 0
