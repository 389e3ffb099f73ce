"""Helpers shared by the CLI subcommands: argument parsing and plain-text tables."""

from __future__ import annotations

import math
import re

from ..errors import AnychipError
from ..limits import MAX_DIM, MAX_STATIC_ELEMENTS
from ..text_table import table

__all__ = ["add_model_args", "parse_dims", "parse_gears", "parse_shapes", "table"]

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


def add_model_args(parser, target_help: str = "target name (see 'anychip targets')") -> None:
    parser.add_argument("model", help="path to an .onnx file, or zoo:NAME (see 'anychip zoo')")
    parser.add_argument("--target", "-t", default="cpu", help=target_help)
    parser.add_argument("--shape", action="append", metavar="NAME=1x3x224x224",
                        help="static shape for an input (repeatable)")
    parser.add_argument("--dim", action="append", metavar="NAME=LO..HI",
                        help="bounds of a symbolic dim, e.g. seq=1..2048 (repeatable; default "
                             "ranges: docs/dynamic-shapes.md)")
    parser.add_argument("--gears", action="append", metavar="NAME=1,2,4,8",
                        help="families with static shapes: the sizes of a symbolic dim to "
                             "compile (repeatable; "
                             "default: powers of two within the bounds)")
    parser.add_argument("--precision", help="fp32, tf32, fp16, bf16 or mixed (per target)")
