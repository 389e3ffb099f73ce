"""Helpers shared by the CLI subcommands: argument parsing and plain-text tables."""

from __future__ import annotations

import math
import re

from ..errors import AnychipError
from ..limits import MAX_DIM, MAX_STATIC_ELEMENTS
from ..text_table import table

__all__ = ["add_model_args", "parse_shapes", "table"]

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


def add_model_args(parser, target_help: str = "target name (see 'anychip targets')") -> None:
    parser.add_argument("model", help="path to an .onnx file, or zoo:NAME (see 'anychip zoo')")
    parser.add_argument("--target", "-t", default="cpu", help=target_help)
    parser.add_argument("--shape", action="append", metavar="NAME=1x3x224x224",
                        help="static shape for an input (repeatable)")
    parser.add_argument("--precision", help="fp32, tf32, fp16, bf16 or mixed (per target)")
