"""`anychip compare MODEL --target T`: per-node error vs ONNX Runtime, first diverging node."""

from __future__ import annotations

import json
from dataclasses import asdict

from ..compare import compare_layers
from .common import table


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="layer-by-layer error vs ONNX Runtime; first diverging node")
    p.add_argument("model", help="path to an .onnx file, or zoo:NAME")
    p.add_argument("--target", "-t", default="cpu")
    p.add_argument("--all", action="store_true", help="print every node, not only up to the first failure")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    rows, how = compare_layers(args.model, target=args.target)
    first_bad = next((r for r in rows if not r.passed), None)
    if args.json:
        print(json.dumps({"target": args.target, "how": how, "nodes": [asdict(r) for r in rows],
                          "first_failure": asdict(first_bad) if first_bad else None}, indent=2))
        return 0 if first_bad is None else 1
    shown = rows if args.all or first_bad is None else rows[: rows.index(first_bad) + 1]
    print(table(["node", "op", "output", "max abs", "max rel", "ok"],
                [[r.node, r.op, r.output, f"{r.max_abs:.3g}", f"{r.max_rel:.3g}",
                  "yes" if r.passed else "NO"] for r in shown[-40:]]))
    if first_bad:
        print(f"first node out of tolerance on {args.target} ({how}): '{first_bad.node}' "
              f"({first_bad.op}), max abs {first_bad.max_abs:.3g}")
        return 1
    print(f"all {len(rows)} node outputs within tolerance on {args.target} ({how})")
    return 0
