"""`anychip targets`: every chip profile, its family, vendor and what it can do here."""

from __future__ import annotations

import json

from ..registry import targets
from .common import table


def add_parser(sub) -> None:
    p = sub.add_parser("targets", help="list chip profiles and what each can do on this machine")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.set_defaults(func=run)


def run(args) -> int:
    infos = targets()
    if args.json:
        print(json.dumps([t.as_dict() for t in infos], indent=2))
        return 0
    print(table(["target", "family", "vendor", "here", "why"],
                [[t.name, t.family, t.vendor, t.execution, t.why] for t in infos]))
    return 0
