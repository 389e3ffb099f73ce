"""ONNX shape inference without moving the weights.

`onnx.shape_inference.infer_shapes(model)` serialises the whole model, parses it in C++,
serialises the result and parses it back in Python: four passes over every weight to infer
the types of a few hundred tensors. On zoo:vgg19 (548 MB) that is ~2.4 s a call, and an npu
compile made five (docs/performance.md, "Shape inference without the weights").

`infer_shapes` here gives the same model (the same bytes once serialised; tests compare them)
by running onnx's inference on a *light twin*: the model's fields and nodes, its small
initializers, and, in place of each large floating-point initializer, a graph input of the
same name, element type and dims. Only the type of such a tensor matters to inference: the
operators whose inference reads an input's values (Reshape's shape, Slice's starts, Resize's
scales, Range's bounds...) take integer tensors or a handful of floats, and data propagation
follows integer tensors only. What inference writes back (value_info, the outputs' types,
the value_info of subgraphs inside the nodes) is copied into the model. A large initializer
that the graph also lists as an input (IR < 4 style) is checked against that input as onnx
does (element type, rank, static dims); where they disagree, or the model has nothing large,
onnx's own path runs instead, so every error is onnx's own.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

# Below this an initializer is copied into the twin as it is; above it only its type goes in.
LARGE_BYTES = 1 << 16

_FLOATS = {TensorProto.FLOAT: 4, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2,
           TensorProto.DOUBLE: 8}


def _nbytes(tensor: TensorProto) -> int:
    """Size from dims and element type: never reads the data (upb copies it into Python)."""
    n = _FLOATS.get(tensor.data_type, 0)
    for d in tensor.dims:
        n *= d
    return n


def _aside(tensor: TensorProto) -> bool:
    return (tensor.data_type in _FLOATS and tensor.data_location != TensorProto.EXTERNAL
            and not tensor.HasField("segment") and _nbytes(tensor) >= LARGE_BYTES)


def _agrees(tensor: TensorProto, vi: onnx.ValueInfoProto) -> bool:
    """onnx's check of an initializer against the graph input of its name."""
    if not vi.type.HasField("tensor_type"):
        return False
    tt = vi.type.tensor_type
    if tt.elem_type not in (TensorProto.UNDEFINED, tensor.data_type):
        return False
    if not tt.HasField("shape"):
        return True
    if len(tt.shape.dim) != len(tensor.dims):
        return False
    return all(not d.HasField("dim_value") or d.dim_value == n
               for d, n in zip(tt.shape.dim, tensor.dims))


def _copy_fields(src, dst, skip: str) -> None:
    """Every set field of `src` but `skip` into `dst` (references of the big one untouched)."""
    for fd, value in src.ListFields():
        if fd.name == skip:
            continue
        if fd.is_repeated:
            getattr(dst, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def light_twin(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """The model with each large float initializer replaced by a typed graph input, or None
    when it has none (or one disagrees with a graph input of its name)."""
    graph = model.graph
    aside = [t for t in graph.initializer if _aside(t)]
    if not aside:
        return None
    inputs = {vi.name: vi for vi in graph.input}
    if any(t.name in inputs and not _agrees(t, inputs[t.name]) for t in aside):
        return None
    names = {t.name for t in aside}
    light = onnx.ModelProto()
    _copy_fields(model, light, "graph")
    _copy_fields(graph, light.graph, "initializer")
    light.graph.initializer.extend(t for t in graph.initializer if t.name not in names)
    if model.ir_version >= 4:  # before IR 4 an initializer not among the inputs has no type
        light.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims)
                                 for t in aside if t.name not in inputs)
    return light


def adopt_inferred(model: onnx.ModelProto, inferred: onnx.ModelProto) -> onnx.ModelProto:
    """Write what inference added to `inferred` (onnx's inference of `model` or of its light
    twin) into `model`: value_info, the outputs' types, and the nodes where a subgraph got
    its own value_info. Returns `model`."""
    graph, done = model.graph, inferred.graph
    del graph.value_info[:]
    graph.value_info.extend(done.value_info)
    del graph.output[:]
    graph.output.extend(done.output)
    if any(a.HasField("g") or a.graphs for node in graph.node for a in node.attribute):
        del graph.node[:]   # subgraphs (If/Loop/Scan bodies) got their value_info
        graph.node.extend(done.node)
    return model


def inferred_view(model: onnx.ModelProto, check_type: bool = False, strict_mode: bool = False,
                  data_prop: bool = False) -> onnx.ModelProto:
    """onnx's inference of `model`, to read types and shapes from; `model` is untouched.
    Its nodes, value_info and outputs are those of `onnx.shape_inference.infer_shapes(model)`;
    its large float initializers are missing (typed graph inputs stand in for them), so
    read constants from `model`, and `adopt_inferred` to write the shapes into a copy."""
    light = light_twin(model)
    return onnx.shape_inference.infer_shapes(model if light is None else light, check_type,
                                             strict_mode, data_prop)


def infer_shapes(model: onnx.ModelProto, check_type: bool = False, strict_mode: bool = False,
                 data_prop: bool = False) -> onnx.ModelProto:
    """`onnx.shape_inference.infer_shapes(model, ...)` written into `model` itself, which is
    returned (the caller owns it: see `inferred_copy` to keep the original). Same result,
    same errors (raised before `model` is touched); see the module docstring."""
    light = light_twin(model)
    inferred = onnx.shape_inference.infer_shapes(model if light is None else light, check_type,
                                                 strict_mode, data_prop)
    if light is None:   # nothing large: onnx's own result, as it is
        model.CopyFrom(inferred)
        return model
    return adopt_inferred(model, inferred)


def inferred_copy(model: onnx.ModelProto, check_type: bool = False, strict_mode: bool = False,
                  data_prop: bool = False) -> onnx.ModelProto:
    """`onnx.shape_inference.infer_shapes` as onnx has it: a new model, `model` unchanged
    (one in-memory copy instead of four passes over the weights)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return infer_shapes(out, check_type, strict_mode, data_prop)
