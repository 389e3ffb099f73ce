"""Typed, validated options of one backend family (the `Options` of the backend contract).

A family declares its user-facing options once, as a frozen dataclass deriving from
`FamilyOptions`; everything else follows from that declaration: keyword arguments of
`anychip.compile(model, target=..., **options)` are checked against it (an unknown key is an
error naming the key and the valid ones, never silently ignored), strings coming from the
command line are converted to the declared type, and the CLI generates one `--flag` per field,
shown in a help group of that family only. Why a dataclass: the compiler can then list,
validate and document a family's options without knowing the family.

    @dataclass(frozen=True)
    class Options(FamilyOptions):
        layout: str = option("NHWC", "activation layout", choices=("NHWC", "NCHW"))
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from .errors import AnychipError


def option(default: Any, help: str, choices: tuple | None = None, cli: bool = True,  # noqa: A002
           metavar: str | None = None) -> Any:
    """A field of a family's Options: its default, one line of help, allowed values.
    `cli=False` keeps a Python-only option (e.g. a tile given as a list) off the command line."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices,
                                                        "cli": cli, "metavar": metavar})


@dataclasses.dataclass(frozen=True)
class FamilyOptions:
    """Base of every family's Options; a family without options uses it as is (no fields)."""

    @classmethod
    def fields(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in cls.fields()]

    @classmethod
    def parse(cls, values: dict[str, Any], family: str, where: str = "") -> FamilyOptions:
        """Validated options from keyword arguments or CLI strings; `where` names the target
        in messages."""
        known = {f.name: f for f in cls.fields()}
        prefix = f"{where}: " if where else ""
        kwargs = {}
        for key, value in values.items():
            if key not in known:
                valid = ", ".join(sorted(known)) or "none"
                raise AnychipError(f"{prefix}unknown option '{key}' for the '{family}' family "
                                   f"(its options: {valid}).")
            kwargs[key] = _convert(value, known[key], cls, prefix)
        return cls(**kwargs)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _declared_type(f: dataclasses.Field, cls) -> Any:
    hints = typing.get_type_hints(cls)
    return hints.get(f.name, Any)


def _convert(value: Any, f: dataclasses.Field, cls, prefix: str) -> Any:
    """Strings from the command line become the declared type; other values are checked."""
    kind = _declared_type(f, cls)
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    base = args[0] if args and typing.get_origin(kind) in (typing.Union, types.UnionType) \
        else kind
    if value is not None and base is bool and isinstance(value, str):
        lowered = value.strip().lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise AnychipError(f"{prefix}option '{f.name}' takes true or false, not '{value}'.")
        value = lowered in ("true", "1", "yes", "on")
    elif value is not None and base is int and isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise AnychipError(f"{prefix}option '{f.name}' takes an integer, not '{value}'.") \
                from None
    choices = f.metadata.get("choices")
    if choices and value is not None:
        normal = value.upper() if isinstance(value, str) and all(
            isinstance(c, str) and c.isupper() for c in choices) else value
        if normal not in choices:
            raise AnychipError(f"{prefix}option '{f.name}' is one of {', '.join(map(str, choices))}"
                               f", not '{value}'.")
        value = normal
    return value
