"""Helpers shared by the CLI subcommands: argument parsing and plain-text tables."""

from __future__ import annotations

import math
import re

from ..errors import AnychipError
from ..limits import MAX_DIM, MAX_STATIC_ELEMENTS
from ..text_table import table

__all__ = ["add_at_arg", "add_model_args", "add_shape_args", "model_options", "parse_at",
           "parse_dims", "parse_gears", "parse_shapes", "sizes_text", "table"]

_SHAPE = re.compile(r"^(?P<name>.+)=(?P<dims>\d+(x\d+)*)$")


def parse_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """['x=1x3x224x224', ...] -> {'x': (1, 3, 224, 224)}."""
    shapes = {}
    for item in items or []:
        match = _SHAPE.match(item)
        if not match:
            raise AnychipError(f"--shape '{item}': expected NAME=1x3x224x224.")
        dims = tuple(int(d) for d in match["dims"].split("x"))
        if any(d > MAX_DIM for d in dims):
            raise AnychipError(f"--shape '{item}': a dimension is over {MAX_DIM}.")
        if math.prod(dims) > MAX_STATIC_ELEMENTS:
            raise AnychipError(f"--shape '{item}': {math.prod(dims)} elements, over the limit "
                               f"of {MAX_STATIC_ELEMENTS} (ANYCHIP_MAX_ELEMENTS).")
        shapes[match["name"]] = dims
    return shapes


_DIM = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_.]*)=(?P<lo>\d+)\.\.(?P<hi>\d+)$")
_GEARS = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_.]*)=(?P<sizes>\d+(,\d+)*)$")


def parse_dims(items: list[str] | None) -> dict[str, tuple[int, int]]:
    """['seq=1..2048', ...] -> {'seq': (1, 2048)}: bounds of symbolic dims."""
    dims = {}
    for item in items or []:
        match = _DIM.match(item)
        if not match:
            raise AnychipError(f"--dim '{item}': expected NAME=LO..HI, e.g. seq=1..2048.")
        lo, hi = int(match["lo"]), int(match["hi"])
        if not 1 <= lo <= hi or hi > MAX_DIM:
            raise AnychipError(f"--dim '{item}': need 1 <= LO <= HI <= {MAX_DIM}.")
        dims[match["name"]] = (lo, hi)
    return dims


def parse_gears(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """['batch=1,2,4,8', ...] -> {'batch': (1, 2, 4, 8)}: the static sizes a static-shape family compiles."""
    gears = {}
    for item in items or []:
        match = _GEARS.match(item)
        if not match:
            raise AnychipError(f"--gears '{item}': expected NAME=1,2,4,8.")
        sizes = tuple(sorted({int(v) for v in match["sizes"].split(",")}))
        if sizes[0] < 1 or sizes[-1] > MAX_DIM:
            raise AnychipError(f"--gears '{item}': sizes must be 1..{MAX_DIM}.")
        gears[match["name"]] = sizes
    return gears


def shape_options(args) -> dict:
    """dims= and gears= keyword arguments from --dim / --gears (empty when not given)."""
    out = {}
    dims, gears = parse_dims(getattr(args, "dim", None)), parse_gears(getattr(args, "gears", None))
    if dims:
        out["dims"] = dims
    if gears:
        out["gears"] = gears
    return out


_AT = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_.]*)=(?P<value>\d+)$")


def parse_at(items: list[str] | None) -> dict[str, int]:
    """['batch=4', ...] -> {'batch': 4}: the size of a symbol to run a symbolic artifact at."""
    at = {}
    for item in items or []:
        match = _AT.match(item)
        if not match or not 1 <= int(match["value"]) <= MAX_DIM:
            raise AnychipError(f"--at '{item}': expected NAME=N with 1 <= N <= {MAX_DIM}, "
                               f"e.g. batch=4.")
        at[match["name"]] = int(match["value"])
    return at


def model_options(args) -> dict:
    """shapes=, dims= and gears= keyword arguments from --shape / --dim / --gears: what every
    command that compiles a model passes on (docs/dynamic-shapes.md)."""
    return {"shapes": parse_shapes(getattr(args, "shape", None)), **shape_options(args)}


def sizes_text(sizes: dict[str, int]) -> str:
    """{'batch': 2, 'seq': 7} -> 'batch=2, seq=7' ('' for a static model)."""
    return ", ".join(f"{k}={v}" for k, v in sizes.items())


def add_at_arg(parser, default: str = "its lower bound") -> None:
    parser.add_argument("--at", action="append", metavar="NAME=N",
                        help=f"a symbolic model: the size of a symbol to run at (repeatable; "
                             f"default: {default}, or its smallest gear where only exact gears "
                             f"run); --shape instead compiles one static shape")


def add_shape_args(parser) -> None:
    """--shape / --dim / --gears: a model's static shapes or its symbols' bounds and gears."""
    parser.add_argument("--shape", action="append", metavar="NAME=1x3x224x224",
                        help="static shape for an input (repeatable)")
    parser.add_argument("--dim", action="append", metavar="NAME=LO..HI",
                        help="bounds of a symbolic dim, e.g. seq=1..2048 (repeatable; default "
                             "ranges: docs/dynamic-shapes.md)")
    parser.add_argument("--gears", action="append", metavar="NAME=1,2,4,8",
                        help="families with static shapes: the sizes of a symbolic dim to "
                             "compile (repeatable; "
                             "default: powers of two within the bounds)")


def add_model_args(parser, target_help: str = "target name (see 'anychip targets')") -> None:
    parser.add_argument("model", help="path to an .onnx file, or zoo:NAME (see 'anychip zoo')")
    parser.add_argument("--target", "-t", default="cpu", help=target_help)
    add_shape_args(parser)
    parser.add_argument("--precision", help="fp32, tf32, fp16, bf16 or mixed (per target)")
