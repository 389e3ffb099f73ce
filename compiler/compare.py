"""Layer-by-layer comparison (docs/architecture.md): find the first node whose output leaves tolerance.

Every intermediate tensor with a known type becomes a graph output on both sides, the model is
compiled for the target and run next to ONNX Runtime on the same inputs, and nodes are checked
in topological order. The first node out of tolerance is where a porting bug usually lives.

At a reduced precision every node misses float32-level agreement a little; a node whose output
fails the table is then judged by the format-error rule (format_error.py) on the exposed
intermediates of ONNX Runtime's storage emulation, so the first failure is the first node whose
error goes beyond what storing tensors in that format explains.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import onnx

from .backend import CompileOptions
from .driver import compile_source
from .errors import NotExecutable
from .format_error import emulated_outputs, has_emulation, judge
from .frontend import load_model
from .inputs import random_inputs
from .reference import run_onnxruntime
from .tolerances import compare, tolerance_for


@dataclass
class NodeError:
    node: str
    op: str
    output: str
    max_abs: float
    max_rel: float
    passed: bool
    rule: str = "elementwise"            # or "format-error" (see the module docstring)
    rmse: float | None = None
    format_rmse: float | None = None


def expose_intermediates(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose graph outputs include every typed node output, in node order."""
    exposed = copy.deepcopy(model)
    known = {vi.name: vi for vi in exposed.graph.value_info}
    present = {o.name for o in exposed.graph.output}
    for node in exposed.graph.node:
        for name in node.output:
            vi = known.get(name)
            if (name and vi is not None and name not in present
                    and vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape")):
                exposed.graph.output.append(vi)
                present.add(name)
    return exposed


def compare_layers(model, target: str = "cpu", seed: int = 0,
                   **extra) -> tuple[list[NodeError], str]:
    """Per-node errors in topological order, and how the target ran."""
    rows, how, _ = compare_layers_at(model, target, seed, **extra)
    return rows, how


def compare_layers_at(model, target: str = "cpu", seed: int = 0, *,
                      shapes: dict | None = None, dims: dict | None = None,
                      gears: dict | None = None, at: dict[str, int] | None = None,
                      **extra) -> tuple[list[NodeError], str, dict[str, int]]:
    """compare_layers, and the symbol sizes it ran at: a model with symbolic dims compiles once
    (`dims` bounds, `gears` for a static-shape family) and is compared at one shape, each symbol
    at `at[name]` or else its lower bound (Artifact.sizes_for); `shapes` specialises instead."""
    from .driver import normalise_gears

    shapes = {k: tuple(int(d) for d in v) for k, v in (shapes or {}).items()}
    source = load_model(model, None, shapes, dims)
    exposed = load_model(expose_intermediates(source.original), None, None, dims)
    exposed.label = source.label
    options = CompileOptions(shapes=shapes, extra=dict(extra),
                             dims=dict(exposed.extra.get("dims") or {}),
                             gears=normalise_gears(gears))
    artifact = compile_source(exposed, target, options)
    execution = artifact.execution()
    if not execution.can_run:
        raise NotExecutable(f"target '{target}' cannot run here: {execution.why}.")
    sizes = artifact.sizes_for(at)
    feed = random_inputs(artifact.inputs, seed, sizes)
    actual = artifact.run(feed)
    expected = dict(zip([o.name for o in exposed.original.graph.output],
                        run_onnxruntime(exposed.original, feed, source.label)))
    producer = {out: node for node in exposed.original.graph.node for out in node.output}
    emulated: dict | None = None      # run once, and only when a node misses the table

    def emulation() -> dict:
        nonlocal emulated
        if emulated is None:
            values = emulated_outputs(exposed.original, feed, artifact.precision,
                                      source.label) or []
            emulated = dict(zip([o.name for o in exposed.original.graph.output], values))
        return emulated

    rows = []
    for spec in artifact.outputs:
        node = producer.get(spec.name)
        if node is None or spec.name not in expected:
            continue
        exp = expected[spec.name]
        tol = tolerance_for(artifact.precision, exp.dtype)
        cmp = compare(actual[spec.name], exp, tol)
        row = NodeError(node.name or "(unnamed)", node.op_type, spec.name, cmp.max_abs,
                        cmp.max_rel, cmp.passed)
        if not cmp.passed and exp.dtype.kind == "f" and has_emulation(artifact.precision) \
                and spec.name in emulation():
            verdict = judge(actual[spec.name], emulation()[spec.name], exp, tol.atol)
            row.rmse, row.format_rmse = verdict.rmse, verdict.format_rmse
            row.passed, row.rule = verdict.passed, "format-error"
        rows.append(row)
    order = {node.name or "(unnamed)": i for i, node in enumerate(exposed.original.graph.node)}
    rows.sort(key=lambda r: order.get(r.node, len(order)))  # topological (node) order
    return rows, execution.mode.verb, sizes
