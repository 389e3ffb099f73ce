"""`anychip farm --tracker HOST:PORT [--json]`: the farm's servers per key, free and busy."""

from __future__ import annotations

import json

from .common import table


def add_parser(sub) -> None:
    p = sub.add_parser("farm", help="list the farm's servers per key (TVM RPC tracker summary)")
    p.add_argument("--tracker", required=True, metavar="HOST:PORT", help="the TVM RPC tracker")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..farm.address import parse_address
    from ..farm.tracker import summary

    keys = summary(parse_address(args.tracker, "--tracker"))
    if args.json:
        print(json.dumps([k.as_dict() for k in keys.values()], indent=1))
        return 0
    rows = [[k.key, len(k.servers), k.free, k.busy, k.pending, " ".join(sorted(k.servers))]
            for k in keys.values() if k.servers or k.pending]
    if not rows:
        print(f"no server is registered with tracker {args.tracker}; start one with "
              f"'anychip serve --tracker {args.tracker}'")
        return 0
    print(table(["key", "servers", "free", "busy", "waiting", "addresses"], rows))
    return 0
