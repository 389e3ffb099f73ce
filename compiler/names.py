"""Make graph input and output names safe for every code generator.

An ONNX name such as `gpu_0/data_0` is fine for LLVM but nvcc rejects the generated CUDA
(`float* gpu_0/data_0_ptr`, tvm-notes.md). Names are rewritten to C identifiers before import;
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


def _rename_everywhere(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a value in the top graph and in every subgraph that refers to it."""
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
        for attr in node.attribute:
            subs = [attr.g] if attr.HasField("g") else []
            subs.extend(attr.graphs)
            for sub in subs:
                _rename_everywhere(sub, old, new)
    for coll in (graph.input, graph.output, graph.value_info):
        for vi in coll:
            if vi.name == old:
                vi.name = new
    for init in graph.initializer:
        if init.name == old:
            init.name = new


def sanitize_io_names(model: onnx.ModelProto) -> dict[str, str]:
    """Rename graph inputs and outputs in place to C identifiers; return {original: safe}."""
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    io_names = [vi.name for vi in graph.input if vi.name not in init_names]
    io_names += [vi.name for vi in graph.output if vi.name not in io_names]
    all_names = {n for node in graph.node for n in (*node.input, *node.output)} | init_names
    taken = set(all_names) - set(io_names)
    mapping = {}
    for name in io_names:
        safe = name if (name not in taken and c_identifier(name, set()) == name) else None
        if safe is None:
            safe = c_identifier(name, taken)
        else:
            taken.add(safe)
        mapping[name] = safe
        if safe != name:
            _rename_everywhere(graph, name, safe)
    return mapping


def sanitize_initializer_names(model: onnx.ModelProto) -> None:
    """Rename initializers in place to C identifiers, keeping their order.

    Inference binds initializers as constants, so their names never reach device code; a train
    step keeps them as function parameters, and a torch name such as `2.bias` would become the
    CUDA parameter `float* 2_bias_ptr`, which nvcc rejects.
    """
    graph = model.graph
    taken = {n for node in graph.node for n in (*node.input, *node.output)}
    taken |= {vi.name for vi in (*graph.input, *graph.output)}
    init_names = [i.name for i in graph.initializer]
    taken -= set(init_names)
    for name in init_names:
        safe = c_identifier(name, taken)
        if safe != name:
            _rename_everywhere(graph, name, safe)
