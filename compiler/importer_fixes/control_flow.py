"""ONNX-level unrolling of control flow whose trip count static shapes fix.

TVM's Relax importer has no Scan. A Scan (opset >= 9) iterates over the scan axis of its
scan inputs, whose length is a static dimension once input shapes are static, so it can be
written out step by step with ONNX operators TVM does import: Gather the step's slice, a
renamed copy of the body, and Unsqueeze + Concat for the scan outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

MAX_UNROLLED_NODES = 20000


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class Emitter:
    """Collects the nodes that replace one Scan, with fresh value names."""

    def __init__(self, prefix: str, opset: int):
        self.prefix = prefix
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.count = 0

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}/{hint}_{self.count}"

    def const(self, value: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        self.nodes.append(helper.make_node("Constant", [], [name],
                                           value=numpy_helper.from_array(value)))
        return name

    def node(self, op: str, inputs: list[str], hint: str, **attrs) -> str:
        name = self.fresh(hint)
        self.nodes.append(helper.make_node(op, inputs, [name], **attrs))
        return name

    def unsqueeze(self, value: str, axis: int) -> str:
        """Unsqueeze in the model's opset (axes an input from 13, an attribute before).
        A negative axis counts from the end of the output's rank, as Concat's does."""
        if self.opset >= 13:
            axes = self.const(np.array([axis], dtype=np.int64), "axes")
            return self.node("Unsqueeze", [value, axes], "grown")
        return self.node("Unsqueeze", [value], "grown", axes=[axis])

    def body_step(self, body: onnx.GraphProto, bound: list[str], step: int) -> list[str]:
        """A renamed copy of `body` with its inputs bound to `bound`; its output names."""
        names = {vi.name: b for vi, b in zip(body.input, bound)}
        for init in body.initializer:
            names[init.name] = self.const(numpy_helper.to_array(init), "init")
        for node in body.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name = f"{self.prefix}/step{step}/{node.name}" if node.name else ""
            copy.input[:] = [names.get(n, n) if n else "" for n in node.input]
            outs = []
            for out in node.output:
                if out:
                    names[out] = self.fresh(f"s{step}")
                outs.append(names.get(out, ""))
            copy.output[:] = outs
            self.nodes.append(copy)
        return [names.get(o.name, o.name) for o in body.output]


def _scan_length(node: onnx.NodeProto, shapes: dict[str, list[int]], n_state: int,
                 axes: list[int]) -> int | None:
    lengths = set()
    for i, name in enumerate(node.input[n_state:]):
        dims = shapes.get(name)
        if dims is None:
            return None
        axis = axes[i] + len(dims) if axes[i] < 0 else axes[i]
        lengths.add(dims[axis])
    return lengths.pop() if len(lengths) == 1 else None


def _unroll_scan(node: onnx.NodeProto, shapes: dict[str, list[int]], opset: int) -> list | None:
    body = _attr(node, "body")
    n_scan = int(_attr(node, "num_scan_inputs"))
    n_state = len(node.input) - n_scan
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for n in body.node for a in n.attribute):
        return None                     # nested control flow: left to TVM (which refuses it)
    in_axes = list(_attr(node, "scan_input_axes", [0] * n_scan))
    in_dirs = list(_attr(node, "scan_input_directions", [0] * n_scan))
    n_out = len(body.output) - n_state
    out_axes = list(_attr(node, "scan_output_axes", [0] * n_out))
    out_dirs = list(_attr(node, "scan_output_directions", [0] * n_out))
    length = _scan_length(node, shapes, n_state, in_axes)
    if not length or length * len(body.node) > MAX_UNROLLED_NODES:
        return None
    emit = Emitter(node.name or f"scan_{node.output[0]}", opset)
    state = list(node.input[:n_state])
    slices: list[list[str]] = [[] for _ in range(n_out)]
    for step in range(length):
        bound = list(state)
        for i, name in enumerate(node.input[n_state:]):
            index = length - 1 - step if in_dirs[i] else step
            at = emit.const(np.array(index, dtype=np.int64), "index")
            bound.append(emit.node("Gather", [name, at], "slice", axis=in_axes[i]))
        outs = emit.body_step(body, bound, step)
        state = outs[:n_state]
        for k in range(n_out):
            slices[k].append(outs[n_state + k])
    for target, value in zip(node.output[:n_state], state):
        if target:
            emit.nodes.append(helper.make_node("Identity", [value], [target]))
    for k, target in enumerate(node.output[n_state:]):
        if not target:
            continue
        parts = slices[k][::-1] if out_dirs[k] else slices[k]
        grown = [emit.unsqueeze(p, out_axes[k]) for p in parts]
        emit.nodes.append(helper.make_node("Concat", grown, [target], axis=out_axes[k]))
    return emit.nodes


def unroll_scans(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> int:
    """Scan (opset >= 9) with a static scan length is replaced by its unrolled steps: each
    step Gathers the scan inputs' slice (from the end for reverse directions), runs a renamed
    copy of the body, and the steps' scan outputs are stacked with Unsqueeze + Concat along
    scan_output_axes (in reverse for reverse directions). Scans with nested subgraphs or
    more than MAX_UNROLLED_NODES nodes unrolled are left alone. Cases: test_scan9_*,
    test_linear_attention_*_expanded and test_linear_attention_* (after expansion).
    Returns the number of Scans unrolled. `shapes` gives static shapes by value name."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    if opset < 9:
        return 0
    new_nodes, count = [], 0
    for node in model.graph.node:
        replaced = _unroll_scan(node, shapes, opset) if node.op_type == "Scan" and \
            node.domain in ("", "ai.onnx") else None
        if replaced is None:
            new_nodes.append(node)
        else:
            new_nodes.extend(replaced)
            count += 1
    if count:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
    return count
