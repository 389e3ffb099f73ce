"""`anychip zoo`: the built-in models usable as zoo:NAME."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("zoo", help="list the built-in models (use them as zoo:NAME)")
    p.set_defaults(func=run)


def run(args) -> int:
    from anychip import models

    for name in models.names():
        print(f"zoo:{name}")
    return 0
