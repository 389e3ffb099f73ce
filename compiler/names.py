"""Make graph input and output names safe for every code generator.

An ONNX name such as `gpu_0/data_0` is fine for LLVM but nvcc rejects the generated CUDA
(`float* gpu_0/data_0_ptr`, docs/tvm-notes.md). Names are rewritten to C identifiers before import;
the mapping is kept so users keep addressing tensors by their original names.
"""

from __future__ import annotations

import keyword
import re

import onnx

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def c_identifier(name: str, taken: set[str]) -> str:
    """A C identifier for `name`, unique against `taken` (which it extends)."""
    safe = _UNSAFE.sub("_", name) or "t"
    if safe[0].isdigit():
        safe = "t_" + safe
    if keyword.iskeyword(safe):
        safe += "_"
    candidate, n = safe, 1
    while candidate in taken:
        candidate, n = f"{safe}_{n}", n + 1
    taken.add(candidate)
    return candidate


def _all_graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """The graph and every subgraph below it, without recursion."""
    out, stack = [], [graph]
    while stack:
        g = stack.pop()
        out.append(g)
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    stack.append(attr.g)
                stack.extend(attr.graphs)
    return out


def all_names(model: onnx.ModelProto) -> set[str]:
    """Every name a generated one could collide with: values, initializers, nodes, in the
    main graph, its subgraphs and model-local functions."""
    names: set[str] = set()
    graphs = _all_graphs(model.graph)
    for g in graphs:
        for node in g.node:
            names.update(node.input)
            names.update(node.output)
            names.add(node.name)
        names.update(vi.name for vi in (*g.input, *g.output, *g.value_info))
        names.update(i.name for i in g.initializer)
        names.update(s.values.name for s in g.sparse_initializer)
    for fn in model.functions:
        for node in fn.node:
            names.add(node.name)
    names.discard("")
    return names


def _rename_all(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    """Apply {old: new} to every value name at once, in the graph and all its subgraphs.

    One simultaneous pass: renaming one name at a time can merge two values when a new name
    equals an old one still waiting to be renamed (`a/b` -> `a_b` while `a_b` -> `a_b_1`)."""
    def sub(name: str) -> str:
        return mapping.get(name, name)

    for g in _all_graphs(graph):
        for node in g.node:
            node.input[:] = [sub(n) for n in node.input]
            node.output[:] = [sub(n) for n in node.output]
        for vi in (*g.input, *g.output, *g.value_info):
            vi.name = sub(vi.name)
        for init in g.initializer:
            init.name = sub(init.name)
        for sparse in g.sparse_initializer:
            sparse.values.name = sub(sparse.values.name)


def _injective_mapping(to_rename: list[str], existing: set[str]) -> dict[str, str]:
    """{name: C identifier} for `to_rename`, one-to-one and disjoint from every other name.

    Names that already are C identifiers keep themselves (reserved first, so `a_b` stays `a_b`
    and `a/b` becomes `a_b_1`, whatever the order)."""
    wanted = list(dict.fromkeys(to_rename))
    taken = set(existing) - set(wanted)
    mapping: dict[str, str] = {}
    for name in wanted:
        if c_identifier(name, set()) == name and name not in taken:
            mapping[name] = name
            taken.add(name)
    for name in wanted:
        if name not in mapping:
            mapping[name] = c_identifier(name, taken)
    return mapping


def sanitize_io_names(model: onnx.ModelProto) -> dict[str, str]:
    """Rename graph inputs and outputs in place to C identifiers; return {original: safe}.

    The mapping is injective: two inputs never share a safe name, and no safe name equals any
    other name in the model (intermediates, initializers, nodes, subgraph values)."""
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    io_names = [vi.name for vi in graph.input if vi.name not in init_names]
    io_names += [vi.name for vi in graph.output if vi.name not in io_names]
    mapping = _injective_mapping(io_names, all_names(model))
    _rename_all(graph, {k: v for k, v in mapping.items() if k != v})
    return mapping


def sanitize_initializer_names(model: onnx.ModelProto) -> dict[str, str]:
    """Rename initializers in place to C identifiers, keeping their order; return the mapping.

    Inference binds initializers as constants, so their names never reach device code; a train
    step keeps them as function parameters, and a torch name such as `2.bias` would become the
    CUDA parameter `float* 2_bias_ptr`, which nvcc rejects.
    """
    graph = model.graph
    mapping = _injective_mapping([i.name for i in graph.initializer], all_names(model))
    _rename_all(graph, {k: v for k, v in mapping.items() if k != v})
    return mapping
