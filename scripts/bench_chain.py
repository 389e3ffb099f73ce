"""Compile time against graph size: chains of N elementwise nodes, compiled for one target.

    python scripts/bench_chain.py --nodes 1000 10000 100000 [--target cpu] [--json]

Each chain alternates Add (a constant), Relu and Mul (a constant) on a small [1, 16] float
tensor. The compile cache is bypassed (a fresh $ANYCHIP_CACHE_DIR). Prints, per size, the
total and the driver's step timings (report.json `steps_s`), the time per node and the
ratio to the previous size, and the load average before and after, so that the scaling (not
the absolute time) can be read on a shared machine. docs/performance.md records results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPS = ("Add", "Relu", "Mul")


def chain_model(nodes: int, width: int = 16) -> onnx.ModelProto:
    """A chain of `nodes` elementwise nodes (Add, Relu, Mul in turn) on a [1, width] input."""
    add = numpy_helper.from_array(np.full((1, width), 0.5, np.float32), "c_add")
    mul = numpy_helper.from_array(np.full((1, width), 0.99, np.float32), "c_mul")
    graph_nodes, prev = [], "x"
    for i in range(nodes):
        op = OPS[i % len(OPS)]
        out = "y" if i == nodes - 1 else f"t{i}"
        inputs = [prev] if op == "Relu" else [prev, "c_add" if op == "Add" else "c_mul"]
        graph_nodes.append(helper.make_node(op, inputs, [out], name=f"n{i}"))
        prev = out
    graph = helper.make_graph(
        graph_nodes, f"chain{nodes}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        [add, mul])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def chain_reference(x: np.ndarray, nodes: int) -> np.ndarray:
    """What the chain computes, in float32 numpy (for checking a compiled chain)."""
    y = x.astype(np.float32)
    for i in range(nodes):
        op = OPS[i % len(OPS)]
        y = (y + np.float32(0.5) if op == "Add" else np.maximum(y, np.float32(0))
             if op == "Relu" else y * np.float32(0.99)).astype(np.float32)
    return y


def compile_chain(nodes: int, target: str = "cpu") -> dict:
    """Compile one chain without the cache; total seconds and the driver's step timings."""
    import anychip

    model = chain_model(nodes)
    start = time.perf_counter()
    artifact = anychip.compile(model, target=target)
    total = time.perf_counter() - start
    report = artifact.report if hasattr(artifact, "report") else {}
    steps = dict((report or {}).get("steps_s") or {})
    return {"nodes": nodes, "total_s": round(total, 2),
            "steps_s": {k: round(v, 2) for k, v in steps.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ["ANYCHIP_CACHE_DIR"] = tempfile.mkdtemp(prefix="anychip-bench-chain-")
    os.environ.setdefault("ANYCHIP_NO_CACHE", "1")
    load_before = os.getloadavg()
    rows, prev = [], None
    for n in args.nodes:
        row = compile_chain(n, args.target)
        row["ms_per_node"] = round(1000 * row["total_s"] / n, 2)
        if prev is not None:
            row["ratio_to_previous"] = round(row["total_s"] / prev["total_s"], 2)
            row["size_ratio"] = round(n / prev["nodes"], 2)
        rows.append(row)
        prev = row
        if not args.json:
            steps = ", ".join(f"{k} {v} s" for k, v in row["steps_s"].items())
            ratio = (f", x{row['ratio_to_previous']} for x{row['size_ratio']} nodes"
                     if "ratio_to_previous" in row else "")
            print(f"{n:>7} nodes: {row['total_s']:8.1f} s ({row['ms_per_node']} ms/node"
                  f"{ratio}); {steps}", flush=True)
    result = {"target": args.target, "machine": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "load_before": [round(v, 2) for v in load_before],
              "load_after": [round(v, 2) for v in os.getloadavg()],
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"load average before {result['load_before']}, after {result['load_after']}; "
              f"{result['cores']} cores; {result['date']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
