"""Every CLI value is checked when the command line is parsed, before anything runs.

Options declared with `type=int` or `type=float` in any subcommand get checked converters:
no negative counts or seeds, no NaN or infinite floats, no integers beyond 64 bits, ports in
range. A bad value is one line and exit 2 (argparse's usage block is left out: the message
names the option and `--help` shows the rest).
"""

from __future__ import annotations

import argparse
import math
import sys

MAX_INT = 2**63 - 1
# options whose value must be at least 1 (0 would mean "do nothing" or divide by zero)
POSITIVE = {"jobs", "repeat", "batch_size", "epochs", "top", "trials", "limit", "timeout",
            "job_timeout", "memory_gb", "minutes", "max_new_tokens"}
UPPER = {"port": 65535, "port_end": 65535, "seed": 2**32 - 1}


def checked_int(dest: str):
    low = 1 if dest in POSITIVE else 0
    high = UPPER.get(dest, MAX_INT)

    def convert(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range [{low}, {high}]")
        return value

    convert.__name__ = "int"
    return convert


def checked_float(dest: str):
    positive = dest in POSITIVE

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise argparse.ArgumentTypeError(
                f"{text} must be a finite number {'> 0' if positive else '>= 0'}")
        return value

    convert.__name__ = "float"
    return convert


def shape_item(text: str) -> str:
    """`--shape NAME=1x3x224x224`, checked now (dims bounded), kept as text for parse_shapes."""
    from ..errors import AnychipError
    from .common import parse_shapes

    try:
        parse_shapes([text])
    except AnychipError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


class CheckedParser(argparse.ArgumentParser):
    """argparse with checked int/float options and one-line errors (exit 2)."""

    def add_argument(self, *args, **kwargs):
        dest = kwargs.get("dest") or next((a.lstrip("-") for a in args if a.startswith("--")),
                                          args[0] if args else "")
        dest = dest.replace("-", "_")
        if kwargs.get("type") is int:
            kwargs["type"] = checked_int(dest)
        elif kwargs.get("type") is float:
            kwargs["type"] = checked_float(dest)
        elif dest == "shape" and "type" not in kwargs:
            kwargs["type"] = shape_item
        return super().add_argument(*args, **kwargs)

    def error(self, message: str):
        print(f"anychip: error: {self.prog}: {message} (see '{self.prog} --help')",
              file=sys.stderr)
        sys.exit(2)
