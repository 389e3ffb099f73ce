"""`anychip compare MODEL --target T`: per-node error vs ONNX Runtime, first diverging node."""

from __future__ import annotations

import json
from dataclasses import asdict

from ..compare import compare_layers_at
from ..format_error import FORMAT_ERROR_MULTIPLIER
from .common import add_at_arg, add_shape_args, model_options, parse_at, sizes_text, table


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="layer-by-layer error vs ONNX Runtime; first diverging node")
    p.add_argument("model", help="path to an .onnx file, or zoo:NAME")
    p.add_argument("--target", "-t", default="cpu")
    add_shape_args(p)
    add_at_arg(p)
    p.add_argument("--all", action="store_true", help="print every node, not only up to the first failure")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    rows, how, sizes = compare_layers_at(args.model, target=args.target, at=parse_at(args.at),
                                         **model_options(args))
    if sizes:   # a symbolic model: compared at one shape, stated
        how = f"{how} at {sizes_text(sizes)}"
    first_bad = next((r for r in rows if not r.passed), None)
    if args.json:
        print(json.dumps({"target": args.target, "how": how, "sizes": sizes,
                          "nodes": [asdict(r) for r in rows],
                          "first_failure": asdict(first_bad) if first_bad else None}, indent=2))
        return 0 if first_bad is None else 1
    shown = rows if args.all or first_bad is None else rows[: rows.index(first_bad) + 1]

    def ok(r) -> str:
        if r.rule == "format-error":     # outside rtol/atol: judged against the format's error
            return f"{'fmt' if r.passed else 'NO'} ({r.rmse / max(r.format_rmse, 1e-30):.1f}x)"
        return "yes" if r.passed else "NO"

    print(table(["node", "op", "output", "max abs", "max rel", "ok"],
                [[r.node, r.op, r.output, f"{r.max_abs:.3g}", f"{r.max_rel:.3g}", ok(r)]
                 for r in shown[-40:]]))
    if any(r.rule == "format-error" for r in shown):
        print(f"fmt: outside rtol/atol but within {FORMAT_ERROR_MULTIPLIER:g}x the RMS error of "
              f"the model run with every tensor stored in the precision used (Nx: the ratio)")
    if first_bad:
        beyond = (f"beyond {FORMAT_ERROR_MULTIPLIER:g}x its format's own error"
                  if first_bad.rule == "format-error" else "out of tolerance")
        print(f"first node {beyond} on {args.target} ({how}): '{first_bad.node}' "
              f"({first_bad.op}), max abs {first_bad.max_abs:.3g}")
        return 1
    also = " or within their format's error" if any(r.rule == "format-error" for r in rows) \
        else ""
    print(f"all {len(rows)} node outputs within tolerance{also} on {args.target} ({how})")
    return 0
