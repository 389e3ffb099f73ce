"""Entry point of the `anychip` command.

Exit codes (docs/architecture.md): 0 ok, 1 a check failed, 2 bad input or usage, 3 the target cannot
execute on this machine. Errors are one line; `--debug` adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import AnychipError, out_of_memory

# Each subcommand is one module with add_parser(subparsers) and run(args) -> int.
COMMANDS = ["targets", "compile", "run", "verify", "compare", "doctor", "zoo", "analyze", "train",
            "conformance", "matrix", "bench", "tune", "generate", "verify_lm", "scan", "serve",
            "farm"]


def build_parser() -> argparse.ArgumentParser:
    from .values import CheckedParser

    parser = CheckedParser(prog="anychip", description="One model, any chip: compile "
                           "ONNX/PyTorch models with TVM and verify every backend.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress display (it shows only on a terminal, never with "
                             "--json)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__package__}.{name}":
                continue  # a subcommand that is not part of this build
            raise
        module.add_parser(sub)
    for command in sub.choices.values():   # `anychip verify ... --quiet` works too
        try:
            command.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                                 help="no progress display")
        except argparse.ArgumentError:
            pass   # the command has its own --quiet
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:   # the `anychip` command (not a call from Python): compile in a child
        from .isolate import limit_self, run_isolated, wanted

        if wanted(sys.argv[1:]):
            return run_isolated(sys.argv[1:])
        limit_self()
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:   # a bad value (one line printed, exit 2) or --help (0)
        return exc.code if isinstance(exc.code, int) else 2
    from .. import progress

    progress.configure(quiet=args.quiet or bool(getattr(args, "json", False)))
    try:
        return int(args.func(args) or 0)
    except AnychipError as exc:
        if args.debug:
            raise
        print(f"anychip: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("anychip: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        if args.debug:
            raise
        print("anychip: error: out of memory (the compile's ceiling is "
              "ANYCHIP_COMPILE_MEMORY_BYTES); give smaller static shapes.", file=sys.stderr)
        return 2
    except Exception as exc:  # an anychip or TVM bug: still one line unless --debug
        if args.debug:
            raise
        if out_of_memory(exc):    # std::bad_alloc from TVM: sizes the input asked for
            print(f"anychip: error: out of memory in '{args.command}': the model's shapes or "
                  f"the input's values (a Range count, a shape) ask for more memory than "
                  f"this machine gives; use smaller inputs.", file=sys.stderr)
            return 2
        text = (str(exc).strip().splitlines() or [""])[-1][:300]
        print(f"anychip: internal error: {type(exc).__name__}: {text} (rerun with --debug and "
              f"report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
